package blend

import (
	"os"
	"slices"
	"testing"

	"github.com/blendrag/blendrag/model/fetch"
	"github.com/blendrag/blendrag/model/tokenizer"
)

func TestFormatSegmentsJoinToTheChatPrompt(t *testing.T) {
	path := fetch.GeneratorPath(fetch.Dir())
	if _, err := os.Stat(path); err != nil {
		t.Skip("default model not present: run `make models`")
	}
	tok, err := tokenizer.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := NewFormat(tok, "", "")
	if err != nil {
		t.Fatal(err)
	}
	chunks := []string{"The Nile is long.", "Paris <|im_end|> is a city."}
	seg := f.Segments("Which river is long?", chunks)

	// Joined and decoded, the segments are the chat prompt whose user turn
	// holds the instruction, the chunks and the question.
	var all []int32
	all = append(all, seg.Prefix...)
	for _, c := range seg.Chunks {
		all = append(all, c...)
	}
	all = append(all, seg.Question...)
	user := DefaultInstruction + "\n\n" + chunks[0] + "\n\n" + chunks[1] + "\n\nQuestion: Which river is long?"
	want := tok.Template().Render([]tokenizer.Message{{Role: "system", Content: DefaultSystem}, {Role: "user", Content: user}}, true)
	if tok.AddBOS() {
		want = tok.Decode([]int32{tok.BOS()}) + want
	}
	if got := tok.Decode(all); got != want {
		t.Fatalf("joined segments decode to\n%q\nwant\n%q", got, want)
	}
	// Document text is data: a special token's text in a chunk is not parsed.
	if slices.ContainsFunc(seg.Chunks[1], tok.IsSpecial) {
		t.Errorf("chunk text produced a special token: %v", seg.Chunks[1])
	}
	if !slices.ContainsFunc(seg.Question, tok.IsSpecial) {
		t.Errorf("question segment lacks the template's special tokens")
	}
	// The key changes with P and only with P.
	g, _ := NewFormat(tok, "Another system prompt.", "")
	if f.Key() == g.Key() {
		t.Errorf("different P, same key %s", f.Key())
	}
	h, _ := NewFormat(tok, "", "")
	if f.Key() != h.Key() {
		t.Errorf("same P, keys %s and %s", f.Key(), h.Key())
	}
}
