package tokenizer

// Pre-tokenization splits a text fragment into words before BPE runs on each
// word. llama.cpp (llama-vocab.cpp, llm_tokenizer_bpe) describes every
// pre-tokenizer as a list of regular expressions applied in turn: the first
// splits the whole fragment into matches and the gaps between them, each later
// one splits every piece the previous produced, and nothing ever merges across
// a piece boundary. Go's regexp has no look-ahead, so each expression is a
// hand-written scanner here; the ones llama.cpp itself implements by hand
// (unicode.cpp: unicode_regex_split_custom_gpt2/_llama3/_qwen2) are
// transcribed line by line, including their behaviour at piece boundaries.
//
// A split works on code points (cpts) with their flags, and on the current
// pieces given as lengths in code points, exactly like llama.cpp's offsets.

// splitFunc refines the pieces segs of cpts and appends the new piece lengths
// to out.
type splitFunc func(cpts []rune, fl []cptFlags, segs []int, out []int) []int

// preTokenizer is one tokenizer.ggml.pre value resolved to its splits and the
// vocabulary options llama.cpp ties to it.
type preTokenizer struct {
	name         string
	splits       []splitFunc
	cleanSpaces  bool // llama.cpp's clean_spaces: Decode tidies " ." etc.
	ignoreMerges bool // a word that is itself a token skips BPE (Llama 3)
	addBOS       bool // llama.cpp's default for add_bos when the GGUF key is absent
}

// resolvePre maps a tokenizer.ggml.pre value to its pre-tokenizer, following
// llama_vocab::impl::load. The groups implemented:
//
//   - GPT-2 ("gpt-2", "gpt2", "phi-2", "mpt", "olmo", "jais", "exaone4", ...):
//     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)
//   - SmolLM ("smollm", also "starcoder", "refact", "command-r", "codeshell",
//     "exaone", "minerva-7b"): first \p{N} — every digit becomes its own
//     word — then the GPT-2 expression inside each piece.
//   - Llama 3 ("llama-bpe", "llama3", "llama-v3", "falcon3", "pixtral", ...;
//     "dbrx" and "smaug-bpe" share the expression without ignore_merges):
//     (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//     ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//   - Qwen 2 ("qwen2", "deepseek-r1-qwen", "stablelm2", "megrez"): the Llama 3
//     expression with \p{N} instead of \p{N}{1,3}.
//   - Falcon ("falcon"): [\p{P}\$\+<=>\^~\|`]+, then GPT-2, then [0-9][0-9][0-9].
//   - default ("default" or absent): [\p{P}\$\+<=>\^~\|]+, then GPT-2, then
//     \p{N}+, then [0-9][0-9][0-9].
func resolvePre(name string) (preTokenizer, bool) {
	gpt2 := []splitFunc{splitGPT2}
	p := preTokenizer{name: name, cleanSpaces: true}
	switch name {
	case "", "default":
		p.splits = []splitFunc{splitPunctRuns(false), splitGPT2, splitNumberRuns, splitASCIIDigits3}
	case "gpt-2", "gpt2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de",
		"a.x-4.0", "mellum", "modern-bert", "jina-v1-en", "jina-v2-code", "roberta-bpe",
		"mpt", "olmo", "jais", "exaone4":
		p.splits = gpt2
	case "trillion", "granite-docling":
		p.splits = gpt2
		p.cleanSpaces = false
	case "smollm", "command-r":
		p.splits = []splitFunc{splitEachNumber, splitGPT2}
		p.cleanSpaces = false
	case "starcoder", "refact", "codeshell", "exaone", "minerva-7b", "mellum2":
		p.splits = []splitFunc{splitEachNumber, splitGPT2}
	case "llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano":
		p.splits = []splitFunc{splitLlama3(3)}
		p.ignoreMerges = true
		p.addBOS = true
	case "dbrx", "smaug-bpe":
		p.splits = []splitFunc{splitLlama3(3)}
	case "qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "hunyuan", "solar-open":
		p.splits = []splitFunc{splitLlama3(1)}
		p.cleanSpaces = false
	case "stablelm2", "megrez":
		p.splits = []splitFunc{splitLlama3(1)}
	case "falcon":
		p.splits = []splitFunc{splitPunctRuns(true), splitGPT2, splitASCIIDigits3}
	default:
		return preTokenizer{}, false
	}
	return p, true
}

// segment bounds helpers shared by the scanners: a position outside
// [ini, end) reads as code point -1 with empty flags, as in llama.cpp.
type seg struct {
	cpts     []rune
	fl       []cptFlags
	ini, end int
	prevEnd  int
	out      []int
}

func (s *seg) cpt(pos int) rune {
	if pos >= s.ini && pos < s.end {
		return s.cpts[pos]
	}
	return -1
}

