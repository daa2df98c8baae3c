package gguf

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/blendrag/blendrag/kernels"
)

const smolName = "SmolLM2-135M-Instruct.Q4_1.gguf"

// modelPath returns where the real model lives: $BLENDRAG_MODELS or
// ~/.cache/blendrag/models, plus the file name. The test skips when absent.
func modelPath(t testing.TB) string {
	dir := os.Getenv("BLENDRAG_MODELS")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			t.Skip("no home directory and BLENDRAG_MODELS unset")
		}
		dir = filepath.Join(home, ".cache", "blendrag", "models")
	}
	p := filepath.Join(dir, smolName)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("%s not present: %v", p, err)
	}
	return p
}

// golden is testdata/smollm2_golden.json, written by make_golden.py with the
// PyPI gguf package's GGUFReader.
type golden struct {
	FileSize   int64                  `json:"file_size"`
	Version    uint32                 `json:"version"`
	Alignment  uint32                 `json:"alignment"`
	DataOffset int64                  `json:"data_offset"`
	Keys       []string               `json:"keys"`
	Metadata   map[string]goldenValue `json:"metadata"`
	Tensors    []goldenTensor         `json:"tensors"`
}

type goldenValue struct {
	Type   string          `json:"type"`
	Value  json.RawMessage `json:"value"`
	Len    int             `json:"len"`
	Head   json.RawMessage `json:"head"`
	Tail   json.RawMessage `json:"tail"`
	SHA256 string          `json:"sha256"`
}

type goldenTensor struct {
	Name     string   `json:"name"`
	Dims     []uint64 `json:"dims"`
	Type     uint32   `json:"type"`
	TypeName string   `json:"type_name"`
	Offset   uint64   `json:"offset"`
	Size     uint64   `json:"size"`
	Elements uint64   `json:"elements"`
}

// typeString renders a value's type as make_golden.py does: "uint32",
// "array[string]" (nested arrays do not occur in the file).
func typeString(v Value) string {
	if v.Type() == TypeArray {
		return "array[" + v.ElemType().String() + "]"
	}
	return v.Type().String()
}

