package gguf

import (
	"errors"
	"math"
	"runtime"
	"strings"
	"testing"

	"github.com/blendrag/blendrag/kernels"
)

func TestParseAcceptsHandBuiltFile(t *testing.T) {
	// Guards the raw builder the malformed cases below are made with.
	b := rawHeader(3, 1, 1).kvU32("a", 1).tensor("t", kernels.F32, 0, 8).padData(32, 32).b
	f, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := f.Uint("a"); !ok || v != 1 || len(f.Tensors()) != 1 || len(f.Data(f.Tensors()[0])) != 32 {
		t.Fatalf("parsed %v %v %+v", v, ok, f.Tensors())
	}
	if f, err := Parse(rawHeader(2, 0, 0).b); err != nil || f.Version != 2 {
		t.Fatalf("empty v2 file: %v", err)
	}
}

func TestParseRejectsEveryTruncation(t *testing.T) {
	file := smallFile(t)
	f, err := Parse(file)
	if err != nil {
		t.Fatal(err)
	}
	// The last tensor's data ends before the trailing padding: any prefix
	// holding all tensor data is a valid file, any shorter one is not.
	end := uint64(0)
	for _, ti := range f.Tensors() {
		end = max(end, uint64(f.DataOffset())+ti.Offset+ti.Size)
	}
	for n := 0; n < len(file); n++ {
		prefix := file[:n:n] // no spare capacity: reading past n would panic
		g, err := Parse(prefix)
		if uint64(n) < end {
			if err == nil || g != nil || !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse(first %d of %d bytes) = %v, %v; want ErrMalformed", n, len(file), g, err)
			}
		} else if err != nil {
			t.Fatalf("Parse(first %d of %d bytes, all data present): %v", n, len(file), err)
		}
	}
}

