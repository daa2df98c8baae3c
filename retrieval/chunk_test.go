package retrieval

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"unicode"
)

// wordTokens is a tokenizer with one token per white-space-separated word:
// token counts are additive, so budgets can be checked by hand.
type wordTokens struct{ bytes atomic.Int64 }

func (w *wordTokens) Encode(text string, _ bool) []int32 {
	w.bytes.Add(int64(len(text)))
	return make([]int32, len(strings.Fields(text)))
}

// byteTokens has one token per byte, like a byte-level BPE without merges;
// it makes long words split by tokens.
type byteTokens struct{}

func (byteTokens) Encode(text string, _ bool) []int32 { return make([]int32, len(text)) }

// sentenceText makes n sentences of `words` words each; word k of sentence
// s is unique so chunks can be located.
func sentenceText(n, words int) []string {
	out := make([]string, n)
	for s := range out {
		w := make([]string, words)
		for k := range w {
			w[k] = fmt.Sprintf("w%dx%d", s, k)
		}
		w[0] = strings.ToUpper(w[0][:1]) + w[0][1:]
		out[s] = strings.Join(w, " ") + "."
	}
	return out
}

// checkChunks asserts the invariants every Split result must satisfy.
func checkChunks(t *testing.T, p *Parsed, chunks []Chunk, tok Tokenizer, budget int, overlap bool) {
	t.Helper()
	if len(chunks) == 0 {
		t.Fatal("no chunks")
	}
	covered := 0 // p.Text[:covered] is covered
	for i, c := range chunks {
		if p.Text[c.Start:c.End] != c.Text {
			t.Fatalf("chunk %d: range [%d,%d) does not hold its text", i, c.Start, c.End)
		}
		if c.Text == "" || strings.TrimSpace(c.Text) != c.Text {
			t.Fatalf("chunk %d: empty or untrimmed %q", i, c.Text)
		}
		h := sha256.Sum256([]byte(c.Text))
		if c.ID != hex.EncodeToString(h[:]) || c.Doc != p.Doc.ID {
			t.Fatalf("chunk %d: ID %s doc %s", i, c.ID, c.Doc)
		}
		n := len(tok.Encode("\n\n"+c.Text, false))
		if c.Tokens != n || n > budget {
			t.Fatalf("chunk %d: Tokens %d, segment has %d, budget %d", i, c.Tokens, n, budget)
		}
		if gap := p.Text[min(covered, c.Start):c.Start]; strings.TrimSpace(gap) != "" {
			t.Fatalf("chunk %d: text %q before it is in no chunk", i, gap)
		}
		if i > 0 {
			prev := chunks[i-1]
			if c.Start <= prev.Start || c.End <= prev.End {
				t.Fatalf("chunk %d [%d,%d) does not advance past [%d,%d)", i, c.Start, c.End, prev.Start, prev.End)
			}
			if !overlap && c.Start < prev.End {
				t.Fatalf("chunk %d overlaps the previous one without Overlap", i)
			}
		}
		want := 0
		for _, pg := range p.Pages {
			if pg.Start <= c.Start && c.Start < pg.End {
				want = pg.Number
			}
		}
		if c.Page != want {
			t.Fatalf("chunk %d at %d: page %d, want %d", i, c.Start, c.Page, want)
		}
		covered = c.End
	}
	if rest := p.Text[covered:]; strings.TrimSpace(rest) != "" {
		t.Fatalf("text after the last chunk is in no chunk: %q", rest)
	}
}

func TestNewChunkerValidatesOptions(t *testing.T) {
	tok := &wordTokens{}
	tests := []struct {
		opt ChunkOptions
		ok  bool
	}{
		{ChunkOptions{}, true},
		{ChunkOptions{Tokens: 128}, true},
		{ChunkOptions{Tokens: 1024, Overlap: 511}, true},
		{ChunkOptions{Tokens: 127}, false},
		{ChunkOptions{Tokens: 1025}, false},
		{ChunkOptions{Tokens: 128, Overlap: 64}, false},
		{ChunkOptions{Overlap: -1}, false},
	}
	for _, tt := range tests {
		c, err := NewChunker(tok, tt.opt)
		if (err == nil) != tt.ok {
			t.Errorf("NewChunker(%+v) error %v, want ok=%v", tt.opt, err, tt.ok)
		}
		if err == nil && tt.opt.Tokens == 0 && c.Options().Tokens != DefaultChunkTokens {
			t.Errorf("default tokens %d", c.Options().Tokens)
		}
	}
	if _, err := NewChunker(nil, ChunkOptions{}); err == nil {
		t.Error("nil tokenizer accepted")
	}
}

