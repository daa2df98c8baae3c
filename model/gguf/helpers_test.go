package gguf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/blendrag/blendrag/kernels"
)

// encode writes w to memory.
func encode(t testing.TB, w *Writer) []byte {
	t.Helper()
	var buf bytes.Buffer
	n, err := w.WriteTo(&buf)
	if err != nil {
		t.Fatalf("WriteTo: %v", err)
	}
	if n != int64(buf.Len()) {
		t.Fatalf("WriteTo reported %d bytes, wrote %d", n, buf.Len())
	}
	return buf.Bytes()
}

// randomBytes returns n deterministic pseudo-random bytes.
func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 99))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// tensorBytes returns random data of the right size for typ and dims.
func tensorBytes(t testing.TB, seed uint64, typ kernels.DType, dims []uint64) []byte {
	t.Helper()
	_, size, err := tensorSize(typ, dims)
	if err != nil {
		t.Fatalf("tensorSize(%v, %v): %v", typ, dims, err)
	}
	return randomBytes(seed, int(size))
}

// smallFile is a small valid file: a few metadata pairs of different types
// and three tensors of different types, default alignment.
func smallFile(t testing.TB) []byte {
	t.Helper()
	var w Writer
	must(t, w.AddKV("general.architecture", String("llama")))
	must(t, w.AddKV("llama.context_length", Uint32(64)))
	must(t, w.AddKV("llama.rope.freq_base", Float32(10000)))
	must(t, w.AddKV("tokenizer.ggml.tokens", Strings([]string{"a", "bc", ""})))
	must(t, w.AddKV("tokenizer.ggml.token_type", Int32s([]int32{1, 2, 3})))
	must(t, w.AddKV("flag", Bool(true)))
	dims := [][]uint64{{32, 2}, {8}, {32}}
	types := []kernels.DType{kernels.Q4_1, kernels.F32, kernels.Q8_0}
	names := []string{"token_embd.weight", "output_norm.weight", "blk.0.attn_q.weight"}
	for i := range names {
		must(t, w.AddTensor(names[i], types[i], dims[i], tensorBytes(t, uint64(i), types[i], dims[i])))
	}
	return encode(t, &w)
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// raw builds a GGUF byte stream by hand, for malformed inputs the Writer
// refuses to produce.
type raw struct{ b []byte }

func rawHeader(version uint32, tensors, kvs uint64) *raw {
	r := &raw{b: []byte("GGUF")}
	return r.u32(version).u64(tensors).u64(kvs)
}

func (r *raw) u8(x uint8) *raw   { r.b = append(r.b, x); return r }
func (r *raw) u32(x uint32) *raw { r.b = binary.LittleEndian.AppendUint32(r.b, x); return r }
func (r *raw) u64(x uint64) *raw { r.b = binary.LittleEndian.AppendUint64(r.b, x); return r }
func (r *raw) str(s string) *raw { return r.u64(uint64(len(s))).bytes([]byte(s)) }
func (r *raw) bytes(b []byte) *raw {
	r.b = append(r.b, b...)
	return r
}

// kv appends key with a uint32 value.
func (r *raw) kvU32(key string, x uint32) *raw { return r.str(key).u32(uint32(TypeUint32)).u32(x) }

// tensor appends one tensor info.
func (r *raw) tensor(name string, typ kernels.DType, off uint64, dims ...uint64) *raw {
	r.str(name).u32(uint32(len(dims)))
	for _, d := range dims {
		r.u64(d)
	}
	return r.u32(uint32(typ)).u64(off)
}

// pad appends zero bytes up to a multiple of a, then n more bytes.
func (r *raw) padData(a, n int) *raw {
	for len(r.b)%a != 0 {
		r.b = append(r.b, 0)
	}
	r.b = append(r.b, make([]byte, n)...)
	return r
}

// isSentinel reports whether err wraps one of the package's three sentinels.
func isSentinel(err error) bool {
	return errors.Is(err, ErrMalformed) || errors.Is(err, ErrUnsupported) || errors.Is(err, ErrNotGGUF)
}
