package gguf

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/blendrag/blendrag/kernels"
)

// sameValue compares two Values by type and encoding (so NaNs with equal bits
// compare equal).
func sameValue(a, b Value) bool {
	return a.typ == b.typ && bytes.Equal(appendValue(nil, a), appendValue(nil, b)) && (a.typ != TypeArray || a.elem == b.elem)
}

// everyValue has at least one value of every type, including edge values,
// empty arrays and nested arrays.
var everyValue = []struct {
	key string
	val Value
}{
	{"u8.max", Uint8(math.MaxUint8)},
	{"u8.zero", Uint8(0)},
	{"i8.min", Int8(math.MinInt8)},
	{"u16.max", Uint16(math.MaxUint16)},
	{"i16.min", Int16(math.MinInt16)},
	{"u32.max", Uint32(math.MaxUint32)},
	{"i32.min", Int32(math.MinInt32)},
	{"i32.neg", Int32(-7)},
	{"u64.max", Uint64(math.MaxUint64)},
	{"i64.min", Int64(math.MinInt64)},
	{"i64.max", Int64(math.MaxInt64)},
	{"f32.eps", Float32(1e-5)},
	{"f32.negzero", Float32(float32(math.Copysign(0, -1)))},
	{"f32.nan", Float32(math.Float32frombits(0x7fc00123))},
	{"f32.inf", Float32(float32(math.Inf(-1)))},
	{"f64.pi", Float64(math.Pi)},
	{"f64.nan", Float64(math.Float64frombits(0x7ff8000000000abc))},
	{"bool.true", Bool(true)},
	{"bool.false", Bool(false)},
	{"str", String("llama")},
	{"str.empty", String("")},
	{"str.unicode", String("Ġhello\nwörld\x00✓")},
	{"arr.u8", Uint8s([]uint8{0, 1, 255})},
	{"arr.i8", Int8s([]int8{-128, 0, 127})},
	{"arr.u16", Uint16s([]uint16{0, 65535})},
	{"arr.i16", Int16s([]int16{-32768, 32767})},
	{"arr.u32", Uint32s([]uint32{0, 1 << 31, math.MaxUint32})},
	{"arr.i32", Int32s([]int32{-1, 0, 1, math.MaxInt32})},
	{"arr.u64", Uint64s([]uint64{0, math.MaxUint64})},
	{"arr.i64", Int64s([]int64{math.MinInt64, math.MaxInt64})},
	{"arr.f32", Float32s([]float32{0, -1.5, float32(math.Inf(1))})},
	{"arr.f64", Float64s([]float64{math.SmallestNonzeroFloat64, -2})},
	{"arr.bool", Bools([]bool{true, false, true})},
	{"arr.str", Strings([]string{"Ġa", "", "b c", "\x00"})},
	{"arr.str.empty", Strings(nil)},
	{"arr.i32.empty", Int32s(nil)},
	{"arr.arr", Arrays(Int32s([]int32{1, 2}), Strings([]string{"x"}), Arrays(Bools([]bool{true})), Float32s(nil))},
	{"arr.arr.empty", Arrays()},
}

func TestRoundTripPreservesEveryValueType(t *testing.T) {
	var w Writer
	for _, c := range everyValue {
		must(t, w.AddKV(c.key, c.val))
	}
	f, err := Parse(encode(t, &w))
	if err != nil {
		t.Fatal(err)
	}
	if f.Version != 3 || f.Alignment != DefaultAlignment {
		t.Errorf("Version %d Alignment %d, want 3 and %d", f.Version, f.Alignment, DefaultAlignment)
	}
	var keys []string
	for _, c := range everyValue {
		keys = append(keys, c.key)
	}
	if got := f.Keys(); !slices.Equal(got, keys) {
		t.Errorf("Keys() = %v, want %v", got, keys)
	}
	for _, c := range everyValue {
		got, ok := f.Value(c.key)
		if !ok || !sameValue(got, c.val) {
			t.Errorf("%s: got %v (%s, ok=%v), want %v (%s)", c.key, got, got.Type(), ok, c.val, c.val.Type())
		}
	}
	if len(f.Tensors()) != 0 || len(f.DataSection()) != 0 {
		t.Errorf("file without tensors has %d tensors, %d data bytes", len(f.Tensors()), len(f.DataSection()))
	}
}

