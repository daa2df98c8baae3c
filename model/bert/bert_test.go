package bert

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/blendrag/blendrag/kernels"
	"github.com/blendrag/blendrag/model/bert/safetensors"
	"github.com/blendrag/blendrag/model/fetch"
)

// modelDir returns the default embedder's directory, skipping the test when
// it has not been fetched (`make models` fetches it).
func modelDir(t testing.TB) string {
	t.Helper()
	dir := fetch.EmbedderDir(fetch.Dir())
	if _, err := os.Stat(filepath.Join(dir, "model.safetensors")); err != nil {
		t.Skipf("embedder not found (%v); run `make models`", err)
	}
	return dir
}

// sharedEncoder loads the default embedder once for the package's tests.
var sharedEncoder = sync.OnceValues(func() (*Encoder, error) {
	return Load(fetch.EmbedderDir(fetch.Dir()), Options{Threads: 2})
})

func encoder(t testing.TB) *Encoder {
	t.Helper()
	modelDir(t)
	e, err := sharedEncoder()
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// golden is testdata/golden.json, written by testdata/make_golden.py with
// sentence-transformers.
type golden struct {
	Reference string `json:"reference"`
	MaxTokens int    `json:"max_tokens"`
	Texts     []struct {
		Text      string    `json:"text"`
		Pieces    int       `json:"pieces"`
		Windows   int       `json:"windows"`
		Embedding []float32 `json:"embedding"`
	} `json:"texts"`
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

// goldenBatch embeds every golden text in one call, once per test binary.
var goldenBatch = struct {
	once sync.Once
	vecs [][]float32
	err  error
}{}

func embedGolden(t *testing.T, e *Encoder, g *golden) [][]float32 {
	t.Helper()
	goldenBatch.once.Do(func() {
		texts := make([]string, len(g.Texts))
		for i, gt := range g.Texts {
			texts[i] = gt.Text
		}
		goldenBatch.vecs, goldenBatch.err = e.Embed(texts)
	})
	if goldenBatch.err != nil {
		t.Fatal(goldenBatch.err)
	}
	return goldenBatch.vecs
}

func cosine(a, b []float32) float64 {
	var ab, aa, bb float64
	for i := range a {
		ab += float64(a[i]) * float64(b[i])
		aa += float64(a[i]) * float64(a[i])
		bb += float64(b[i]) * float64(b[i])
	}
	return ab / math.Sqrt(aa*bb)
}

func norm(v []float32) float64 {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	return math.Sqrt(s)
}

func TestEmbedMatchesSentenceTransformers(t *testing.T) {
	e := encoder(t)
	g := loadGolden(t)
	if e.MaxTokens() != g.MaxTokens || e.Dim() != 384 {
		t.Fatalf("MaxTokens %d, Dim %d; golden made with max %d, dim 384", e.MaxTokens(), e.Dim(), g.MaxTokens)
	}
	texts := make([]string, len(g.Texts))
	for i, gt := range g.Texts {
		texts[i] = gt.Text
		if n := len(e.Tokenizer().AppendPieces(nil, gt.Text)); n != gt.Pieces {
			t.Errorf("text %d: %d word pieces, reference %d", i, n, gt.Pieces)
		}
	}
	got := embedGolden(t, e, g)
	if len(got) != len(texts) {
		t.Fatalf("%d vectors for %d texts", len(got), len(texts))
	}
	minCos, long := 1.0, 0
	for i, gt := range g.Texts {
		if len(got[i]) != len(gt.Embedding) {
			t.Fatalf("text %d: dim %d, want %d", i, len(got[i]), len(gt.Embedding))
		}
		if n := norm(got[i]); math.Abs(n-1) > 1e-5 {
			t.Errorf("text %d: norm %v, want 1", i, n)
		}
		c := cosine(got[i], gt.Embedding)
		minCos = min(minCos, c)
		if c < 0.999 {
			t.Errorf("text %d (%d pieces, %d windows) %.40q: cosine %.6f with %s, want ≥ 0.999", i, gt.Pieces, gt.Windows, gt.Text, c, g.Reference)
		}
		if gt.Windows > 1 {
			long++
		}
	}
	if long == 0 {
		t.Error("golden set has no text longer than one window")
	}
	t.Logf("min cosine %.9f (1−cos %.2g) over %d texts (%d windowed) against %s", minCos, 1-minCos, len(texts), long, g.Reference)
}

// A text's vector does not depend on the other texts of the call, nor on
// where the batch is cut into forward passes (the golden batch is cut once).
func TestEmbedIsBatchInvariant(t *testing.T) {
	e := encoder(t)
	g := loadGolden(t)
	all := embedGolden(t, e, g)
	var short []int // the short texts, reversed below
	var singles []int
	for i, gt := range g.Texts {
		switch {
		case gt.Windows == 1:
			short = append(short, i)
		case len(singles) == 0:
			singles = append(singles, i) // the first windowed text
		}
	}
	singles = append(singles, short[0], short[len(short)-1])
	for _, i := range singles {
		one, err := e.Embed([]string{g.Texts[i].Text})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(one[0], all[i]) {
			t.Errorf("text %d: alone %v…, in a batch %v…", i, one[0][:4], all[i][:4])
		}
	}
	slices.Reverse(short)
	var texts []string
	for _, i := range short {
		texts = append(texts, g.Texts[i].Text)
	}
	back, err := e.Embed(texts)
	if err != nil {
		t.Fatal(err)
	}
	for k, i := range short {
		if !slices.Equal(back[k], all[i]) {
			t.Errorf("text %d differs in a reversed batch", i)
		}
	}
}

func TestEmbedConcurrentCallsAgree(t *testing.T) {
	e := encoder(t)
	texts := []string{"concurrent calls are serialised", "and agree with a single call", strings.Repeat("word ", 40)}
	want, err := e.Embed(texts)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			got, err := e.Embed(texts)
			if err != nil {
				errs <- err
				return
			}
			for i := range texts {
				if !slices.Equal(got[i], want[i]) {
					errs <- errors.New("concurrent result differs")
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestEmbedNoTexts(t *testing.T) {
	e := encoder(t)
	got, err := e.Embed(nil)
	if err != nil || len(got) != 0 {
		t.Fatalf("Embed(nil) = %v, %v", got, err)
	}
}

func TestEmbedAfterCloseFails(t *testing.T) {
	e, err := Load(modelDir(t), Options{Threads: 1, MaxTokens: 16})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Embed([]string{"open"}); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := e.Embed([]string{"closed"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Embed after Close: %v, want ErrClosed", err)
	}
}

// copyModel makes a temporary copy of the model directory (the weights by
// symlink) whose file name is replaced by contents.
func copyModel(t *testing.T, name, contents string) string {
	t.Helper()
	src := modelDir(t)
	dst := t.TempDir()
	for _, f := range []string{"config.json", "tokenizer.json", "sentence_bert_config.json", "model.safetensors"} {
		abs, err := filepath.Abs(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(abs, filepath.Join(dst, f)); err != nil {
			t.Fatal(err)
		}
	}
	p := filepath.Join(dst, name)
	os.Remove(p)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(contents), 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

func TestLoadRejectsBadModels(t *testing.T) {
	cfg, err := os.ReadFile(filepath.Join(modelDir(t), "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	edit := func(old, new string) string {
		s := strings.Replace(string(cfg), old, new, 1)
		if s == string(cfg) {
			t.Fatalf("config.json has no %q", old)
		}
		return s
	}
	tests := []struct {
		name, file, contents string
		opt                  Options
	}{
		{"tanh gelu", "config.json", edit(`"gelu"`, `"gelu_new"`), Options{}},
		{"wrong hidden size", "config.json", edit(`"hidden_size": 384`, `"hidden_size": 768`), Options{}},
		{"heads do not divide", "config.json", edit(`"num_attention_heads": 12`, `"num_attention_heads": 7`), Options{}},
		{"not bert", "config.json", edit(`"model_type": "bert"`, `"model_type": "llama"`), Options{}},
		{"bad json", "config.json", "{", Options{}},
		{"cls pooling", "1_Pooling/config.json", `{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}`, Options{}},
		{"truncated weights", "model.safetensors", "\x10\x00\x00\x00\x00\x00\x00\x00{}", Options{}},
		{"too many tokens", "sentence_bert_config.json", `{"max_seq_length": 256}`, Options{MaxTokens: 513}},
		{"too few tokens", "sentence_bert_config.json", `{"max_seq_length": 256}`, Options{MaxTokens: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := copyModel(t, tt.file, tt.contents)
			if e, err := Load(dir, tt.opt); err == nil {
				e.Close()
				t.Fatal("Load succeeded, want an error")
			}
		})
	}
	if _, err := Load(t.TempDir(), Options{}); err == nil {
		t.Error("Load of an empty directory succeeded")
	}
}

// Windows shorter than the model's: a text of many windows still gets a
// unit vector close to its single-window embedding's direction.
func TestSmallWindowsSplitLongText(t *testing.T) {
	dir := modelDir(t)
	e, err := Load(dir, Options{Threads: 2, MaxTokens: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	text := "the cat sat on the mat while the dog slept by the door in the sun"
	small, err := e.Embed([]string{text})
	if err != nil {
		t.Fatal(err)
	}
	full, err := encoder(t).Embed([]string{text})
	if err != nil {
		t.Fatal(err)
	}
	if n := norm(small[0]); math.Abs(n-1) > 1e-5 {
		t.Errorf("norm %v", n)
	}
	if c := cosine(small[0], full[0]); c < 0.5 || c > 0.9999 {
		t.Errorf("cosine between 3-window and 1-window embeddings %v, want related but different", c)
	}
}

// chunkText is about 300 words, the size of a 384-token generator chunk.
func chunkText() string {
	words := strings.Fields(`Retrieval-augmented generation combines a retriever, which finds passages
relevant to a question, with a generator that writes the answer conditioned on those passages. In
this system every document is split into chunks of a few hundred tokens, and each chunk is indexed
three ways: by BM25 over its words, by a dense vector from a small BERT encoder, and by a
cross-encoder approximated with a CUR decomposition of a matrix of anchor scores.`)
	var b strings.Builder
	for i := range 300 {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(words[i%len(words)])
	}
	return b.String()
}

// BenchmarkEmbedChunk embeds batches of 8 chunks of ~300 words (~390 word
// pieces, two windows each) on 2 threads, and reports wall ms per chunk,
// chunks (texts) per second, and CPU ms per chunk (all threads; on a
// machine shared with other work the wall figures overstate the cost).
func BenchmarkEmbedChunk(b *testing.B) {
	e, err := Load(modelDir(b), Options{Threads: 2})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	texts := make([]string, 8)
	for i := range texts {
		texts[i] = chunkText() + strings.Repeat(" extra", i)
	}
	pieces := len(e.Tokenizer().AppendPieces(nil, texts[0]))
	if _, err := e.Embed(texts); err != nil {
		b.Fatal(err)
	}
	cpu0 := cpuTime()
	for b.Loop() {
		if _, err := e.Embed(texts); err != nil {
			b.Fatal(err)
		}
	}
	perChunk := b.Elapsed().Seconds() / float64(b.N*len(texts))
	b.ReportMetric(perChunk*1e3, "ms/chunk")
	b.ReportMetric(1/perChunk, "texts/s")
	b.ReportMetric(float64(pieces), "pieces/chunk")
	if cpu := cpuTime() - cpu0; cpu0 > 0 {
		b.ReportMetric(cpu.Seconds()*1e3/float64(b.N*len(texts)), "cpu-ms/chunk")
	}
}

// writeF16Model copies the model directory with every F32 tensor of
// model.safetensors converted to F16, by a minimal safetensors writer.
func writeF16Model(t *testing.T) string {
	t.Helper()
	src := modelDir(t)
	f, err := safetensors.Open(filepath.Join(src, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	header := map[string]any{}
	var data []byte
	for _, name := range f.Names() {
		tn, _ := f.Tensor(name)
		dtype, raw := string(tn.DType), tn.Data
		if tn.DType == safetensors.F32 {
			v, err := tn.Float32s()
			if err != nil {
				t.Fatal(err)
			}
			raw = make([]byte, 2*len(v))
			for i, x := range v {
				binary.LittleEndian.PutUint16(raw[2*i:], kernels.F32ToF16(x))
			}
			dtype = "F16"
		}
		header[name] = map[string]any{"dtype": dtype, "shape": tn.Shape, "data_offsets": []int{len(data), len(data) + len(raw)}}
		data = append(data, raw...)
	}
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	file := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
	file = append(append(file, h...), data...)
	dir := t.TempDir()
	for _, name := range []string{"config.json", "tokenizer.json", "sentence_bert_config.json"} {
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "model.safetensors"), file, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// F16 weights are converted on load and still reproduce the reference
// (F32) embeddings closely.
func TestF16WeightsMatchSentenceTransformers(t *testing.T) {
	g := loadGolden(t)
	e, err := Load(writeF16Model(t), Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var texts []string
	var want [][]float32
	for _, gt := range g.Texts[:8] {
		texts = append(texts, gt.Text)
		want = append(want, gt.Embedding)
	}
	got, err := e.Embed(texts)
	if err != nil {
		t.Fatal(err)
	}
	for i := range texts {
		if c := cosine(got[i], want[i]); c < 0.999 {
			t.Errorf("text %d %.40q: cosine %.6f with F16 weights, want ≥ 0.999", i, texts[i], c)
		}
	}
}
