package tokenizer

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// Token types as stored in tokenizer.ggml.token_type (llama.h's
// llama_token_type).
const (
	TypeUndefined   = 0 // no type given
	TypeNormal      = 1 // ordinary text token
	TypeUnknown     = 2 // the unknown token (<unk>)
	TypeControl     = 3 // control token (<|im_start|>, <s>): matched in text only with parseSpecial
	TypeUserDefined = 4 // user-defined token: always matched literally in text
	TypeUnused      = 5 // reserved, never produced; its piece is empty
	TypeByte        = 6 // byte-fallback token <0xNN>
)

// attr is llama.cpp's llama_token_attr bit set for one token.
type attr uint16

const (
	attrUndefined attr = 0
	attrUnknown   attr = 1 << 0
	attrUnused    attr = 1 << 1
	attrNormal    attr = 1 << 2
	attrControl   attr = 1 << 3
	attrUserDef   attr = 1 << 4
	attrByte      attr = 1 << 5
)

// Config is everything a tokenizer is built from, as plain data: the GGUF
// tokenizer.* metadata after defaults are applied (FromGGUF applies
// llama.cpp's defaults for absent keys; New takes the values as given).
type Config struct {
	// Model is tokenizer.ggml.model: "gpt2" (byte-level BPE) or "llama"
	// (SentencePiece BPE).
	Model string
	// Pre is tokenizer.ggml.pre, the pre-tokenizer of a "gpt2" model
	// (e.g. "smollm", "llama-bpe", "qwen2", "gpt-2", "default"); ignored for
	// "llama".
	Pre string
	// Tokens is the vocabulary, indexed by token id.
	Tokens []string
	// Types holds each token's type (TypeNormal, TypeControl, ...); nil means
	// all normal.
	Types []int32
	// Scores holds each token's score, the merge priority of a "llama"
	// model; nil means all zero.
	Scores []float32
	// Merges lists a "gpt2" model's merges ("left right"), best first.
	Merges []string
	// BOS, EOS, UNK, PAD and EOT are special token ids, -1 when absent. EOT
	// -1 is detected from the token texts as llama.cpp does.
	BOS, EOS, UNK, PAD, EOT int32
	// AddBOS and AddEOS say whether a prompt should start with BOS / end with
	// EOS. Encode never adds them; callers do.
	AddBOS, AddEOS bool
	// AddSpacePrefix makes a "llama" model prepend a space to the text (and
	// to the text after each special token), and makes Decode drop the
	// first token's leading space.
	AddSpacePrefix bool
	// ChatTemplate is tokenizer.chat_template (Jinja source), which selects
	// the Template.
	ChatTemplate string
}

// Tokenizer converts between text and token ids exactly as llama.cpp's
// llama_tokenize / llama_detokenize do for the same GGUF vocabulary. It is
// immutable after New and safe for concurrent use.
type Tokenizer struct {
	spm    bool // SentencePiece ("llama") rather than byte-level BPE ("gpt2")
	pre    preTokenizer
	tokens []string
	attrs  []attr
	scores []float32
	ids    map[string]int32
	pieces []string // llama_token_to_piece(id, special=true) for every id

	bos, eos, unk, pad, eot, eom int32
	addBOS, addEOS, addSpace     bool
	eog                          []int32 // sorted

	specials []int32 // control, user-defined and unknown tokens, longest first

	// byte-level BPE
	byteEnc   [256]string   // byte -> its printable stand-in
	byteDec   map[rune]byte // inverse of byteEnc
	byteSym   [256]int32    // byte -> symbol id of its stand-in
	merges    mergeTable    // (left symbol, right symbol) -> rule
	extraSyms []string      // symbols that are not tokens, id = len(tokens)+index

	// SentencePiece byte fallback: byte -> token, -1 when absent
	byteTok [256]int32

	template Template

	scratch sync.Pool // *bpeScratch, reused across Encode calls
}

// mergeRule is one BPE merge: its rank (position in the merge list) and the
// symbol the pair becomes.
type mergeRule struct {
	rank   int32
	result int32
}