func TestRoundTripPreservesTensorsAtEveryAlignment(t *testing.T) {
	cases := []struct {
		typ  kernels.DType
		dims []uint64
	}{
		{kernels.F32, []uint64{3}},
		{kernels.F16, []uint64{5, 2}},
		{kernels.BF16, []uint64{1, 1, 1, 7}},
		{kernels.Q4_0, []uint64{64, 3}},
		{kernels.Q4_1, []uint64{32, 2, 2}},
		{kernels.Q5_0, []uint64{32}},
		{kernels.Q5_1, []uint64{96, 1}},
		{kernels.Q8_0, []uint64{32, 5}},
		{kernels.Q8_1, []uint64{32}},
		{kernels.Q4_K, []uint64{256, 2}},
		{kernels.Q5_K, []uint64{512}},
		{kernels.Q6_K, []uint64{256, 1, 3}},
		{kernels.Q8_K, []uint64{256}},
	}
	for _, align := range []uint32{0, 1, 8, 64, 4096} {
		var w Writer
		must(t, w.AddKV("general.architecture", String("test")))
		if align != 0 {
			must(t, w.AddKV(AlignmentKey, Uint32(align)))
		}
		var want []TensorInfo
		var datas [][]byte
		for i, c := range cases {
			name := "t." + c.typ.String()
			data := tensorBytes(t, uint64(i), c.typ, c.dims)
			must(t, w.AddTensor(name, c.typ, c.dims, data))
			want = append(want, TensorInfo{Name: name, Dims: c.dims, Type: c.typ, Size: uint64(len(data))})
			datas = append(datas, data)
		}
		file := encode(t, &w)
		f, err := Parse(file)
		if err != nil {
			t.Fatalf("align %d: %v", align, err)
		}
		a := uint64(align)
		if a == 0 {
			a = DefaultAlignment
		}
		if uint64(f.Alignment) != a || uint64(f.DataOffset())%a != 0 {
			t.Errorf("align %d: Alignment %d, DataOffset %d", align, f.Alignment, f.DataOffset())
		}
		got := f.Tensors()
		if len(got) != len(want) {
			t.Fatalf("align %d: %d tensors, want %d", align, len(got), len(want))
		}
		for i, g := range got {
			w := want[i]
			if g.Name != w.Name || !slices.Equal(g.Dims, w.Dims) || g.Type != w.Type || g.Size != w.Size || g.Offset%a != 0 {
				t.Errorf("align %d: tensor %d = %+v, want %+v at a multiple of %d", align, i, g, w, a)
			}
			if !bytes.Equal(f.Data(g), datas[i]) {
				t.Errorf("align %d: %s: data differs", align, g.Name)
			}
			if int64(g.Offset)+f.DataOffset()+int64(g.Size) > int64(len(file)) {
				t.Errorf("align %d: %s past end", align, g.Name)
			}
			n, _, _ := tensorSize(g.Type, g.Dims)
			if g.Elements() != n {
				t.Errorf("%s: Elements %d, want %d", g.Name, g.Elements(), n)
			}
			byName, ok := f.Tensor(g.Name)
			if !ok || !reflect.DeepEqual(byName, g) {
				t.Errorf("Tensor(%q) = %+v, %v; want %+v", g.Name, byName, ok, g)
			}
		}
		// Rewriting what was parsed reproduces the file byte for byte.
		if re := rewrite(t, f); !bytes.Equal(re, file) {
			t.Errorf("align %d: Parse → Writer does not reproduce the file", align)
		}
	}
}

// rewrite re-encodes a parsed File with a Writer.
func rewrite(t testing.TB, f *File) []byte {
	t.Helper()
	var w Writer
	for _, k := range f.Keys() {
		v, _ := f.Value(k)
		must(t, w.AddKV(k, v))
	}
	for _, ti := range f.Tensors() {
		must(t, w.AddTensor(ti.Name, ti.Type, ti.Dims, f.Data(ti)))
	}
	return encode(t, &w)
}

func TestWriterOutputIsDeterministic(t *testing.T) {
	a, b := smallFile(t), smallFile(t)
	if !bytes.Equal(a, b) {
		t.Fatal("two identical Writers produced different bytes")
	}
	var w Writer
	must(t, w.AddKV("k", Uint8(1)))
	if x, y := encode(t, &w), encode(t, &w); !bytes.Equal(x, y) {
		t.Fatal("WriteTo twice produced different bytes")
	}
}

