package safetensors

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"testing"
)

// golden is testdata/small.json, written by testdata/make_golden.py next to
// testdata/small.safetensors (written by the reference implementation).
type golden struct {
	Metadata map[string]string `json:"metadata"`
	Tensors  map[string]struct {
		DType  DType     `json:"dtype"`
		Shape  []int     `json:"shape"`
		Values []float64 `json:"values"`
	} `json:"tensors"`
}

func TestOpenMatchesReferenceWriter(t *testing.T) {
	f, err := Open("testdata/small.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	var g golden
	b, err := os.ReadFile("testdata/small.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	if len(f.Metadata) != len(g.Metadata) {
		t.Errorf("metadata %v, want %v", f.Metadata, g.Metadata)
	}
	for k, v := range g.Metadata {
		if f.Metadata[k] != v {
			t.Errorf("metadata[%q] = %q, want %q", k, f.Metadata[k], v)
		}
	}
	if len(f.Names()) != len(g.Tensors) {
		t.Errorf("names %v, want %d tensors", f.Names(), len(g.Tensors))
	}
	for name, want := range g.Tensors {
		tn, ok := f.Tensor(name)
		if !ok {
			t.Errorf("tensor %q missing", name)
			continue
		}
		if tn.DType != want.DType || !slices.Equal(tn.Shape, want.Shape) || tn.NumElements() != len(want.Values) {
			t.Errorf("%s: %s %v (%d elements), want %s %v (%d)", name, tn.DType, tn.Shape, tn.NumElements(), want.DType, want.Shape, len(want.Values))
			continue
		}
		if tn.DType == I64 {
			for i, v := range want.Values {
				if got := int64(binary.LittleEndian.Uint64(tn.Data[8*i:])); got != int64(v) {
					t.Errorf("%s[%d] = %d, want %v", name, i, got, v)
				}
			}
			if _, err := tn.Float32s(); err == nil {
				t.Errorf("%s: Float32s of I64 succeeded, want an error", name)
			}
			continue
		}
		got, err := tn.Float32s()
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		for i, v := range want.Values {
			if got[i] != float32(v) {
				t.Errorf("%s[%d] = %v, want %v", name, i, got[i], float32(v))
			}
		}
	}
}

// file builds a safetensors file from a header string and a buffer.
func file(header string, buf []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, buf...)
}

func TestParseRejectsMalformedHeaders(t *testing.T) {
	huge := binary.LittleEndian.AppendUint64(nil, 1<<62)
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"short length", []byte{1, 2, 3}},
		{"length past end", file(`{}`, nil)[:9]},
		{"huge length", append(huge, '{', '}')},
		{"not an object", file(`[1,2]`, nil)},
		{"bad json", file(`{"a":`, nil)},
		{"blank header", file(`   `, nil)},
		{"missing dtype", file(`{"a":{"shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4))},
		{"missing offsets", file(`{"a":{"dtype":"F32","shape":[1]}}`, make([]byte, 4))},
		{"unknown dtype", file(`{"a":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4))},
		{"negative dim", file(`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, make([]byte, 4))},
		{"three offsets", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}`, make([]byte, 4))},
		{"begin after end", file(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}}`, make([]byte, 4))},
		{"end past buffer", file(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 4))},
		{"size mismatch", file(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}`, make([]byte, 4))},
		{"overflowing shape", file(`{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}}`, nil)},
		{"overlap", file(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, make([]byte, 8))},
		{"hole", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, make([]byte, 8))},
		{"trailing bytes", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 8))},
		{"metadata not strings", file(`{"__metadata__":{"a":1}}`, nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse(tt.in)
			if err == nil {
				t.Fatalf("Parse succeeded with %d tensors, want an error", len(f.Names()))
			}
			if !errors.Is(err, ErrFormat) {
				t.Errorf("error %v does not wrap ErrFormat", err)
			}
		})
	}
}

func TestParseAcceptsMinimalFiles(t *testing.T) {
	for _, in := range [][]byte{
		file(`{}`, nil),
		file(` {"__metadata__":{"k":"v"}} `, nil),
		file(`{"s":{"dtype":"U8","shape":[],"data_offsets":[0,1]},"e":{"dtype":"F16","shape":[0,3],"data_offsets":[1,1]}}`, []byte{9}),
	} {
		if _, err := Parse(in); err != nil {
			t.Errorf("Parse(%q): %v", in, err)
		}
	}
}

func TestOpenMissingFileFails(t *testing.T) {
	if _, err := Open("testdata/does-not-exist.safetensors"); err == nil {
		t.Fatal("Open of a missing file succeeded")
	}
}

// FuzzParse checks that no input makes Parse panic and that every tensor
// it accepts lies inside the input with a size matching its shape.
func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile("testdata/small.safetensors"); err == nil {
		f.Add(b)
	}
	f.Add(file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)))
	f.Fuzz(func(t *testing.T, b []byte) {
		sf, err := Parse(b)
		if err != nil {
			return
		}
		for _, name := range sf.Names() {
			tn, _ := sf.Tensor(name)
			if len(tn.Data) != tn.NumElements()*tn.DType.Size() {
				t.Fatalf("%s: %d bytes for %v %s", name, len(tn.Data), tn.Shape, tn.DType)
			}
			switch tn.DType {
			case F32, F16, BF16, F64:
				if _, err := tn.Float32s(); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
}