// New builds a tokenizer from c. It fails when the vocabulary is empty, the
// model or pre-tokenizer is unknown, a per-token slice is shorter than the
// vocabulary, or a special id is out of range.
func New(c Config) (*Tokenizer, error) {
	n := len(c.Tokens)
	if n == 0 {
		return nil, errors.New("tokenizer: empty vocabulary")
	}
	if c.Types != nil && len(c.Types) < n {
		return nil, fmt.Errorf("tokenizer: %d token types for %d tokens", len(c.Types), n)
	}
	if c.Scores != nil && len(c.Scores) < n {
		return nil, fmt.Errorf("tokenizer: %d scores for %d tokens", len(c.Scores), n)
	}
	t := &Tokenizer{
		tokens:   make([]string, n),
		attrs:    make([]attr, n),
		scores:   make([]float32, n),
		ids:      make(map[string]int32, n),
		addBOS:   c.AddBOS,
		addEOS:   c.AddEOS,
		addSpace: c.AddSpacePrefix,
		eom:      -1,
	}
	switch c.Model {
	case "llama":
		t.spm = true
	case "gpt2":
		p, ok := resolvePre(c.Pre)
		if !ok {
			return nil, fmt.Errorf("tokenizer: unknown pre-tokenizer type %q", c.Pre)
		}
		t.pre = p
	default:
		return nil, fmt.Errorf("tokenizer: unsupported tokenizer model %q", c.Model)
	}
	for i, s := range c.Tokens {
		if s == "" { // llama.cpp renames empty tokens so they stay unique
			s = fmt.Sprintf("[EMPTY_%d]", i)
		}
		if _, dup := t.ids[s]; dup {
			return nil, fmt.Errorf("tokenizer: duplicate token %q at id %d", s, i)
		}
		t.tokens[i] = s
		t.ids[s] = int32(i)
		if c.Scores != nil {
			t.scores[i] = c.Scores[i]
		}
		t.attrs[i] = attrNormal
		if c.Types != nil {
			t.attrs[i] = typeAttr(c.Types[i])
		}
	}
	var err error
	for _, sp := range []struct {
		name string
		id   int32
		dst  *int32
	}{{"BOS", c.BOS, &t.bos}, {"EOS", c.EOS, &t.eos}, {"UNK", c.UNK, &t.unk}, {"PAD", c.PAD, &t.pad}, {"EOT", c.EOT, &t.eot}} {
		if sp.id < -1 || sp.id >= int32(n) {
			return nil, fmt.Errorf("tokenizer: %s id %d outside vocabulary of %d", sp.name, sp.id, n)
		}
		*sp.dst = sp.id
	}
	t.detectSpecial()
	if t.spm {
		t.initSPM()
	} else if err = t.initBPE(c.Merges); err != nil {
		return nil, err
	}
	t.pieces = make([]string, n)
	for i := range t.tokens {
		t.pieces[i] = t.computePiece(int32(i))
	}
	t.template = ParseTemplate(c.ChatTemplate)
	return t, nil
}

func typeAttr(typ int32) attr {
	switch typ {
	case TypeUnknown:
		return attrUnknown
	case TypeUnused:
		return attrUnused
	case TypeNormal:
		return attrNormal
	case TypeControl:
		return attrControl
	case TypeUserDefined:
		return attrUserDef
	case TypeByte:
		return attrByte
	}
	return attrUndefined
}

// Texts llama.cpp (llama_vocab::impl::load) recognises by name.
var (
	eotTexts = []string{"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
		"<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>"}
	eogTexts = []string{"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>",
		"<|calls|>", "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]",
		"[EOS]", "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
		"<｜end▁of▁sentence｜>", "[e~["}
	fimTexts = [][]string{
		{"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>", "<|code_prefix|>", "<|prefix|>"},
		{"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>", "<|code_suffix|>", "<|suffix|>"},
		{"<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>", "<|code_middle|>", "<|middle|>"},
		{"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"},
		{"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"},
		{"<|file_sep|>"},
	}
)

