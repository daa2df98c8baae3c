package gguf

import (
	"bytes"
	"cmp"
	"slices"
	"testing"

	"github.com/blendrag/blendrag/kernels"
)

// fuzzSeeds are small valid files from the Writer plus a few hand-built
// edge cases.
func fuzzSeeds(t testing.TB) [][]byte {
	seeds := [][]byte{smallFile(t), rawHeader(2, 0, 0).b}

	var w Writer
	for _, c := range everyValue {
		must(t, w.AddKV(c.key, c.val))
	}
	seeds = append(seeds, encode(t, &w))

	var a Writer
	must(t, a.AddKV(AlignmentKey, Uint32(8)))
	must(t, a.AddTensor("q4k", kernels.Q4_K, []uint64{256}, tensorBytes(t, 7, kernels.Q4_K, []uint64{256})))
	must(t, a.AddTensor("f16", kernels.F16, []uint64{3, 1, 1, 2}, tensorBytes(t, 8, kernels.F16, []uint64{3, 1, 1, 2})))
	seeds = append(seeds, encode(t, &a))

	seeds = append(seeds,
		// Tensor data out of directory order.
		rawHeader(3, 2, 0).tensor("a", kernels.F32, 32, 8).tensor("b", kernels.F32, 0, 8).padData(32, 64).b,
		rawHeader(3, 0, 1).str("k").u32(uint32(TypeArray)).u32(uint32(TypeArray)).u64(1).u32(uint32(TypeString)).u64(1).str("x").b,
	)
	return seeds
}

// FuzzParse checks that Parse never panics, that every error wraps one of
// the package's sentinels, and that every file it accepts is consistent:
// each tensor's data lies inside the input, aligned and disjoint from the
// others, and re-encoding the parsed content with the Writer yields a file
// that parses to the same metadata and tensors.
func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		in = in[:len(in):len(in)]
		file, err := Parse(in)
		if err != nil {
			if file != nil || !isSentinel(err) {
				t.Fatalf("Parse = %v, %v: want nil and a sentinel-wrapping error", file, err)
			}
			return
		}
		checkConsistent(t, file, in)

		// Round trip through the Writer, unless the alignment is so large
		// that the re-encoded file's padding would dominate the run time
		// (a file aligned to 2 GiB is valid but must be 2 GiB long).
		if file.Alignment > 1<<16 {
			return
		}
		var w Writer
		for _, k := range file.Keys() {
			v, _ := file.Value(k)
			if err := w.AddKV(k, v); err != nil {
				t.Fatalf("Writer rejects parsed pair %q: %v", k, err)
			}
		}
		for _, ti := range file.Tensors() {
			if err := w.AddTensor(ti.Name, ti.Type, ti.Dims, file.Data(ti)); err != nil {
				t.Fatalf("Writer rejects parsed tensor %q: %v", ti.Name, err)
			}
		}
		var buf bytes.Buffer
		if _, err := w.WriteTo(&buf); err != nil {
			t.Fatal(err)
		}
		again, err := Parse(buf.Bytes())
		if err != nil {
			t.Fatalf("re-encoded file does not parse: %v", err)
		}
		checkConsistent(t, again, buf.Bytes())
		if !slices.Equal(again.Keys(), file.Keys()) {
			t.Fatalf("keys changed: %v → %v", file.Keys(), again.Keys())
		}
		for _, k := range file.Keys() {
			a, _ := file.Value(k)
			b, _ := again.Value(k)
			if !sameValue(a, b) {
				t.Fatalf("%q changed: %v → %v", k, a, b)
			}
		}
		ta, tb := file.Tensors(), again.Tensors()
		for i := range ta {
			x, y := ta[i], tb[i]
			if x.Name != y.Name || x.Type != y.Type || !slices.Equal(x.Dims, y.Dims) || x.Size != y.Size ||
				!bytes.Equal(file.Data(x), again.Data(y)) {
				t.Fatalf("tensor %d changed: %+v → %+v", i, x, y)
			}
		}
	})
}

// checkConsistent asserts the invariants of a successfully parsed file.
func checkConsistent(t *testing.T, f *File, in []byte) {
	t.Helper()
	if f.Version != 2 && f.Version != 3 {
		t.Fatalf("version %d", f.Version)
	}
	a := uint64(f.Alignment)
	if a == 0 || a&(a-1) != 0 || uint64(f.DataOffset())%a != 0 {
		t.Fatalf("alignment %d, data offset %d", a, f.DataOffset())
	}
	ts := f.Tensors()
	if len(ts) > 0 && f.DataOffset() > int64(len(in)) {
		t.Fatalf("data offset %d past the %d-byte input", f.DataOffset(), len(in))
	}
	type span struct{ lo, hi uint64 }
	var spans []span
	for _, ti := range ts {
		d := f.Data(ti)
		if uint64(len(d)) != ti.Size || ti.Size == 0 {
			t.Fatalf("%q: Data has %d bytes, Size %d", ti.Name, len(d), ti.Size)
		}
		lo := uint64(f.DataOffset()) + ti.Offset
		hi := lo + ti.Size
		if hi > uint64(len(in)) || lo < uint64(f.DataOffset()) || ti.Offset%a != 0 {
			t.Fatalf("%q: [%d, %d) outside the %d-byte input or misaligned", ti.Name, lo, hi, len(in))
		}
		if &d[0] != &in[lo] {
			t.Fatalf("%q: Data is not the input's bytes at %d", ti.Name, lo)
		}
		if len(ti.Dims) < 1 || len(ti.Dims) > MaxDims || !ti.Type.Valid() || ti.Dims[0]%uint64(ti.Type.BlockSize()) != 0 {
			t.Fatalf("%q: dims %v type %v", ti.Name, ti.Dims, ti.Type)
		}
		if got, ok := f.Tensor(ti.Name); !ok || got.Offset != ti.Offset {
			t.Fatalf("Tensor(%q) = %+v, %v", ti.Name, got, ok)
		}
		spans = append(spans, span{lo, hi})
	}
	slices.SortFunc(spans, func(x, y span) int { return cmp.Compare(x.lo, y.lo) })
	for i := 1; i < len(spans); i++ {
		if spans[i].lo < spans[i-1].hi {
			t.Fatalf("tensor data ranges overlap: %v and %v", spans[i-1], spans[i])
		}
	}
	if len(f.Keys()) != len(f.keyIdx) {
		t.Fatal("duplicate keys accepted")
	}
}

func TestFuzzSeedsAreValidFiles(t *testing.T) {
	for i, s := range fuzzSeeds(t) {
		f, err := Parse(s)
		if err != nil {
			t.Fatalf("seed %d: %v", i, err)
		}
		checkConsistent(t, f, s)
	}
}
