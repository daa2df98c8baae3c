package retrieval

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Tokenizer is what chunking needs from the generator's tokenizer;
// *tokenizer.Tokenizer satisfies it.
type Tokenizer interface {
	Encode(text string, parseSpecial bool) []int32
}

// SegmentSeparator opens every chunk's prompt segment (DESIGN.md "The
// prompt as segments"): a chunk is prefilled as SegmentSeparator+Text.
const SegmentSeparator = "\n\n"

// Chunk size bounds, in tokens of a chunk's segment.
const (
	DefaultChunkTokens = 384
	MinChunkTokens     = 128
	MaxChunkTokens     = 1024
)

// ChunkOptions sets the chunk budget. Zero Tokens means DefaultChunkTokens.
type ChunkOptions struct {
	// Tokens bounds each chunk's segment SegmentSeparator+Text, in tokens;
	// valid MinChunkTokens..MaxChunkTokens.
	Tokens int
	// Overlap is how many tokens of a chunk's tail (whole sentences, at
	// least Overlap tokens of them) the next chunk repeats; 0 ≤ Overlap <
	// Tokens/2.
	Overlap int
}

// Chunk is a piece of a document's text, the unit of retrieval and of
// cached KV.
type Chunk struct {
	// ID is the full hex SHA-256 of Text (64 characters), so identical
	// text anywhere yields the same ID and is stored once.
	ID string
	// Doc is the Document.ID the chunk came from.
	Doc string
	// Start and End are Text's byte range in Parsed.Text.
	Start, End int
	// Page is the 1-based PDF page holding Start; 0 for unpaged kinds.
	Page int
	Text string
	// Tokens is the token count of the segment SegmentSeparator+Text.
	Tokens int
}

// Chunker splits parsed documents into chunks whose segments fit a token
// budget under a tokenizer. It is safe for concurrent use if the tokenizer
// is.
type Chunker struct {
	tok Tokenizer
	opt ChunkOptions
}

// NewChunker returns a Chunker for tok with opt (zero Tokens takes the
// default). It fails for a nil tokenizer and out-of-range options.
func NewChunker(tok Tokenizer, opt ChunkOptions) (*Chunker, error) {
	if tok == nil {
		return nil, errors.New("chunker: nil tokenizer")
	}
	if opt.Tokens == 0 {
		opt.Tokens = DefaultChunkTokens
	}
	if opt.Tokens < MinChunkTokens || opt.Tokens > MaxChunkTokens {
		return nil, fmt.Errorf("chunker: %d tokens per chunk outside %d..%d", opt.Tokens, MinChunkTokens, MaxChunkTokens)
	}
	if opt.Overlap < 0 || opt.Overlap >= opt.Tokens/2 {
		return nil, fmt.Errorf("chunker: overlap %d outside 0..%d", opt.Overlap, opt.Tokens/2-1)
	}
	return &Chunker{tok: tok, opt: opt}, nil
}

// Options returns the chunker's options, defaults filled in.
func (c *Chunker) Options() ChunkOptions { return c.opt }

// Boundary strengths between pieces: the chunker prefers to cut at the
// strongest boundary that leaves the chunk at least half full.
const (
	boundToken = iota
	boundWord
	boundSentence
	boundParagraph
)

// piece is a run of text that never straddles a chunk boundary.
type piece struct {
	start, end int
	bound      int // strength of the boundary before the piece
	first      int // tokens of SegmentSeparator+piece: exact
	join       int // tokens of the text from the previous piece's end to this one's end: estimate
}

// Split cuts p.Text into chunks: paragraphs, else sentences, else words,
// else token-sized runs, packed greedily so that every chunk's segment
// SegmentSeparator+Text has at most Options().Tokens tokens (exactly
// counted). A chunk ends at a paragraph (else sentence, else word) boundary
// when that keeps it at least half full. Chunks are in text order, never
// start or end with white space, and cover every non-space byte; with
// Overlap they repeat the previous chunk's last sentences.
func (c *Chunker) Split(p *Parsed) []Chunk {
	pieces := c.pieces(p.Text)
	budget := c.opt.Tokens
	var out []Chunk
	prevEnd := 0 // pieces before prevEnd are covered
	for i := 0; i < len(pieces); {
		// Greedy estimate from the per-piece counts.
		cost, j := pieces[i].first, i+1
		for j < len(pieces) && cost+pieces[j].join <= budget {
			cost += pieces[j].join
			j++
		}
		if j < len(pieces) {
			j = bestCut(pieces, i, j, max(prevEnd+1, i+1), budget)
		}
		// Exact count; tokenization across joins can differ from the sum.
		var text string
		var n int
		for {
			text = p.Text[pieces[i].start:pieces[j-1].end]
			n = c.count(text)
			if n <= budget {
				break
			}
			if j-1 > max(prevEnd, i) {
				j--
			} else {
				i++ // give up overlap before new text
			}
		}
		out = append(out, Chunk{
			ID:     ChunkID(text),
			Doc:    p.Doc.ID,
			Start:  pieces[i].start,
			End:    pieces[j-1].end,
			Page:   pageAt(p.Pages, pieces[i].start),
			Text:   text,
			Tokens: n,
		})
		prevEnd = j
		i = c.overlapStart(pieces, i, j)
	}
	return out
}