// detectSpecial reproduces llama.cpp's name-based fix-ups: it finds EOT, EOM
// and the fill-in-the-middle tokens by their text (marking them control),
// collects the end-of-generation set, and lists the tokens the special-token
// partition looks for.
//
// Where several texts match, llama.cpp takes whichever its hash map yields
// first, which is arbitrary. Here EOT is the first present in eotTexts order
// ("<|eot_id|>", "<|im_end|>", ... before "<|endoftext|>"), so a ChatML
// vocabulary's EOT is "<|im_end|>"; a fill-in-the-middle role takes the lowest
// id. The end-of-generation set does not depend on these choices.
func (t *Tokenizer) detectSpecial() {
	first := func(texts []string) int32 {
		best := int32(-1)
		for _, s := range texts {
			if id, ok := t.ids[s]; ok && (best < 0 || id < best) {
				best = id
			}
		}
		return best
	}
	if t.eot < 0 {
		for _, s := range eotTexts {
			if id, ok := t.ids[s]; ok {
				t.eot = id
				t.attrs[id] |= attrControl
				break
			}
		}
	}
	if t.eom = first([]string{"<|eom_id|>"}); t.eom >= 0 {
		t.attrs[t.eom] |= attrControl
	}
	eog := map[int32]bool{}
	for i, texts := range fimTexts {
		if id := first(texts); id >= 0 {
			t.attrs[id] |= attrControl
			if i >= 3 { // FIM pad, repo and file separator end generation
				eog[id] = true
			}
		}
	}
	for _, s := range eogTexts {
		if id, ok := t.ids[s]; ok {
			eog[id] = true
			t.attrs[id] |= attrControl
		}
	}
	for _, s := range []string{"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"} {
		if id, ok := t.ids[s]; ok {
			t.attrs[id] = attrUserDef
		}
	}
	for _, id := range []int32{t.eos, t.eot, t.eom} {
		if id >= 0 {
			eog[id] = true
		}
	}
	// o200k_harmony and solar-open: "<|end|>" ends a message, not generation.
	has := func(s string) bool { id, ok := t.ids[s]; return ok && eog[id] }
	if end, ok := t.ids["<|end|>"]; ok && eog[end] &&
		((has("<|return|>") && has("<|call|>")) || (has("<|calls|>") && has("<|flush|>"))) {
		delete(eog, end)
		t.attrs[end] = attrUserDef
	}
	for id := range eog {
		t.eog = append(t.eog, id)
	}
	slices.Sort(t.eog)
	for i, a := range t.attrs {
		if a&(attrControl|attrUserDef|attrUnknown) != 0 {
			t.specials = append(t.specials, int32(i))
		}
	}
	slices.SortStableFunc(t.specials, func(a, b int32) int {
		return cmp.Compare(len(t.tokens[b]), len(t.tokens[a]))
	})
}

// Vocab returns the number of tokens.
func (t *Tokenizer) Vocab() int { return len(t.tokens) }

// BOS returns the beginning-of-sequence token id, or -1.
func (t *Tokenizer) BOS() int32 { return t.bos }

// EOS returns the end-of-sequence token id, or -1.
func (t *Tokenizer) EOS() int32 { return t.eos }

// UNK returns the unknown-token id, or -1.
func (t *Tokenizer) UNK() int32 { return t.unk }

// PAD returns the padding token id, or -1.
func (t *Tokenizer) PAD() int32 { return t.pad }

// EOT returns the end-of-turn token id (from the GGUF, else found by its
// text such as "<|im_end|>" or "<|eot_id|>"), or -1.
func (t *Tokenizer) EOT() int32 { return t.eot }

// AddBOS reports whether a prompt should begin with BOS.
func (t *Tokenizer) AddBOS() bool { return t.addBOS }

// AddEOS reports whether a prompt should end with EOS.
func (t *Tokenizer) AddEOS() bool { return t.addEOS }

// IsEOG reports whether id ends generation: EOS, EOT, and every token
// llama.cpp treats as end-of-generation by its text ("<|im_end|>",
// "<|endoftext|>", "<|eot_id|>", "</s>", ...) or as a fill-in-the-middle
// pad/repo/file-separator token.
func (t *Tokenizer) IsEOG(id int32) bool {
	_, ok := slices.BinarySearch(t.eog, id)
	return ok
}