// arrayDigest hashes an array as make_golden.py does: strings as uint64
// length + bytes, numbers as their little-endian bytes.
func arrayDigest(v Value) string {
	h := sha256.New()
	enc := appendValue(nil, v)[12:] // drop element type and count
	if s, ok := v.AsStrings(); ok {
		for _, x := range s {
			h.Write(binary.LittleEndian.AppendUint64(nil, uint64(len(x))))
			h.Write([]byte(x))
		}
	} else {
		h.Write(enc)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// jsonValue renders a scalar or a short array the way Python's json module
// would decode it, for comparison with the golden file.
func jsonValue(t *testing.T, v Value) any {
	t.Helper()
	if elems, ok := v.AsArray(); ok {
		out := make([]any, len(elems))
		for i, e := range elems {
			out[i] = jsonValue(t, e)
		}
		return out
	}
	switch v.Type() {
	case TypeString:
		s, _ := v.AsString()
		return s
	case TypeBool:
		b, _ := v.AsBool()
		return b
	case TypeFloat32, TypeFloat64:
		x, _ := v.AsFloat()
		return x
	}
	if x, ok := v.AsInt(); ok {
		return float64(x) // JSON numbers decode as float64
	}
	x, _ := v.AsUint()
	return float64(x)
}

func decodeJSON(t *testing.T, raw json.RawMessage) any {
	t.Helper()
	var x any
	if err := json.Unmarshal(raw, &x); err != nil {
		t.Fatal(err)
	}
	return x
}

func TestSmolLM2MatchesPythonReader(t *testing.T) {
	path := modelPath(t)
	var g golden
	raw, err := os.ReadFile("testdata/smollm2_golden.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &g); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Open + parse: %v", time.Since(start))
	defer f.Close()

	// The facts the rest of blendrag relies on.
	if n, ok := f.Uint("llama.context_length"); !ok || n != 8192 {
		t.Errorf("llama.context_length = %d, %v; want 8192", n, ok)
	}
	if n := len(f.Tensors()); n != 272 {
		t.Errorf("%d tensors, want 272", n)
	}
	tokens, ok := f.Strings("tokenizer.ggml.tokens")
	if !ok || len(tokens) != 49152 {
		t.Errorf("%d tokens (ok=%v), want 49152", len(tokens), ok)
	}
	if a, ok := f.String("general.architecture"); !ok || a != "llama" {
		t.Errorf("general.architecture = %q", a)
	}

	// Everything against the reference reader.
	st, _ := os.Stat(path)
	if st.Size() != g.FileSize {
		t.Fatalf("file is %d bytes, golden was made from %d bytes", st.Size(), g.FileSize)
	}
	if f.Version != g.Version || f.Alignment != g.Alignment || f.DataOffset() != g.DataOffset {
		t.Errorf("version %d alignment %d data offset %d; want %d %d %d",
			f.Version, f.Alignment, f.DataOffset(), g.Version, g.Alignment, g.DataOffset)
	}
	if !slices.Equal(f.Keys(), g.Keys) {
		t.Errorf("keys = %v\nwant %v", f.Keys(), g.Keys)
	}
	for _, k := range g.Keys {
		want := g.Metadata[k]
		v, ok := f.Value(k)
		if !ok {
			t.Errorf("%s missing", k)
			continue
		}
		if typeString(v) != want.Type {
			t.Errorf("%s: type %s, want %s", k, typeString(v), want.Type)
		}
		if v.Type() == TypeArray {
			if v.Len() != want.Len || arrayDigest(v) != want.SHA256 {
				t.Errorf("%s: %d elements digest %s; want %d, %s", k, v.Len(), arrayDigest(v), want.Len, want.SHA256)
			}
			elems, _ := v.AsArray()
			if want.Value != nil && !reflect.DeepEqual(jsonValue(t, v), decodeJSON(t, want.Value)) {
				t.Errorf("%s = %v, want %s", k, v, want.Value)
			}
			if want.Head != nil {
				gotHead := make([]any, 5)
				gotTail := make([]any, 5)
				for i := range 5 {
					gotHead[i] = jsonValue(t, elems[i])
					gotTail[i] = jsonValue(t, elems[len(elems)-5+i])
				}
				if !reflect.DeepEqual(gotHead, decodeJSON(t, want.Head)) || !reflect.DeepEqual(gotTail, decodeJSON(t, want.Tail)) {
					t.Errorf("%s: head %v tail %v; want %s %s", k, gotHead, gotTail, want.Head, want.Tail)
				}
			}
			continue
		}
		if got, w := jsonValue(t, v), decodeJSON(t, want.Value); !reflect.DeepEqual(got, w) {
			t.Errorf("%s = %#v, want %#v", k, got, w)
		}
	}
	if eps, _ := f.Float("llama.attention.layer_norm_rms_epsilon"); eps != float64(float32(1e-5)) {
		t.Errorf("rms epsilon %v", eps)
	}
	if base, _ := f.Float("llama.rope.freq_base"); base != 100000 {
		t.Errorf("rope base %v", base)
	}

	ts := f.Tensors()
	if len(ts) != len(g.Tensors) {
		t.Fatalf("%d tensors, golden has %d", len(ts), len(g.Tensors))
	}
	for i, want := range g.Tensors {
		got := ts[i]
		if got.Name != want.Name || !slices.Equal(got.Dims, want.Dims) || uint32(got.Type) != want.Type ||
			got.Type.String() != want.TypeName || got.Offset != want.Offset || got.Size != want.Size || got.Elements() != want.Elements {
			t.Errorf("tensor %d = %+v (%v), want %+v", i, got, got.Type, want)
		}
		if d := f.Data(got); uint64(len(d)) != want.Size {
			t.Errorf("%s: Data has %d bytes", got.Name, len(d))
		}
	}
	// Q4_1 weights with F32 norms and a Q8_0 embedding, as the design says.
	counts := map[kernels.DType]int{}
	for _, ti := range ts {
		counts[ti.Type]++
	}
	if counts[kernels.Q4_1] != 210 || counts[kernels.F32] != 61 || counts[kernels.Q8_0] != 1 {
		t.Errorf("type counts %v", counts)
	}
}

// BenchmarkParseSmolLM2 measures parsing the real file's header (metadata
// with its 49152-token vocabulary and 48900 merges, and 272 tensor infos)
// from memory; the data section is not touched.
func BenchmarkParseSmolLM2(b *testing.B) {
	data, err := os.ReadFile(modelPath(b))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(data); err != nil {
			b.Fatal(err)
		}
	}
}