func TestAccessorsConvertOnlyCompatibleTypes(t *testing.T) {
	var w Writer
	for _, c := range everyValue {
		must(t, w.AddKV(c.key, c.val))
	}
	f, err := Parse(encode(t, &w))
	if err != nil {
		t.Fatal(err)
	}
	type res struct {
		v  any
		ok bool
	}
	r := func(v any, ok bool) res { return res{v, ok} }
	cases := []struct {
		name string
		got  res
		want res
	}{
		{"Uint(u32.max)", r(f.Uint("u32.max")), res{uint64(math.MaxUint32), true}},
		{"Uint(u64.max)", r(f.Uint("u64.max")), res{uint64(math.MaxUint64), true}},
		{"Uint(i64.max)", r(f.Uint("i64.max")), res{uint64(math.MaxInt64), true}},
		{"Uint(i32.neg) rejects negative", r(f.Uint("i32.neg")), res{uint64(0), false}},
		{"Uint(f32.eps) rejects float", r(f.Uint("f32.eps")), res{uint64(0), false}},
		{"Uint(missing)", r(f.Uint("missing")), res{uint64(0), false}},
		{"Int(i8.min)", r(f.Int("i8.min")), res{int64(math.MinInt8), true}},
		{"Int(u16.max)", r(f.Int("u16.max")), res{int64(math.MaxUint16), true}},
		{"Int(u64.max) rejects overflow", r(f.Int("u64.max")), res{int64(0), false}},
		{"Int(str)", r(f.Int("str")), res{int64(0), false}},
		{"Float(f32.eps) exact", r(f.Float("f32.eps")), res{float64(float32(1e-5)), true}},
		{"Float(f64.pi)", r(f.Float("f64.pi")), res{math.Pi, true}},
		{"Float(u8.max) rejects int", r(f.Float("u8.max")), res{float64(0), false}},
		{"Bool(bool.true)", r(f.Bool("bool.true")), res{true, true}},
		{"Bool(u8.zero) rejects int", r(f.Bool("u8.zero")), res{false, false}},
		{"String(str)", r(f.String("str")), res{"llama", true}},
		{"String(arr.str)", r(f.String("arr.str")), res{"", false}},
		{"Strings(arr.str)", r(f.Strings("arr.str")), res{[]string{"Ġa", "", "b c", "\x00"}, true}},
		{"Strings(arr.str.empty)", r(f.Strings("arr.str.empty")), res{[]string{}, true}},
		{"Strings(str) rejects scalar", r(f.Strings("str")), res{[]string(nil), false}},
		{"Strings(arr.i32)", r(f.Strings("arr.i32")), res{[]string(nil), false}},
		{"Ints(arr.i32)", r(f.Ints("arr.i32")), res{[]int64{-1, 0, 1, math.MaxInt32}, true}},
		{"Ints(arr.u32)", r(f.Ints("arr.u32")), res{[]int64{0, 1 << 31, math.MaxUint32}, true}},
		{"Ints(arr.u8)", r(f.Ints("arr.u8")), res{[]int64{0, 1, 255}, true}},
		{"Ints(arr.i16)", r(f.Ints("arr.i16")), res{[]int64{-32768, 32767}, true}},
		{"Ints(arr.u64) rejects overflow", r(f.Ints("arr.u64")), res{[]int64(nil), false}},
		{"Ints(arr.f32) rejects floats", r(f.Ints("arr.f32")), res{[]int64(nil), false}},
		{"Ints(i32.neg) rejects scalar", r(f.Ints("i32.neg")), res{[]int64(nil), false}},
		{"Floats(arr.f32)", r(f.Floats("arr.f32")), res{[]float64{0, -1.5, math.Inf(1)}, true}},
		{"Floats(arr.f64)", r(f.Floats("arr.f64")), res{[]float64{math.SmallestNonzeroFloat64, -2}, true}},
		{"Floats(arr.i32) rejects ints", r(f.Floats("arr.i32")), res{[]float64(nil), false}},
	}
	for _, c := range cases {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.name, c.got, c.want)
		}
	}
	// Value-level accessors not reachable through File.
	v, _ := f.Value("arr.i8")
	if u, ok := v.AsUints(); ok {
		t.Errorf("AsUints of a negative int8 array = %v, want ok=false", u)
	}
	v, _ = f.Value("arr.u16")
	if u, ok := v.AsUints(); !ok || !slices.Equal(u, []uint64{0, 65535}) {
		t.Errorf("AsUints(arr.u16) = %v, %v", u, ok)
	}
	v, _ = f.Value("arr.bool")
	if b, ok := v.AsBools(); !ok || !slices.Equal(b, []bool{true, false, true}) || v.Len() != 3 || v.ElemType() != TypeBool {
		t.Errorf("AsBools(arr.bool) = %v, %v", b, ok)
	}
	v, _ = f.Value("arr.arr")
	elems, ok := v.AsArray()
	if !ok || len(elems) != 4 || elems[1].ElemType() != TypeString || elems[2].Len() != 1 {
		t.Errorf("AsArray(arr.arr) = %v, %v", elems, ok)
	}
	// Returned slices are copies: modifying one does not change the File.
	s, _ := f.Strings("arr.str")
	s[0] = "changed"
	if s2, _ := f.Strings("arr.str"); s2[0] != "Ġa" {
		t.Error("Strings returned a slice shared with the File")
	}
	if got := v.String(); !strings.HasPrefix(got, "[array×4:") {
		t.Errorf("String() of an array of arrays = %q", got)
	}
}