// EOG returns the sorted end-of-generation token ids.
func (t *Tokenizer) EOG() []int32 { return slices.Clone(t.eog) }

// TokenID returns the id of the token whose vocabulary text is exactly text
// (as stored in the GGUF: byte-level stand-ins for "gpt2", ▁ for spaces in
// "llama").
func (t *Tokenizer) TokenID(text string) (int32, bool) {
	id, ok := t.ids[text]
	return id, ok
}

// TokenText returns the vocabulary text of id ("" when out of range).
func (t *Tokenizer) TokenText(id int32) string {
	if id < 0 || int(id) >= len(t.tokens) {
		return ""
	}
	return t.tokens[id]
}

// IsSpecial reports whether id is a control, user-defined or unknown token:
// the tokens Encode can match literally in text.
func (t *Tokenizer) IsSpecial(id int32) bool {
	if id < 0 || int(id) >= len(t.attrs) {
		return false
	}
	return t.attrs[id]&(attrControl|attrUserDef|attrUnknown) != 0
}

// Template returns the chat template chosen from the GGUF's
// tokenizer.chat_template.
func (t *Tokenizer) Template() Template { return t.template }

// fragment is a piece of the input after special-token partitioning: either
// a run of text [off, off+n) or a special token.
type fragment struct {
	tok    int32 // -1 for text
	off, n int
}

// partition splits text around literal occurrences of special tokens, as
// llama.cpp's tokenizer_st_partition does: tokens are tried longest first,
// each over every remaining text fragment, left to right. Without
// parseSpecial only user-defined tokens are matched.
func (t *Tokenizer) partition(text string, parseSpecial bool) []fragment {
	frags := []fragment{{tok: -1, off: 0, n: len(text)}}
	var next []fragment
	for _, id := range t.specials {
		if !parseSpecial && t.attrs[id]&(attrControl|attrUnknown) != 0 {
			continue
		}
		sp := t.tokens[id]
		if !strings.Contains(text, sp) {
			continue
		}
		next = next[:0]
		for _, f := range frags {
			if f.tok >= 0 {
				next = append(next, f)
				continue
			}
			off, end := f.off, f.off+f.n
			for off < end {
				i := strings.Index(text[off:end], sp)
				if i < 0 {
					break
				}
				if i > 0 {
					next = append(next, fragment{tok: -1, off: off, n: i})
				}
				next = append(next, fragment{tok: id})
				off += i + len(sp)
			}
			if off < end {
				next = append(next, fragment{tok: -1, off: off, n: end - off})
			}
		}
		frags, next = next, frags
	}
	return frags
}

// Encode tokenizes text. With parseSpecial, control tokens written in the
// text (such as "<|im_start|>") become their ids; without it they are
// tokenized as plain text. User-defined tokens are always matched. BOS and
// EOS are never added: prepend BOS yourself when AddBOS reports true.
func (t *Tokenizer) Encode(text string, parseSpecial bool) []int32 {
	return t.AppendEncode(nil, text, parseSpecial)
}

// AppendEncode is Encode appending to dst.
func (t *Tokenizer) AppendEncode(dst []int32, text string, parseSpecial bool) []int32 {
	if text == "" {
		return dst
	}
	frags := t.partition(text, parseSpecial)
	if t.spm {
		var sc spmScratch
		prevSpecial := true
		for _, f := range frags {
			if f.tok >= 0 {
				dst = append(dst, f.tok)
				prevSpecial = true
				continue
			}
			dst = t.encodeSPM(dst, text[f.off:f.off+f.n], t.addSpace && prevSpecial, &sc)
			prevSpecial = false
		}
		return dst
	}
	sc, _ := t.scratch.Get().(*bpeScratch)
	if sc == nil {
		sc = new(bpeScratch)
	}
	dst = slices.Grow(dst, len(text)/3+1)
	for _, f := range frags {
		if f.tok >= 0 {
			dst = append(dst, f.tok)
			continue
		}
		dst = t.encodeBPE(dst, text[f.off:f.off+f.n], sc)
	}
	t.scratch.Put(sc)
	return dst
}

