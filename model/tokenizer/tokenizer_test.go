package tokenizer

import (
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"
)

func bpeTiny(t testing.TB) *Tokenizer {
	t.Helper()
	tok, err := Load(filepath.Join("testdata", "bpe_tiny.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestNewRejectsInvalidConfig checks that New reports, rather than panics
// on, configurations it cannot honour.
func TestNewRejectsInvalidConfig(t *testing.T) {
	ok := Config{Model: "gpt2", Pre: "smollm", Tokens: []string{"a", "b", "ab"}, Merges: []string{"a b"},
		BOS: -1, EOS: -1, UNK: -1, PAD: -1, EOT: -1}
	if _, err := New(ok); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for name, mutate := range map[string]func(*Config){
		"empty vocabulary": func(c *Config) { c.Tokens = nil },
		"unknown model":    func(c *Config) { c.Model = "wordpiece" },
		"unknown pre":      func(c *Config) { c.Pre = "no-such-pre" },
		"no merges":        func(c *Config) { c.Merges = nil },
		"short types":      func(c *Config) { c.Types = []int32{1} },
		"short scores":     func(c *Config) { c.Scores = []float32{0} },
		"BOS out of range": func(c *Config) { c.BOS = 3 },
		"EOS below -1":     func(c *Config) { c.EOS = -2 },
		"duplicate token":  func(c *Config) { c.Tokens = []string{"a", "a", "ab"} },
		"empty model":      func(c *Config) { c.Model = "" },
	} {
		c := ok
		mutate(&c)
		if tok, err := New(c); err == nil {
			t.Errorf("%s: New succeeded (%v)", name, tok != nil)
		}
	}
}

// TestLoadMissingFileWrapsError checks that a missing file's error keeps the
// underlying cause.
func TestLoadMissingFileWrapsError(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "absent.gguf"))
	if err == nil {
		t.Fatal("Load of a missing file succeeded")
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("error %v does not wrap fs.ErrNotExist", err)
	}
}

// TestDecoderHoldsPartialSequences feeds a four-byte emoji one byte token at a
// time: nothing comes out until the last byte, then the whole character.
func TestDecoderHoldsPartialSequences(t *testing.T) {
	tok := bpeTiny(t)
	byteToken := func(b byte) int32 {
		id, ok := tok.TokenID(string(byteLevelTable()[b]))
		if !ok {
			t.Fatalf("no token for byte %#x", b)
		}
		return id
	}
	d := tok.NewDecoder()
	emoji := "😀"
	for i := 0; i < len(emoji); i++ {
		got := d.Add(byteToken(emoji[i]))
		want := ""
		if i == len(emoji)-1 {
			want = emoji
		}
		if got != want {
			t.Fatalf("after byte %d: Add = %q, want %q", i, got, want)
		}
	}
	if got := d.Add(byteToken(0xFF)); got != "\uFFFD" {
		t.Errorf("byte 0xFF: Add = %q, want U+FFFD", got)
	}
	if got := d.Add(byteToken(0xE2)) + d.Add(byteToken(0x82)); got != "" {
		t.Errorf("partial sequence emitted %q", got)
	}
	if got := d.Flush(); got != "\uFFFD\uFFFD" {
		t.Errorf("Flush of a truncated sequence = %q, want two U+FFFD", got)
	}
	if got := d.Add(byteToken('A')); got != "A" {
		t.Errorf("after Flush: Add = %q", got)
	}
}

// TestEncodeIsSafeForConcurrentUse runs Encode from several goroutines
// (meaningful under -race) and checks they all agree.
func TestEncodeIsSafeForConcurrentUse(t *testing.T) {
	tok := bpeTiny(t)
	text := benchText[:600]
	want := tok.Encode(text, true)
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				if got := tok.Encode(text, true); len(got) != len(want) {
					errs <- "concurrent Encode disagreed"
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// TestEOGCoversChatMLEnd checks the end-of-generation set of a ChatML
// vocabulary and the special-token accessors.
func TestEOGCoversChatMLEnd(t *testing.T) {
	tok := bpeTiny(t)
	end, ok := tok.TokenID("<|im_end|>")
	if !ok || !tok.IsEOG(end) || tok.EOT() != end {
		t.Errorf("<|im_end|> (%d): IsEOG=%v, EOT()=%d", end, tok.IsEOG(end), tok.EOT())
	}
	start, _ := tok.TokenID("<|im_start|>")
	if tok.IsEOG(start) || !tok.IsSpecial(start) {
		t.Errorf("<|im_start|>: IsEOG=%v IsSpecial=%v", tok.IsEOG(start), tok.IsSpecial(start))
	}
	if tok.Piece(-1) != nil || tok.Piece(int32(tok.Vocab())) != nil || tok.TokenText(-1) != "" {
		t.Error("out-of-range ids must give empty results")
	}
	if got := string(tok.Piece(start)); got != "<|im_start|>" {
		t.Errorf("Piece(<|im_start|>) = %q", got)
	}
}

// TestParseTemplateDetectsFormat checks format detection on published
// template sources.
func TestParseTemplateDetectsFormat(t *testing.T) {
	for _, c := range []struct {
		name, src     string
		kind          TemplateKind
		defaultSystem string
		fallback      bool
	}{
		{"empty", "", ChatML, "", true},
		{"unknown", "{{ messages }}", ChatML, "", true},
		{"name", "llama3", Llama3, "", false},
		{"qwen2", "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}" +
			"{{ '<|im_start|>system\\nYou are a helpful assistant<|im_end|>\\n' }}{% endif %}" +
			"{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}",
			ChatML, "You are a helpful assistant", false},
		{"chatml without default", "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n'}}{% endfor %}",
			ChatML, "", false},
		{"llama2 chat", "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}<<SYS>>", Llama2SysStrip, "", false},
		{"llama2 sys", "[INST] <<SYS>>\\n{{ system }}", Llama2Sys, "", false},
		{"mistral v7", "[SYSTEM_PROMPT] [INST]", MistralV7, "", false},
		{"llama3", "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}", Llama3, "", false},
	} {
		got := ParseTemplate(c.src)
		if got.Kind != c.kind || got.DefaultSystem != c.defaultSystem || got.Fallback != c.fallback {
			t.Errorf("%s: ParseTemplate = %+v, want kind %v system %q fallback %v", c.name, got, c.kind, c.defaultSystem, c.fallback)
		}
	}
}

// TestRenderTokenizesToSpecialTokens checks that a rendered ChatML prompt,
// encoded with parseSpecial, carries the control tokens as single ids.
func TestRenderTokenizesToSpecialTokens(t *testing.T) {
	tok := bpeTiny(t)
	text := Template{Kind: ChatML}.Render([]Message{{Role: "user", Content: "Hi"}}, true)
	ids := tok.Encode(text, true)
	start, _ := tok.TokenID("<|im_start|>")
	end, _ := tok.TokenID("<|im_end|>")
	n := map[int32]int{}
	for _, id := range ids {
		n[id]++
	}
	if n[start] != 2 || n[end] != 1 {
		t.Errorf("Encode(%q) = %v: %d <|im_start|>, %d <|im_end|>", text, ids, n[start], n[end])
	}
	if got := tok.Decode(ids); got != text {
		t.Errorf("Decode = %q, want %q", got, text)
	}
}

// benchText is about 2 KB of English prose.
var benchText = func() string {
	const para = "Retrieval-augmented generation answers a question by first finding the passages of a " +
		"document collection that are most relevant to it, and then asking a language model to answer " +
		"with those passages in its context. The passages are split into chunks of a few hundred tokens; " +
		"every chunk is indexed by its words, by a dense vector, and by the key and value states the model " +
		"computes for it. When a question arrives, the system retrieves the best chunks, loads their cached " +
		"states and fuses them into one context instead of encoding every chunk again, which makes the time " +
		"to the first token several times lower than a full prefill. In 2024, it cost $0.15 per 1,000 queries.\n\n"
	var b strings.Builder
	for b.Len() < 2048 {
		b.WriteString(para)
	}
	return b.String()[:2048]
}()

// BenchmarkEncode2KB encodes 2 KB of English prose with SmolLM2's tokenizer.
func BenchmarkEncode2KB(b *testing.B) {
	tok := smolLM2(b, "")
	if !utf8.ValidString(benchText) {
		b.Fatal("bench text is not UTF-8")
	}
	b.SetBytes(int64(len(benchText)))
	var n int
	for b.Loop() {
		n = len(tok.Encode(benchText, false))
	}
	b.ReportMetric(float64(n), "tokens/op")
}