func (s *seg) flags(pos int) cptFlags {
	if pos >= s.ini && pos < s.end {
		return s.fl[pos]
	}
	return outOfRange
}

// add ends a word at end and returns its length (0 adds nothing).
func (s *seg) add(end int) int {
	n := end - s.prevEnd
	if n > 0 {
		s.out = append(s.out, n)
	}
	s.prevEnd = end
	return n
}

// splitGPT2 is unicode_regex_split_custom_gpt2:
// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// The look-ahead (?!\S) sees only the current piece: whitespace at the end of
// a piece is taken whole.
func splitGPT2(cpts []rune, fl []cptFlags, segs []int, out []int) []int {
	s := seg{cpts: cpts, fl: fl, out: out}
	start := 0
	for _, n := range segs {
		s.ini, s.end, s.prevEnd = start, start+n, start
		start += n
		for pos := s.ini; pos < s.end; {
			c := s.cpt(pos)
			f := s.flags(pos)
			// 's|'t|'re|'ve|'m|'ll|'d
			if c == '\'' && pos+1 < s.end {
				c1 := s.cpt(pos + 1)
				if c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd' {
					pos += s.add(pos + 2)
					continue
				}
				if pos+2 < s.end {
					c2 := s.cpt(pos + 2)
					if (c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l') {
						pos += s.add(pos + 3)
						continue
					}
				}
			}
			f2 := f
			if c == ' ' {
				f2 = s.flags(pos + 1)
			}
			// ' ?\p{L}+'
			if f2.isLetter() {
				if c == ' ' {
					pos++
				}
				for f2.isLetter() {
					pos++
					f2 = s.flags(pos)
				}
				s.add(pos)
				continue
			}
			// ' ?\p{N}+'
			if f2.isNumber() {
				if c == ' ' {
					pos++
				}
				for f2.isNumber() {
					pos++
					f2 = s.flags(pos)
				}
				s.add(pos)
				continue
			}
			// ' ?[^\s\p{L}\p{N}]+'
			if isOther(f2) {
				if c == ' ' {
					pos++
				}
				for isOther(f2) {
					pos++
					f2 = s.flags(pos)
				}
				s.add(pos)
				continue
			}
			nws := 0
			for s.flags(pos + nws).space {
				nws++
			}
			// \s+(?!\S)
			if nws > 1 && s.cpt(pos+nws) != -1 {
				pos += nws - 1
				s.add(pos)
				continue
			}
			// \s+
			if nws > 0 {
				pos += nws
				s.add(pos)
				continue
			}
			pos++
			s.add(pos)
		}
	}
	return s.out
}

// isOther is [^\s\p{L}\p{N}] for a position inside the piece.
func isOther(f cptFlags) bool {
	return !(f.space || f.isLetter() || f.isNumber()) && f.defined()
}

// splitLlama3 returns unicode_regex_split_custom_llama3 (maxDigits 3) or
// unicode_regex_split_custom_qwen2 (maxDigits 1):
// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,maxDigits}|
// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
func splitLlama3(maxDigits int) splitFunc {
	return func(cpts []rune, fl []cptFlags, segs []int, out []int) []int {
		s := seg{cpts: cpts, fl: fl, out: out}
		start := 0
		for _, n := range segs {
			s.ini, s.end, s.prevEnd = start, start+n, start
			start += n
			for pos := s.ini; pos < s.end; {
				c := s.cpt(pos)
				f := s.flags(pos)
				// (?i:'s|'t|'re|'ve|'m|'ll|'d)
				if c == '\'' && pos+1 < s.end {
					c1 := toLower(s.cpt(pos + 1))
					if c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd' {
						pos += s.add(pos + 2)
						continue
					}
					if pos+2 < s.end {
						c2 := toLower(s.cpt(pos + 2))
						if (c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l') {
							pos += s.add(pos + 3)
							continue
						}
					}
				}
				// [^\r\n\p{L}\p{N}]?\p{L}+
				if !(c == '\r' || c == '\n' || f.isNumber()) {
					if f.isLetter() || s.flags(pos+1).isLetter() {
						pos++
						for s.flags(pos).isLetter() {
							pos++
						}
						s.add(pos)
						continue
					}
				}
				// \p{N}{1,3} (Llama 3) or \p{N} (Qwen 2)
				if f.isNumber() {
					if maxDigits == 1 {
						pos++
						s.add(pos)
						continue
					}
					ini := pos
					for s.flags(pos).isNumber() {
						pos++
						if pos-ini >= maxDigits {
							s.add(pos)
							ini = pos
						}
					}
					s.add(pos)
					continue
				}
				// ' ?[^\s\p{L}\p{N}]+[\r\n]*'. llama.cpp tests the first
				// condition with the flags of the character after a space but
				// the "defined" part with the current character's flags.
				f2 := f
				if c == ' ' {
					f2 = s.flags(pos + 1)
				}
				if !(f2.space || f2.isLetter() || f2.isNumber()) && f.defined() {
					if c == ' ' {
						pos++
					}
					for isOther(f2) {
						pos++
						f2 = s.flags(pos)
					}
					for c2 := s.cpt(pos); c2 == '\r' || c2 == '\n'; c2 = s.cpt(pos) {
						pos++
					}
					s.add(pos)
					continue
				}
				nws, lastRN := 0, 0
				for s.flags(pos + nws).space {
					if c2 := s.cpt(pos + nws); c2 == '\r' || c2 == '\n' {
						lastRN = pos + nws + 1
					}
					nws++
				}
				// \s*[\r\n]+
				if lastRN > 0 {
					pos = lastRN
					s.add(pos)
					continue
				}
				// \s+(?!\S)
				if nws > 1 && s.cpt(pos+nws) != -1 {
					pos += nws - 1
					s.add(pos)
					continue
				}
				// \s+
				if nws > 0 {
					pos += nws
					s.add(pos)
					continue
				}
				pos++
				s.add(pos)
			}
		}
		return s.out
	}
}