// Piece returns the bytes token id stands for, as llama_token_to_piece with
// special=true: byte-level stand-ins decoded to raw bytes ("gpt2"), ▁ turned
// back into a space and <0xNN> into its byte ("llama"), control and
// user-defined tokens as their text. A piece may be part of a UTF-8 sequence.
// It returns nil for an id outside the vocabulary.
func (t *Tokenizer) Piece(id int32) []byte {
	if id < 0 || int(id) >= len(t.pieces) {
		return nil
	}
	return []byte(t.pieces[id])
}

func (t *Tokenizer) piece(id int32) string {
	if id < 0 || int(id) >= len(t.pieces) {
		return ""
	}
	return t.pieces[id]
}

// computePiece is llama_vocab::impl::token_to_piece(special=true).
func (t *Tokenizer) computePiece(id int32) string {
	a, text := t.attrs[id], t.tokens[id]
	switch {
	case a&(attrUnknown|attrControl|attrUserDef) != 0:
		return text
	case a&attrNormal != 0:
		if t.spm {
			return strings.ReplaceAll(text, "▁", " ")
		}
		return t.decodeByteLevel(text)
	case a&attrByte != 0:
		if b, ok := parseByteToken(text); ok {
			return string([]byte{b})
		}
		return ""
	}
	return ""
}

// parseByteToken reads "<0xNN>".
func parseByteToken(s string) (byte, bool) {
	if len(s) != 6 || s[:3] != "<0x" || s[5] != '>' {
		return 0, false
	}
	var v byte
	for _, c := range []byte(s[3:5]) {
		switch {
		case c >= '0' && c <= '9':
			v = v<<4 | (c - '0')
		case c >= 'A' && c <= 'F':
			v = v<<4 | (c - 'A' + 10)
		case c >= 'a' && c <= 'f':
			v = v<<4 | (c - 'a' + 10)
		default:
			return 0, false
		}
	}
	return v, true
}

// Decode turns ids back into text as llama_detokenize(remove_special=false,
// unparse_special=true) does: pieces concatenated, special tokens as their
// text, the first token's leading space dropped when AddSpacePrefix is set,
// and — for pre-tokenizers where llama.cpp sets clean_spaces (e.g. "gpt-2",
// "llama-bpe", not "smollm" or "qwen2") — spaces before ? ! . , and some
// apostrophes removed. Bytes that do not form valid UTF-8 are kept as they
// are; use a Decoder to stream valid text.
func (t *Tokenizer) Decode(ids []int32) string {
	var b []byte
	for i, id := range ids {
		p := t.piece(id)
		if i == 0 && t.addSpace && len(p) > 0 && p[0] == ' ' {
			p = p[1:]
		}
		b = append(b, p...)
	}
	if !t.spm && t.pre.cleanSpaces {
		b = cleanSpaces(b)
	}
	return string(b)
}

// cleanSpaces is the clean_spaces pass of llama_vocab::impl::detokenize.
func cleanSpaces(text []byte) []byte {
	if len(text) == 0 {
		return text
	}
	// " ?", " !", " .", " ,"
	total := 1
	for i := 1; i < len(text); i++ {
		x := text[i]
		if text[i-1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',') {
			total--
		}
		text[total] = x
		total++
	}
	text = text[:total]
	// " ' " -> "'"
	total = 1
	for i := 1; i < len(text); i++ {
		x := text[i]
		if x == '\'' && i+1 < len(text) && text[i-1] == ' ' && text[i+1] == ' ' {
			total--
			i++
			text[i] = 0
		}
		text[total] = x
		total++
	}
	text = text[:total]
	// " 's", " 'm", " 're", " 've"
	total = 1
	for i := 1; i < len(text); i++ {
		x := text[i]
		if text[i-1] == ' ' && x == '\'' && i+1 < len(text) {
			x1 := text[i+1]
			if x1 == 's' || x1 == 'm' {
				total--
			} else if i+2 < len(text) {
				x2 := text[i+2]
				if (x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e') {
					total--
				}
			}
		}
		text[total] = x
		total++
	}
	return text[:total]
}
