// Package safetensors reads the safetensors tensor file format: an 8-byte
// little-endian header length N, N bytes of JSON header, then one byte
// buffer holding every tensor's data.
//
// The header maps each tensor name to {"dtype", "shape", "data_offsets":
// [begin, end]} (offsets relative to the start of the byte buffer), and may
// hold a "__metadata__" object of string values. Parse checks the whole
// header before returning: known dtypes, non-negative shapes whose element
// count times the dtype size equals end − begin, offsets inside the buffer,
// and tensors that neither overlap nor leave holes (the format requires the
// buffer to be fully indexed). Hostile or truncated input yields an error,
// never a panic.
//
// Format: https://github.com/huggingface/safetensors (README, "Format").
package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"os"
	"slices"
	"sort"

	"github.com/blendrag/blendrag/kernels"
)

// ErrFormat is wrapped by every error about a malformed file.
var ErrFormat = errors.New("safetensors: malformed file")

// MaxHeaderBytes bounds the JSON header, as the reference implementation
// does (100 MB), so a hostile length cannot make Parse allocate without
// bound.
const MaxHeaderBytes = 100 << 20

// DType is a safetensors element type, spelled as in the header ("F32").
type DType string

// The element types of the format.
const (
	Bool    DType = "BOOL"
	U8      DType = "U8"
	I8      DType = "I8"
	F8E5M2  DType = "F8_E5M2"
	F8E4M3  DType = "F8_E4M3"
	I16     DType = "I16"
	U16     DType = "U16"
	F16     DType = "F16"
	BF16    DType = "BF16"
	I32     DType = "I32"
	U32     DType = "U32"
	F32     DType = "F32"
	F64     DType = "F64"
	I64     DType = "I64"
	U64     DType = "U64"
	unknown DType = ""
)

// Size returns the bytes per element of t, or 0 if t is not a known type.
func (t DType) Size() int {
	switch t {
	case Bool, U8, I8, F8E5M2, F8E4M3:
		return 1
	case I16, U16, F16, BF16:
		return 2
	case I32, U32, F32:
		return 4
	case F64, I64, U64:
		return 8
	}
	return 0
}

// Tensor is one tensor of a File. Data aliases the File's buffer: it must
// not be modified, and it is valid as long as the File is.
type Tensor struct {
	Name  string
	DType DType
	Shape []int  // row-major; empty for a scalar
	Data  []byte // little-endian elements, len = NumElements()·DType.Size()
}

// NumElements returns the product of the shape (1 for a scalar).
func (t Tensor) NumElements() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Float32s converts the tensor's elements to a new []float32. It supports
// F32, F16, BF16 and F64 (rounded to nearest); other types return an error.
func (t Tensor) Float32s() ([]float32, error) {
	n := t.NumElements()
	out := make([]float32, n)
	d := t.Data
	switch t.DType {
	case F32:
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(d[4*i:]))
		}
	case F16:
		for i := range out {
			out[i] = kernels.F16ToF32(binary.LittleEndian.Uint16(d[2*i:]))
		}
	case BF16:
		for i := range out {
			out[i] = kernels.BF16ToF32(binary.LittleEndian.Uint16(d[2*i:]))
		}
	case F64:
		for i := range out {
			out[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(d[8*i:])))
		}
	default:
		return nil, fmt.Errorf("tensor %q: cannot convert %s to float32", t.Name, t.DType)
	}
	return out, nil
}

// File is a parsed safetensors file.
type File struct {
	// Metadata is the header's "__metadata__" object (nil if absent).
	Metadata map[string]string
	tensors  map[string]Tensor
	names    []string // sorted
}

