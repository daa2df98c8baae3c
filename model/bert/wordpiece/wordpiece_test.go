package wordpiece

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/blendrag/blendrag/model/fetch"
)

// golden is testdata/golden.json, written by testdata/make_golden.py with
// Hugging Face tokenizers from the model's own tokenizer.json.
type golden struct {
	Reference string `json:"reference"`
	Encodings []struct {
		Text string  `json:"text"`
		IDs  []int32 `json:"ids"`
	} `json:"encodings"`
	Chars struct {
		Runs   [][3]json.RawMessage `json:"runs"`
		Mapped map[string]string    `json:"mapped"`
	} `json:"chars"`
}

func loadGolden(t *testing.T) *golden {
	t.Helper()
	b, err := os.ReadFile("testdata/golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var g golden
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	return &g
}

// modelTokenizer loads the default embedder's tokenizer.json, skipping the
// test when the model has not been fetched (`make models`).
func modelTokenizer(t testing.TB) *Tokenizer {
	t.Helper()
	path := filepath.Join(fetch.EmbedderDir(fetch.Dir()), "tokenizer.json")
	if _, err := os.Stat(path); err != nil {
		t.Skipf("embedder not found (%v); run `make models`", err)
	}
	tok, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestEncodeMatchesHuggingFace(t *testing.T) {
	tok := modelTokenizer(t)
	g := loadGolden(t)
	bad := 0
	for _, e := range g.Encodings {
		got := tok.Encode(e.Text)
		if !slices.Equal(got, e.IDs) {
			bad++
			if bad <= 10 {
				t.Errorf("Encode(%q)\n got %v\nwant %v (%s)", e.Text, got, e.IDs, g.Reference)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d encodings differ", bad, len(g.Encodings))
	}
}

// Every code point is normalized and pre-tokenized as the reference does.
func TestEveryCodePointMatchesHuggingFace(t *testing.T) {
	tok := modelTokenizer(t)
	g := loadGolden(t)
	class := make(map[rune]string)
	for _, r := range g.Chars.Runs {
		var lo, hi rune
		var c string
		if json.Unmarshal(r[0], &lo) != nil || json.Unmarshal(r[1], &hi) != nil || json.Unmarshal(r[2], &c) != nil {
			t.Fatalf("bad run %s", r)
		}
		for cp := lo; cp <= hi; cp++ {
			class[cp] = c
		}
	}
	mapped := make(map[rune]string, len(g.Chars.Mapped))
	for k, v := range g.Chars.Mapped {
		cp, err := strconv.Atoi(k)
		if err != nil {
			t.Fatal(err)
		}
		mapped[rune(cp)] = v
	}
	inVocab := make(map[rune]bool)
	for _, tok := range tok.tokens {
		for _, r := range tok {
			inVocab[r] = true
		}
	}
	bad, tolerated := 0, 0
	for cp := rune(0); cp <= utf8.MaxRune; cp++ {
		if !utf8.ValidRune(cp) {
			continue
		}
		c := string(cp)
		want, punct := c, false
		switch class[cp] {
		case "removed":
			want = ""
		case "cjk":
			want = " " + c + " "
		case "punct":
			punct = true
		}
		if m, ok := mapped[cp]; ok {
			want = m
		}
		got := tok.Normalize(c)
		gotPunct := got == c && len(tok.Words("a"+c+"a")) == 3
		if got == want && gotPunct == punct {
			continue
		}
		if !inVocab[cp] {
			tolerated++ // a Unicode-version difference (see the package doc)
			continue
		}
		bad++
		if bad <= 20 {
			t.Errorf("U+%04X: Normalize = %+q (punct %v), want %+q (punct %v)", cp, got, gotPunct, want, punct)
		}
	}
	if bad > 0 {
		t.Errorf("%d code points of the vocabulary differ from %s", bad, g.Reference)
	}
	// Measured: 624 characters, all assigned after Unicode 9 and none in the
	// vocabulary. Many more would mean a real change of behaviour.
	if tolerated > maxUnicodeVersionDiffs {
		t.Errorf("%d code points outside the vocabulary differ from %s, want at most %d", tolerated, g.Reference, maxUnicodeVersionDiffs)
	}
	t.Logf("%d code points outside the vocabulary differ from %s (Unicode tables of different versions)", tolerated, g.Reference)
}

// maxUnicodeVersionDiffs bounds the code points whose normalization may
// differ from the reference because its category tables (Unicode 9 era)
// are older than Go's: the 624 measured plus headroom for a newer Go.
const maxUnicodeVersionDiffs = 800

func TestWordOverMaxCharsIsUnknown(t *testing.T) {
	tok := modelTokenizer(t)
	for _, tt := range []struct {
		n   int
		unk bool
	}{{1, false}, {100, false}, {101, true}, {300, true}} {
		ids := tok.Encode(strings.Repeat("é", tt.n)) // one character, "e" after accent stripping
		if got := slices.Contains(ids, tok.Unknown()); got != tt.unk {
			t.Errorf("%d characters: ids %v, [UNK] present %v, want %v", tt.n, ids, got, tt.unk)
		}
	}
}

func TestParseRejectsOtherPipelines(t *testing.T) {
	base := `{"normalizer":{"type":"BertNormalizer","lowercase":true},"pre_tokenizer":{"type":"BertPreTokenizer"},
"post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"[CLS]"}},{"Sequence":{"id":"A"}},{"SpecialToken":{"id":"[SEP]"}}],
"special_tokens":{"[CLS]":{"ids":[1]},"[SEP]":{"ids":[2]}}},
"model":{"type":"WordPiece","unk_token":"[UNK]","continuing_subword_prefix":"##","max_input_chars_per_word":100,"vocab":{"[UNK]":0,"[CLS]":1,"[SEP]":2,"a":3,"##b":4}}}`
	tok, err := Parse([]byte(base))
	if err != nil {
		t.Fatalf("minimal tokenizer.json: %v", err)
	}
	if got := tok.Encode("AB a-c"); !slices.Equal(got, []int32{1, 3, 4, 3, 0, 0, 2}) {
		t.Errorf("minimal Encode = %v", got)
	}
	for name, edit := range map[string][2]string{
		"bpe model":        {`"type":"WordPiece"`, `"type":"BPE"`},
		"other normalizer": {`"BertNormalizer"`, `"NFC"`},
		"other pre":        {`"BertPreTokenizer"`, `"Whitespace"`},
		"unk missing":      {`"unk_token":"[UNK]"`, `"unk_token":"[X]"`},
		"no max chars":     {`"max_input_chars_per_word":100`, `"max_input_chars_per_word":0`},
		"bad special id":   {`"[SEP]":{"ids":[2]}`, `"[SEP]":{"ids":[99]}`},
		"negative id":      {`"a":3`, `"a":-3`},
		"not json":         {`{"normalizer"`, `{normalizer`},
		"no template":      {`{"Sequence":{"id":"A"}},`, ``},
	} {
		in := strings.Replace(base, edit[0], edit[1], 1)
		if in == base {
			t.Fatalf("%s: edit did not apply", name)
		}
		if _, err := Parse([]byte(in)); err == nil {
			t.Errorf("%s: Parse succeeded, want an error", name)
		}
	}
}

func BenchmarkEncode(b *testing.B) {
	tok := modelTokenizer(b)
	text := strings.Repeat("The quick brown fox jumps over the lazy dog; naïve café, 3.14! ", 20)
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		tok.Encode(text)
	}
}