func TestSplitCutsAtParagraphsWhenHalfFull(t *testing.T) {
	// Paragraphs of 10 sentences × 10 words = 100 tokens; budget 128: each
	// chunk is exactly one paragraph although a sentence more would fit.
	var paras []string
	for i := range 5 {
		s := sentenceText(10, 10)
		for k := range s {
			s[k] = fmt.Sprintf("P%d %s", i, s[k][:len(s[k])-1]) + "."
		}
		paras = append(paras, strings.Join(s, " "))
	}
	tok := &wordTokens{}
	p, err := ParseText("doc", strings.Join(paras, "\n\n"))
	if err != nil {
		t.Fatal(err)
	}
	c, _ := NewChunker(tok, ChunkOptions{Tokens: 128})
	chunks := c.Split(p)
	checkChunks(t, p, chunks, tok, 128, false)
	if len(chunks) != len(paras) {
		t.Fatalf("%d chunks for %d paragraphs", len(chunks), len(paras))
	}
	for i, ch := range chunks {
		if ch.Text != paras[i] {
			t.Errorf("chunk %d is not paragraph %d: %.60q…", i, i, ch.Text)
		}
	}
}

func TestSplitCutsLongParagraphsAtSentences(t *testing.T) {
	text := strings.Join(sentenceText(100, 7), " ") // one 700-word paragraph
	p, _ := ParseText("doc", text)
	tok := &wordTokens{}
	c, _ := NewChunker(tok, ChunkOptions{Tokens: 128})
	chunks := c.Split(p)
	checkChunks(t, p, chunks, tok, 128, false)
	for i, ch := range chunks {
		if !strings.HasSuffix(ch.Text, ".") || ch.Tokens < 128-7 && i < len(chunks)-1 {
			t.Errorf("chunk %d (%d tokens) does not end a sentence or is underfull: …%q", i, ch.Tokens, ch.Text[max(0, len(ch.Text)-20):])
		}
	}
}

func TestSplitCutsOverlongSentencesAtWordsThenTokens(t *testing.T) {
	// A sentence of 300 words (no punctuation) and one 1000-byte word.
	words := make([]string, 300)
	for i := range words {
		words[i] = fmt.Sprintf("word%d", i)
	}
	long := strings.Repeat("x", 1000)
	p, _ := ParseText("doc", strings.Join(words, " ")+"\n\n"+long+" tail.")
	for _, tok := range []Tokenizer{&wordTokens{}, byteTokens{}} {
		c, _ := NewChunker(tok, ChunkOptions{Tokens: 128})
		chunks := c.Split(p)
		checkChunks(t, p, chunks, tok, 128, false)
		for i, ch := range chunks {
			end := ch.End == len(p.Text) || unicode.IsSpace(rune(p.Text[ch.End]))
			inLong := ch.Start >= strings.Index(p.Text, long) && ch.End <= strings.Index(p.Text, long)+len(long)
			if !end && !inLong {
				t.Errorf("%T chunk %d ends inside a word: …%q", tok, i, ch.Text[max(0, len(ch.Text)-12):])
			}
		}
	}
}

func TestSplitOverlapRepeatsTailSentences(t *testing.T) {
	text := strings.Join(sentenceText(60, 10), " ")
	p, _ := ParseText("doc", text)
	tok := &wordTokens{}
	c, err := NewChunker(tok, ChunkOptions{Tokens: 128, Overlap: 25})
	if err != nil {
		t.Fatal(err)
	}
	chunks := c.Split(p)
	checkChunks(t, p, chunks, tok, 128, true)
	for i := 1; i < len(chunks); i++ {
		shared := p.Text[chunks[i].Start:max(chunks[i].Start, chunks[i-1].End)]
		if n := len(strings.Fields(shared)); n < 25 || n > 40 {
			t.Errorf("chunks %d and %d share %d words, want 25..40 (whole sentences ≥ Overlap)", i-1, i, n)
		}
		if !strings.HasSuffix(shared, ".") {
			t.Errorf("shared tail %q is not whole sentences", shared)
		}
	}
}

func TestSplitIdenticalTextSameID(t *testing.T) {
	para := strings.Join(sentenceText(12, 10), " ") // 120 words: one chunk
	p, _ := ParseText("doc", para+"\n\n"+para)
	intro := strings.Join(sentenceText(10, 10), " ") // 100 words: no room for para
	q, _ := ParseText("other", intro+"\n\n"+para)
	tok := &wordTokens{}
	c, _ := NewChunker(tok, ChunkOptions{Tokens: 128})
	a, b := c.Split(p), c.Split(q)
	if len(a) != 2 || a[0].ID != a[1].ID || a[0].Start == a[1].Start {
		t.Fatalf("repeated paragraph: %d chunks %+v", len(a), a)
	}
	found := false
	for _, ch := range b {
		found = found || ch.ID == a[0].ID && ch.Doc == q.Doc.ID
	}
	if !found {
		t.Error("the same paragraph in another document got another chunk ID")
	}
}