func TestWriterRejectsInvalidInput(t *testing.T) {
	data := tensorBytes(t, 1, kernels.Q4_0, []uint64{32})
	cases := []struct {
		name string
		add  func(w *Writer) error
		want string
	}{
		{"duplicate key", func(w *Writer) error { w.AddKV("k", Uint8(1)); return w.AddKV("k", Uint8(2)) }, `duplicate metadata key "k"`},
		{"alignment not uint32", func(w *Writer) error { return w.AddKV(AlignmentKey, Uint64(32)) }, "power of two"},
		{"alignment not power of two", func(w *Writer) error { return w.AddKV(AlignmentKey, Uint32(48)) }, "power of two"},
		{"alignment zero", func(w *Writer) error { return w.AddKV(AlignmentKey, Uint32(0)) }, "power of two"},
		{"array of arrays holding a scalar", func(w *Writer) error { return w.AddKV("a", Arrays(Int32s(nil), Uint8(1))) }, "element 1 of an array of arrays is a uint8"},
		{"arrays nested too deep", func(w *Writer) error {
			return w.AddKV("a", Arrays(Arrays(Arrays(Arrays(Int32s(nil))))))
		}, "nested deeper than 4"},
		{"duplicate tensor", func(w *Writer) error {
			w.AddTensor("x", kernels.Q4_0, []uint64{32}, data)
			return w.AddTensor("x", kernels.Q4_0, []uint64{32}, data)
		}, `duplicate tensor name "x"`},
		{"empty name", func(w *Writer) error { return w.AddTensor("", kernels.Q4_0, []uint64{32}, data) }, "1 to 63 bytes"},
		{"long name", func(w *Writer) error { return w.AddTensor(strings.Repeat("n", 64), kernels.Q4_0, []uint64{32}, data) }, "1 to 63 bytes"},
		{"wrong data size", func(w *Writer) error { return w.AddTensor("x", kernels.Q4_0, []uint64{32}, data[1:]) }, "17 bytes of data, want 18"},
		{"unknown type", func(w *Writer) error { return w.AddTensor("x", kernels.DType(10), []uint64{256}, data) }, "Q2_K is not supported"},
		{"no dims", func(w *Writer) error { return w.AddTensor("x", kernels.F32, nil, nil) }, "0 dimensions"},
		{"five dims", func(w *Writer) error { return w.AddTensor("x", kernels.F32, []uint64{1, 1, 1, 1, 1}, data[:4]) }, "5 dimensions"},
		{"zero dim", func(w *Writer) error { return w.AddTensor("x", kernels.F32, []uint64{4, 0}, nil) }, "dimension 1 is 0"},
		{"partial block", func(w *Writer) error { return w.AddTensor("x", kernels.Q4_0, []uint64{16, 2}, data) }, "not a multiple of the Q4_0 block size 32"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var w Writer
			err := c.add(&w)
			if err == nil || !strings.Contains(err.Error(), c.want) || !isSentinel(err) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
}

func TestOpenMapsWhatParseReads(t *testing.T) {
	file := smallFile(t)
	path := filepath.Join(t.TempDir(), "small.gguf")
	must(t, os.WriteFile(path, file, 0o644))
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse(file)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f.Tensors(), p.Tensors()) || !slices.Equal(f.Keys(), p.Keys()) {
		t.Error("Open and Parse disagree")
	}
	for _, ti := range f.Tensors() {
		if !bytes.Equal(f.Data(ti), p.Data(ti)) {
			t.Errorf("%s: mapped data differs", ti.Name)
		}
	}
	must(t, f.Close())
	must(t, f.Close()) // idempotent
	if d := f.Data(f.Tensors()[0]); d != nil {
		t.Errorf("Data after Close = %d bytes, want nil", len(d))
	}
	if s, ok := f.String("general.architecture"); !ok || s != "llama" {
		t.Errorf("metadata after Close: %q, %v", s, ok)
	}
}

func TestOpenReportsBadFiles(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.gguf")
	must(t, os.WriteFile(empty, nil, 0o644))
	bad := filepath.Join(dir, "bad.gguf")
	must(t, os.WriteFile(bad, []byte("GGML\x03\x00\x00\x00"), 0o644))
	cases := []struct {
		path string
		is   error
	}{
		{filepath.Join(dir, "missing.gguf"), os.ErrNotExist},
		{empty, ErrMalformed},
		{bad, ErrNotGGUF},
	}
	for _, c := range cases {
		f, err := Open(c.path)
		if f != nil || !errors.Is(err, c.is) || !strings.Contains(err.Error(), filepath.Base(c.path)) {
			t.Errorf("Open(%s) = %v, %v; want an error naming the file and wrapping %v", c.path, f, err, c.is)
		}
	}
	if _, err := Open(dir); err == nil {
		t.Error("Open(directory) succeeded")
	}
}