func TestParseRejectsMalformedInput(t *testing.T) {
	const str, arr = uint32(TypeString), uint32(TypeArray)
	u32, u64, boolT := uint32(TypeUint32), uint32(TypeUint64), uint32(TypeBool)
	data := func(r *raw, n int) []byte { return r.padData(32, n).b }
	cases := []struct {
		name string
		in   []byte
		is   error
		want string
	}{
		{"empty", nil, ErrMalformed, "truncated: 0 bytes"},
		{"short magic", []byte("GG"), ErrMalformed, "truncated"},
		{"bad magic", []byte("GGML\x03\x00\x00\x00"), ErrNotGGUF, `bad magic "GGML"`},
		{"binary magic", []byte{0, 1, 2}, ErrNotGGUF, `bad magic "\x00\x01\x02"`},
		{"truncated version", []byte("GGUF\x03"), ErrMalformed, "version needs 4 bytes"},
		{"version 1", rawHeader(1, 0, 0).b, ErrUnsupported, "version 1 (32-bit counts) is not supported"},
		{"version 0", rawHeader(0, 0, 0).b, ErrUnsupported, "version 0 is not supported"},
		{"version 4", rawHeader(4, 0, 0).b, ErrUnsupported, "version 4 is not supported"},
		{"big-endian", []byte("GGUF\x00\x00\x00\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"), ErrUnsupported, "big-endian"},
		{"truncated counts", rawHeader(3, 0, 0).b[:20], ErrMalformed, "metadata count needs 8 bytes"},
		{"huge tensor count", rawHeader(3, 1<<62, 0).b, ErrMalformed, "tensor count 4611686018427387904 is impossible"},
		{"max tensor count", rawHeader(3, math.MaxUint64, 0).b, ErrMalformed, "tensor count 18446744073709551615 is impossible"},
		{"huge metadata count", rawHeader(3, 0, math.MaxUint64).bytes(make([]byte, 100)).b, ErrMalformed, "metadata count 18446744073709551615 is impossible: 100 bytes left hold at most 7"},
		{"counts fit alone, not together", rawHeader(3, 1, 3).bytes(make([]byte, 40)).b, ErrMalformed, "1 tensor infos and 3 metadata pairs cannot fit in 40 bytes"},
		{"huge key length", rawHeader(3, 0, 1).u64(1 << 63).bytes(make([]byte, 16)).b, ErrMalformed, "metadata pair 0: key length 9223372036854775808"},
		{"truncated key", rawHeader(3, 0, 1).u64(5).bytes([]byte("abcdefgh")).b, ErrMalformed, "value type needs 4 bytes"},
		{"huge string value", rawHeader(3, 0, 1).str("k").u32(str).u64(1 << 40).bytes(make([]byte, 10)).b, ErrMalformed, `key "k": string length 1099511627776 at offset 37 exceeds the 10 bytes left`},
		{"truncated scalar", rawHeader(3, 0, 1).str("k").u32(u64).u32(7).b, ErrMalformed, `key "k": truncated: uint64 needs 8 bytes`},
		{"unknown value type", rawHeader(3, 0, 1).str("k").u32(13).u64(0).b, ErrMalformed, `key "k": unknown value type 13`},
		{"unknown array element type", rawHeader(3, 0, 1).str("k").u32(arr).u32(99).u64(0).b, ErrMalformed, "unknown array element type 99"},
		{"huge array count", rawHeader(3, 0, 1).str("k").u32(arr).u32(u32).u64(1 << 61).bytes(make([]byte, 16)).b, ErrMalformed, "array of uint32: array count 2305843009213693952"},
		{"array count times size overflows", rawHeader(3, 0, 1).str("k").u32(arr).u32(u64).u64(math.MaxUint64/8 + 1).bytes(make([]byte, 16)).b, ErrMalformed, "is impossible: 16 bytes left hold at most 2"},
		{"huge string in array", rawHeader(3, 0, 1).str("k").u32(arr).u32(str).u64(2).str("a").u64(1 << 50).bytes(make([]byte, 8)).b, ErrMalformed, "element 1: length 1125899906842624"},
		{"string array count beyond bytes", rawHeader(3, 0, 1).str("k").u32(arr).u32(str).u64(3).str("a").str("b").b, ErrMalformed, "array count 3"},
		{"huge nested array count", rawHeader(3, 0, 1).str("k").u32(arr).u32(arr).u64(1).u32(u32).u64(1 << 40).bytes(make([]byte, 8)).b, ErrMalformed, "element 0: array of uint32: array count 1099511627776"},
		{"nested arrays too deep", rawHeader(3, 0, 1).str("k").u32(arr).u32(arr).u64(1).u32(arr).u64(1).u32(arr).u64(1).u32(arr).u64(1).u32(u32).u64(0).b, ErrMalformed, "nested deeper than 4"},
		{"bool not 0 or 1", rawHeader(3, 0, 1).str("k").u32(boolT).u8(2).b, ErrMalformed, "bool byte 2"},
		{"bool array element not 0 or 1", rawHeader(3, 0, 1).str("k").u32(arr).u32(boolT).u64(2).u8(1).u8(9).b, ErrMalformed, "element 1 is 9"},
		{"duplicate key", rawHeader(3, 0, 2).kvU32("a", 1).kvU32("a", 2).b, ErrMalformed, `duplicate metadata key "a"`},
		{"alignment of wrong type", rawHeader(3, 0, 1).str(AlignmentKey).u32(u64).u64(32).b, ErrMalformed, `"general.alignment" is uint64 32; want a uint32 power of two`},
		{"alignment not a power of two", rawHeader(3, 0, 1).kvU32(AlignmentKey, 24).b, ErrMalformed, "uint32 24; want a uint32 power of two"},
		{"alignment zero", rawHeader(3, 0, 1).kvU32(AlignmentKey, 0).b, ErrMalformed, "want a uint32 power of two"},
		{"zero dims", data(rawHeader(3, 1, 0).tensor("t", kernels.F32, 0), 32), ErrMalformed, `tensor "t": 0 dimensions (want 1 to 4)`},
		{"five dims", data(rawHeader(3, 1, 0).tensor("t", kernels.F32, 0, 1, 1, 1, 1, 1), 32), ErrMalformed, "5 dimensions"},
		{"huge dim count", rawHeader(3, 1, 0).str("t").u32(math.MaxUint32).bytes(make([]byte, 64)).b, ErrMalformed, "4294967295 dimensions"},
		{"zero dim", data(rawHeader(3, 1, 0).tensor("t", kernels.F32, 0, 4, 0), 32), ErrMalformed, "dimension 1 is 0"},
		{"dim above int64", data(rawHeader(3, 1, 0).tensor("t", kernels.F32, 0, 1<<63), 32), ErrMalformed, "dimension 0 is 9223372036854775808"},
		{"element count overflows", data(rawHeader(3, 1, 0).tensor("t", kernels.F32, 0, 1<<32, 1<<31), 32), ErrMalformed, "overflow the element count"},
		{"byte size overflows", data(rawHeader(3, 1, 0).tensor("t", kernels.F32, 0, 1<<62), 32), ErrMalformed, "overflow the byte size"},
		{"row not whole blocks", data(rawHeader(3, 1, 0).tensor("t", kernels.Q4_0, 0, 16, 2), 32), ErrMalformed, "row length 16 is not a multiple of the Q4_0 block size 32"},
		{"unsupported type", data(rawHeader(3, 1, 0).tensor("t", kernels.DType(10), 0, 256), 96), ErrUnsupported, `tensor "t": tensor type Q2_K is not supported`},
		{"unknown type", data(rawHeader(3, 1, 0).tensor("t", kernels.DType(77), 0, 256), 96), ErrUnsupported, "tensor type type 77 is not supported"},
		{"misaligned offset", data(rawHeader(3, 1, 0).tensor("t", kernels.F32, 4, 4), 64), ErrMalformed, `tensor "t": data offset 4 is not a multiple of the alignment 32`},
		{"data past end", data(rawHeader(3, 1, 0).tensor("blk.3.attn_q.weight", kernels.F32, 0, 8), 16), ErrMalformed, `tensor "blk.3.attn_q.weight": data [96, 128) past end of file (size 112)`},
		{"offset past end", data(rawHeader(3, 1, 0).tensor("t", kernels.F32, 1<<40, 8), 32), ErrMalformed, "past end of file"},
		{"offset overflows", data(rawHeader(3, 1, 0).tensor("t", kernels.F32, math.MaxUint64&^31, 8), 32), ErrMalformed, "overflows"},
		{"no data section", rawHeader(3, 1, 0).tensor("t", kernels.F32, 0, 1).b, ErrMalformed, "past end of file"},
		{"identical ranges", data(rawHeader(3, 2, 0).tensor("a", kernels.F32, 0, 8).tensor("b", kernels.F32, 0, 8), 64), ErrMalformed, `tensor "b": data [0, 32) overlaps tensor "a"`},
		{"partial overlap", data(rawHeader(3, 2, 0).tensor("a", kernels.F32, 32, 8).tensor("b", kernels.F32, 0, 16), 96), ErrMalformed, `tensor "a": data [32, 64) overlaps tensor "b" at [0, 64)`},
		{"duplicate tensor", data(rawHeader(3, 2, 0).tensor("a", kernels.F32, 0, 8).tensor("a", kernels.F32, 32, 8), 64), ErrMalformed, `duplicate tensor name "a"`},
		{"long tensor name", data(rawHeader(3, 1, 0).tensor(strings.Repeat("x", 64), kernels.F32, 0, 8), 32), ErrMalformed, "64 bytes, longer than 63"},
		{"huge tensor name length", rawHeader(3, 1, 0).u64(math.MaxUint64).bytes(make([]byte, 40)).b, ErrMalformed, "tensor 0: name length 18446744073709551615"},
		{"truncated tensor info", rawHeader(3, 1, 0).str("t").u32(2).u64(4).u64(4).bytes(make([]byte, 3)).b, ErrMalformed, `tensor 0: tensor "t": truncated: type needs 4 bytes`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := c.in[:len(c.in):len(c.in)]
			f, err := Parse(in)
			if err == nil || f != nil {
				t.Fatalf("Parse succeeded: %+v", f)
			}
			if !errors.Is(err, c.is) || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "gguf: ") {
				t.Fatalf("error %q (is %v: %v); want one containing %q", err, c.is, errors.Is(err, c.is), c.want)
			}
		})
	}
}