// Open reads the file at path in one read and parses it.
func Open(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	f, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// Parse parses a whole safetensors file held in b. The returned tensors
// alias b, which must not be modified afterwards.
func Parse(b []byte) (*File, error) {
	if len(b) < 8 {
		return nil, fmt.Errorf("%d bytes, shorter than the 8-byte header length: %w", len(b), ErrFormat)
	}
	n := binary.LittleEndian.Uint64(b)
	if n > MaxHeaderBytes || n > uint64(len(b)-8) {
		return nil, fmt.Errorf("header length %d exceeds the file (%d bytes) or the %d-byte limit: %w", n, len(b), MaxHeaderBytes, ErrFormat)
	}
	header := b[8 : 8+n]
	buf := b[8+n:]
	if len(bytes.TrimSpace(header)) == 0 || bytes.TrimSpace(header)[0] != '{' {
		return nil, fmt.Errorf("header is not a JSON object: %w", ErrFormat)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(header, &raw); err != nil {
		return nil, fmt.Errorf("header JSON: %v: %w", err, ErrFormat)
	}
	f := &File{tensors: make(map[string]Tensor, len(raw))}
	type span struct {
		begin, end uint64
		name       string
	}
	spans := make([]span, 0, len(raw))
	for name, msg := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(msg, &f.Metadata); err != nil {
				return nil, fmt.Errorf("__metadata__ must map strings to strings: %v: %w", err, ErrFormat)
			}
			continue
		}
		var e struct {
			DType   *DType    `json:"dtype"`
			Shape   *[]uint64 `json:"shape"`
			Offsets *[]uint64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(msg, &e); err != nil {
			return nil, fmt.Errorf("tensor %q: %v: %w", name, err, ErrFormat)
		}
		if e.DType == nil || e.Shape == nil || e.Offsets == nil {
			return nil, fmt.Errorf("tensor %q: dtype, shape and data_offsets are required: %w", name, ErrFormat)
		}
		size := e.DType.Size()
		if size == 0 {
			return nil, fmt.Errorf("tensor %q: unknown dtype %q: %w", name, *e.DType, ErrFormat)
		}
		if len(*e.Offsets) != 2 {
			return nil, fmt.Errorf("tensor %q: data_offsets must be [begin, end]: %w", name, ErrFormat)
		}
		begin, end := (*e.Offsets)[0], (*e.Offsets)[1]
		if begin > end || end > uint64(len(buf)) {
			return nil, fmt.Errorf("tensor %q: data_offsets [%d, %d] outside the %d-byte buffer: %w", name, begin, end, len(buf), ErrFormat)
		}
		elems, ok := product(*e.Shape, uint64(len(buf)))
		if !ok || elems*uint64(size) != end-begin {
			return nil, fmt.Errorf("tensor %q: shape %v of %s needs a different size than its %d bytes: %w", name, *e.Shape, *e.DType, end-begin, ErrFormat)
		}
		shape := make([]int, len(*e.Shape))
		for i, d := range *e.Shape {
			shape[i] = int(d) // d ≤ max(len(buf), MaxInt32) (checked by product)
		}
		f.tensors[name] = Tensor{Name: name, DType: *e.DType, Shape: shape, Data: buf[begin:end:end]}
		spans = append(spans, span{begin, end, name})
	}
	sort.Slice(spans, func(i, j int) bool {
		if spans[i].begin != spans[j].begin {
			return spans[i].begin < spans[j].begin
		}
		return spans[i].end < spans[j].end
	})
	var pos uint64
	for _, s := range spans {
		if s.begin != pos {
			return nil, fmt.Errorf("tensor %q starts at byte %d, expected %d (overlap or hole): %w", s.name, s.begin, pos, ErrFormat)
		}
		pos = s.end
	}
	if pos != uint64(len(buf)) {
		return nil, fmt.Errorf("tensors cover %d of the %d buffer bytes: %w", pos, len(buf), ErrFormat)
	}
	f.names = make([]string, 0, len(f.tensors))
	for name := range f.tensors {
		f.names = append(f.names, name)
	}
	slices.Sort(f.names)
	return f, nil
}

// product multiplies dims, reporting false if the shape can never fit a
// buffer of limit elements: a partial product above limit or, for an empty
// tensor (a zero dimension), a dimension above math.MaxInt32.
func product(dims []uint64, limit uint64) (uint64, bool) {
	if slices.Contains(dims, 0) {
		for _, d := range dims {
			if d > math.MaxInt32 {
				return 0, false
			}
		}
		return 0, true
	}
	p := uint64(1)
	for _, d := range dims {
		hi, lo := bits.Mul64(p, d)
		if hi != 0 || lo > limit {
			return 0, false
		}
		p = lo
	}
	return p, true
}

// Names returns the tensor names in sorted order.
func (f *File) Names() []string { return slices.Clone(f.names) }

// Tensor returns the named tensor and whether it exists.
func (f *File) Tensor(name string) (Tensor, bool) {
	t, ok := f.tensors[name]
	return t, ok
}