// ChunkID is the ID of a chunk with the given text: its hex SHA-256.
func ChunkID(text string) string {
	h := sha256.Sum256([]byte(text))
	return hex.EncodeToString(h[:])
}

// bestCut picks the end (exclusive) of the chunk starting at piece i when
// pieces [i, j) fit and piece j does not: the cut before the piece with the
// strongest boundary in (lo..j] whose chunk is at least half the budget,
// the latest such; else j.
func bestCut(pieces []piece, i, j, lo, budget int) int {
	best, bestBound := j, pieces[j].bound
	cost := pieces[i].first
	for m := i + 1; m < j; m++ {
		if m >= lo && cost >= budget/2 && pieces[m].bound > bestBound {
			best, bestBound = m, pieces[m].bound
		}
		cost += pieces[m].join
	}
	// Among equal strengths prefer the latest: scan again from the end.
	if best != j {
		for m := j - 1; m > best; m-- {
			if pieces[m].bound == bestBound {
				return m
			}
		}
	}
	return best
}

// overlapStart returns where the chunk after pieces [i, j) starts: j, or
// with Overlap the earliest tail piece > i such that the tail has at least
// Overlap tokens while the tail plus piece j still fits the budget.
func (c *Chunker) overlapStart(pieces []piece, i, j int) int {
	if c.opt.Overlap == 0 || j >= len(pieces) {
		return j
	}
	tail := func(s int) int { // estimated tokens of pieces [s, j) as a segment
		n := pieces[s].first
		for m := s + 1; m < j; m++ {
			n += pieces[m].join
		}
		return n
	}
	s := j - 1
	for s > i+1 && tail(s) < c.opt.Overlap {
		s--
	}
	if s <= i || tail(s) < c.opt.Overlap {
		s = max(s, i+1)
	}
	for s < j && tail(s)+pieces[j].join > c.opt.Tokens {
		s++
	}
	return s
}

// pieces splits text into the runs the packer works with, each with its
// token counts.
func (c *Chunker) pieces(text string) []piece {
	var out []piece
	add := func(start, end, bound int, first int) {
		joinFrom := 0
		if len(out) > 0 {
			joinFrom = out[len(out)-1].end
		}
		join := first
		if len(out) > 0 {
			join = c.count0(text[joinFrom:end])
		}
		out = append(out, piece{start: start, end: end, bound: bound, first: first, join: join})
	}
	for _, para := range spans(text, 0, len(text), paragraphEnd) {
		bound := boundParagraph
		for _, sent := range sentences(text, para[0], para[1]) {
			if n := c.count(text[sent[0]:sent[1]]); n <= c.opt.Tokens {
				add(sent[0], sent[1], bound, n)
				bound = boundSentence
				continue
			}
			for _, w := range spans(text, sent[0], sent[1], wordEnd) {
				for start := w[0]; start < w[1]; {
					end, n := c.fit(text, start, w[1])
					add(start, end, bound, n)
					bound = boundToken
					start = end
				}
				bound = boundWord
			}
			bound = boundSentence
		}
	}
	return out
}

// fit returns the longest end ≤ limit, at a rune boundary, such that the
// segment of text[start:end] fits the budget (at least one rune), and its
// token count.
func (c *Chunker) fit(text string, start, limit int) (int, int) {
	if n := c.count(text[start:limit]); n <= c.opt.Tokens {
		return limit, n
	}
	// Binary search over byte lengths; a token is rarely above 32 bytes.
	lo, hi := start+1, min(limit, start+32*c.opt.Tokens)
	for lo < hi && !utf8.RuneStart(text[lo]) {
		lo++
	}
	best, bestN := lo, c.count(text[start:lo])
	for lo <= hi {
		mid := (lo + hi) / 2
		for mid < limit && !utf8.RuneStart(text[mid]) {
			mid++
		}
		if mid > hi {
			break
		}
		if n := c.count(text[start:mid]); n <= c.opt.Tokens {
			best, bestN = mid, n
			lo = mid + 1
		} else {
			hi = mid - 1
		}
	}
	return best, bestN
}