// TestParseBoundsAllocation checks that a header claiming as many entries as
// the file could possibly hold does not allocate more than a small multiple
// of the file's size before failing.
func TestParseBoundsAllocation(t *testing.T) {
	const n = 1 << 16
	cases := map[string][]byte{
		// n strings of length 0 fit in 8n bytes; the last length is huge.
		"string array": rawHeader(3, 0, 1).str("k").u32(uint32(TypeArray)).u32(uint32(TypeString)).u64(n).bytes(make([]byte, 8*(n-1))).u64(1 << 60).b,
		// n empty nested arrays (12 bytes each), then garbage.
		"nested arrays": func() []byte {
			r := rawHeader(3, 0, 1).str("k").u32(uint32(TypeArray)).u32(uint32(TypeArray)).u64(n)
			for range n - 1 {
				r.u32(uint32(TypeUint8)).u64(0)
			}
			return r.u32(uint32(TypeUint8)).u64(1 << 40).b
		}(),
		// n metadata pairs claimed, bytes for all of them, but the key lengths are huge.
		"metadata pairs": rawHeader(3, 0, n).u64(1 << 62).bytes(make([]byte, 13*n)).b,
	}
	for name, in := range cases {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := Parse(in)
		runtime.ReadMemStats(&after)
		if err == nil {
			t.Fatalf("%s: Parse succeeded", name)
		}
		bytesAlloc := after.TotalAlloc - before.TotalAlloc
		if bytesAlloc > 8*uint64(len(in))+1<<16 {
			t.Errorf("%s: %d bytes allocated for a %d-byte input", name, bytesAlloc, len(in))
		}
		t.Logf("%s: %d bytes in, %d bytes allocated (%v)", name, len(in), bytesAlloc, err)
	}
}