func TestSplitPageIsPageOfStart(t *testing.T) {
	var b strings.Builder
	var pages []Page
	for n := 1; n <= 3; n++ {
		if n > 1 {
			b.WriteString("\n\n")
		}
		start := b.Len()
		b.WriteString(strings.Join(sentenceText(30, 9), " "))
		pages = append(pages, Page{Number: n, Start: start, End: b.Len()})
	}
	p := &Parsed{Doc: Document{ID: "d", Kind: KindPDF, Pages: 3}, Text: b.String(), Pages: pages}
	tok := &wordTokens{}
	c, _ := NewChunker(tok, ChunkOptions{Tokens: 200})
	chunks := c.Split(p)
	checkChunks(t, p, chunks, tok, 200, false) // checks Page against a scan
	seen := map[int]bool{}
	for _, ch := range chunks {
		seen[ch.Page] = true
	}
	if len(seen) != 3 {
		t.Errorf("chunks start on pages %v, want all of 1..3", seen)
	}
}

// TestSplitEncodesLinearly checks the chunker does not re-encode growing
// chunks: on a long document the bytes it hands the tokenizer stay a small
// multiple of the text.
func TestSplitEncodesLinearly(t *testing.T) {
	text := strings.Join(sentenceText(5000, 12), " ")
	p, _ := ParseText("doc", text)
	tok := &wordTokens{}
	c, _ := NewChunker(tok, ChunkOptions{Tokens: 512})
	chunks := c.Split(p)
	ratio := float64(tok.bytes.Load()) / float64(len(text))
	checkChunks(t, p, chunks, tok, 512, false)
	// Each sentence is encoded alone and with its join, each chunk once.
	if ratio > 3.5 {
		t.Errorf("tokenizer saw %.1f× the text's bytes", ratio)
	}
}

// TestSplitBudgetsUnderSmolLM2 runs the invariants with the generator's
// real BPE tokenizer, whose counts are not additive across joins.
func TestSplitBudgetsUnderSmolLM2(t *testing.T) {
	tok := loadSmolLM2(t)
	paras := loadMusique(t, 30)
	// Add an unpunctuated run, a long token-free word and non-ASCII text.
	paras = append(paras, strings.Repeat("lorem ipsum dolor ", 400), strings.Repeat("ab", 2000),
		strings.Repeat("Größe und Gewicht — 東京タワーは高い。", 60))
	p, err := ParseText("musique", strings.Join(paras, "\n\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, opt := range []ChunkOptions{{Tokens: 128}, {Tokens: 384, Overlap: 64}, {Tokens: 1024}} {
		c, err := NewChunker(tok, opt)
		if err != nil {
			t.Fatal(err)
		}
		chunks := c.Split(p)
		checkChunks(t, p, chunks, tok, opt.Tokens, opt.Overlap > 0)
		full := 0
		for _, ch := range chunks {
			if ch.Tokens >= opt.Tokens/2 {
				full++
			}
		}
		if full < len(chunks)*3/4 {
			t.Errorf("%+v: only %d of %d chunks at least half full", opt, full, len(chunks))
		}
		t.Logf("%+v: %d chunks over %d bytes", opt, len(chunks), len(p.Text))
	}
}

// TestSplitInvariantsOnRandomText checks the invariants on random texts
// built from fragments that stress the splitter: sentence ends,
// abbreviations, line and paragraph breaks, overlong words, CJK, spaces.
func TestSplitInvariantsOnRandomText(t *testing.T) {
	frags := []string{"word ", "other ", "Dr. ", "e.g. ", "end. ", "Why? ", "wow!\" ", "3.14 ",
		"\n", "\n\n", " \n \n ", "東京。", "…", "\t", strings.Repeat("z", 300) + " ", "ünï ", "a.b.c "}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 300 {
		var b strings.Builder
		for range rng.IntN(800) + 1 {
			b.WriteString(frags[rng.IntN(len(frags))])
		}
		p, err := ParseText("rand", b.String())
		if err != nil {
			continue
		}
		for _, tok := range []Tokenizer{&wordTokens{}, byteTokens{}} {
			for _, opt := range []ChunkOptions{{Tokens: 128}, {Tokens: 128, Overlap: 63}, {Tokens: 200, Overlap: 10}} {
				c, err := NewChunker(tok, opt)
				if err != nil {
					t.Fatal(err)
				}
				t.Run(fmt.Sprintf("%d/%T/%d/%d", i, tok, opt.Tokens, opt.Overlap), func(t *testing.T) {
					checkChunks(t, p, c.Split(p), tok, opt.Tokens, opt.Overlap > 0)
				})
			}
		}
	}
}