// count is the token count of s's segment SegmentSeparator+s.
func (c *Chunker) count(s string) int {
	return len(c.tok.Encode(SegmentSeparator+s, false))
}

// count0 is the token count of s alone.
func (c *Chunker) count0(s string) int { return len(c.tok.Encode(s, false)) }

// pageAt returns the number of the page whose text holds byte pos, or 0.
func pageAt(pages []Page, pos int) int {
	k := sort.Search(len(pages), func(k int) bool { return pages[k].End > pos })
	if k == len(pages) {
		return 0
	}
	return pages[k].Number
}

// spans cuts text[start:end] at the separators found by next (which returns
// the end of the run starting at i and the start of the next one) and
// returns the non-blank runs, trimmed of white space.
func spans(text string, start, end int, next func(s string, i, end int) (int, int)) [][2]int {
	var out [][2]int
	for i := start; i < end; {
		e, n := next(text, i, end)
		a, b := trimSpan(text, i, e)
		if a < b {
			out = append(out, [2]int{a, b})
		}
		i = n
	}
	return out
}

// paragraphEnd finds the next blank line ("\n" + spaces + "\n").
func paragraphEnd(s string, i, end int) (int, int) {
	for k := i; k < end; k++ {
		if s[k] != '\n' {
			continue
		}
		m := k + 1
		for m < end && (s[m] == ' ' || s[m] == '\t' || s[m] == '\r') {
			m++
		}
		if m < end && s[m] == '\n' {
			return k, m + 1
		}
	}
	return end, end
}

// wordEnd finds the next run of white space.
func wordEnd(s string, i, end int) (int, int) {
	for k := i; k < end; {
		r, size := utf8.DecodeRuneInString(s[k:end])
		if unicode.IsSpace(r) {
			m := k + size
			for m < end {
				r2, sz := utf8.DecodeRuneInString(s[m:end])
				if !unicode.IsSpace(r2) {
					break
				}
				m += sz
			}
			return k, m
		}
		k += size
	}
	return end, end
}

func trimSpan(s string, a, b int) (int, int) {
	for a < b {
		r, size := utf8.DecodeRuneInString(s[a:b])
		if !unicode.IsSpace(r) {
			break
		}
		a += size
	}
	for a < b {
		r, size := utf8.DecodeLastRuneInString(s[a:b])
		if !unicode.IsSpace(r) {
			break
		}
		b -= size
	}
	return a, b
}

// sentences cuts the paragraph text[start:end] into sentences: after
// terminal punctuation (. ! ? … and closing quotes or brackets) followed by
// white space, except after common abbreviations and single-letter
// initials; after CJK full stops; and at line breaks.
func sentences(text string, start, end int) [][2]int {
	return spans(text, start, end, sentenceEnd)
}

func sentenceEnd(s string, i, end int) (int, int) {
	for k := i; k < end; {
		r, size := utf8.DecodeRuneInString(s[k:end])
		k2 := k + size
		switch r {
		case '\n':
			return k, k2
		case '。', '！', '？':
			for k2 < end && isCloser(s[k2]) {
				k2++
			}
			return k2, k2
		case '.', '!', '?', '…':
			for k2 < end && (isCloser(s[k2]) || s[k2] == '.' || s[k2] == '!' || s[k2] == '?') {
				k2++
			}
			if k2 == end {
				return end, end
			}
			if sp, _ := utf8.DecodeRuneInString(s[k2:end]); unicode.IsSpace(sp) && !(r == '.' && abbreviation(s[i:k])) {
				return k2, k2
			}
		}
		k = k2
	}
	return end, end
}

func isCloser(b byte) bool {
	switch b {
	case '"', '\'', ')', ']', '}':
		return true
	}
	return false
}

// abbreviation reports whether the word ending s (the text before a
// period) is an initial or a common abbreviation.
func abbreviation(s string) bool {
	w := s[strings.LastIndexFunc(s, unicode.IsSpace)+1:]
	w = strings.TrimLeft(w, "(\"'[")
	if utf8.RuneCountInString(w) == 1 {
		r, _ := utf8.DecodeRuneInString(w)
		return unicode.IsLetter(r)
	}
	switch strings.ToLower(w) {
	case "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "e.g", "i.e",
		"no", "fig", "inc", "ltd", "co", "cf", "al", "approx", "dept", "gen", "gov",
		"lt", "col", "sgt", "capt", "mt", "ft", "vol", "pp", "ed", "u.s", "u.k":
		return true
	}
	return false
}