// isolate splits every piece into the maximal matches of a pattern and the
// gaps between them, like llama.cpp's std::regex fallback
// (unicode_regex_split_stl). match reports the length of the leftmost match
// starting exactly at pos within [pos, end), or 0.
func isolate(segs []int, out []int, match func(pos, end int) int) []int {
	start := 0
	for _, n := range segs {
		end := start + n
		gap := start
		for pos := start; pos < end; {
			m := match(pos, end)
			if m == 0 {
				pos++
				continue
			}
			if pos > gap {
				out = append(out, pos-gap)
			}
			out = append(out, m)
			pos += m
			gap = pos
		}
		if end > gap {
			out = append(out, end-gap)
		}
		start = end
	}
	return out
}

// isNumberCollapsed is \p{N} as llama.cpp's std::regex fallback sees it on
// its "collapsed" text: ASCII 0-9, or a non-ASCII code point whose category
// is number.
func isNumberCollapsed(r rune, f cptFlags) bool {
	if r < 128 {
		return r >= '0' && r <= '9'
	}
	return !f.space && f.isNumber()
}

// splitEachNumber is the expression \p{N}: every number code point becomes a
// piece of its own (SmolLM, StarCoder: digits are never grouped).
func splitEachNumber(cpts []rune, fl []cptFlags, segs []int, out []int) []int {
	return isolate(segs, out, func(pos, end int) int {
		if isNumberCollapsed(cpts[pos], fl[pos]) {
			return 1
		}
		return 0
	})
}

// splitNumberRuns is \p{N}+.
func splitNumberRuns(cpts []rune, fl []cptFlags, segs []int, out []int) []int {
	return isolate(segs, out, func(pos, end int) int {
		n := 0
		for pos+n < end && isNumberCollapsed(cpts[pos+n], fl[pos+n]) {
			n++
		}
		return n
	})
}

// splitASCIIDigits3 is [0-9][0-9][0-9].
func splitASCIIDigits3(cpts []rune, fl []cptFlags, segs []int, out []int) []int {
	isDigit := func(r rune) bool { return r >= '0' && r <= '9' }
	return isolate(segs, out, func(pos, end int) int {
		if pos+3 <= end && isDigit(cpts[pos]) && isDigit(cpts[pos+1]) && isDigit(cpts[pos+2]) {
			return 3
		}
		return 0
	})
}

// splitPunctRuns is [\p{P}\$\+<=>\^~\|]+ (the default pre-tokenizer) or, with
// backtick, [\p{P}\$\+<=>\^~\|`]+ (Falcon). On llama.cpp's collapsed text
// \p{P} is ASCII !-#%-*,-/:;?@[-]_{} plus non-ASCII punctuation.
func splitPunctRuns(backtick bool) splitFunc {
	return func(cpts []rune, fl []cptFlags, segs []int, out []int) []int {
		in := func(r rune, f cptFlags) bool {
			if r >= 128 {
				return !f.space && f.class == clsPunct
			}
			switch {
			case r >= '!' && r <= '#', r >= '%' && r <= '*', r >= ',' && r <= '/',
				r == ':', r == ';', r == '?', r == '@', r >= '[' && r <= ']', r == '_', r == '{', r == '}',
				r == '$', r == '+', r == '<', r == '=', r == '>', r == '^', r == '~', r == '|':
				return true
			case r == '`':
				return backtick
			}
			return false
		}
		return isolate(segs, out, func(pos, end int) int {
			n := 0
			for pos+n < end && in(cpts[pos+n], fl[pos+n]) {
				n++
			}
			return n
		})
	}
}
