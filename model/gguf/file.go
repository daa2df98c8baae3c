package gguf

import (
	"slices"

	"github.com/blendrag/blendrag/kernels"
)

// MaxDims is the most dimensions a tensor may have (GGML_MAX_DIMS).
const MaxDims = 4

// MaxNameLen is the longest tensor name GGML accepts, in bytes
// (GGML_MAX_NAME − 1 for the terminating NUL).
const MaxNameLen = 63

// DefaultAlignment is the data alignment of a file without a
// "general.alignment" key.
const DefaultAlignment = 32

// AlignmentKey is the metadata key that overrides DefaultAlignment. Its
// value must be a uint32 power of two.
const AlignmentKey = "general.alignment"

// TensorInfo describes one tensor of a File.
type TensorInfo struct {
	// Name is the tensor's name, e.g. "blk.0.attn_q.weight" (at most
	// MaxNameLen bytes, unique within the file).
	Name string
	// Dims are the extents in GGML order: Dims[0] is the length of one
	// contiguous row (a multiple of Type's block size), Dims[1] the number of
	// rows, and so on. 1 to MaxDims entries, each ≥ 1.
	Dims []uint64
	// Type is the element type, always one with a known block layout
	// (Type.Valid()); whether every kernel supports it is kernels' call.
	Type kernels.DType
	// Offset is the byte offset of the tensor's data from the start of the
	// data section, a multiple of the file's Alignment.
	Offset uint64
	// Size is the tensor's data size in bytes: Elements() / block size ×
	// block bytes.
	Size uint64
}

// Elements returns the number of elements, the product of Dims (at most
// 2^63−1 for a TensorInfo from a File).
func (t TensorInfo) Elements() uint64 {
	n := uint64(1)
	for _, d := range t.Dims {
		n *= d
	}
	return n
}

// kv is one metadata pair.
type kv struct {
	key string
	val Value
}

// File is a parsed GGUF file: its metadata, its tensor directory, and the
// bytes holding the tensor data (memory-mapped when it came from Open). Every
// method is safe for concurrent use, except Close, which must not run
// concurrently with any other use of the File or of slices Data returned.
type File struct {
	// Version is the file's format version, 2 or 3.
	Version uint32
	// Alignment is the data alignment in bytes: the value of
	// "general.alignment", or DefaultAlignment.
	Alignment uint32

	data    []byte // the whole file
	dataOff uint64 // start of the data section within data (may equal len(data))
	kvs     []kv
	keyIdx  map[string]int
	tensors []TensorInfo
	nameIdx map[string]int
	unmap   func() error // releases data; nil for Parse
}

// Keys returns the metadata keys in file order.
func (f *File) Keys() []string {
	out := make([]string, len(f.kvs))
	for i, p := range f.kvs {
		out[i] = p.key
	}
	return out
}

// Value returns the metadata value stored under key; ok is false when the
// key is absent.
func (f *File) Value(key string) (Value, bool) {
	i, ok := f.keyIdx[key]
	if !ok {
		return Value{}, false
	}
	return f.kvs[i].val, true
}

// String returns the string stored under key; ok is false when the key is
// absent or not a string.
func (f *File) String(key string) (string, bool) {
	v, _ := f.Value(key)
	return v.AsString()
}

// Uint returns the integer stored under key, of any integer type, as a
// uint64; ok is false when the key is absent, not an integer, or negative.
func (f *File) Uint(key string) (uint64, bool) {
	v, ok := f.Value(key)
	if !ok {
		return 0, false
	}
	return v.AsUint()
}

// Int returns the integer stored under key, of any integer type, as an
// int64; ok is false when the key is absent, not an integer, or an unsigned
// value above math.MaxInt64.
func (f *File) Int(key string) (int64, bool) {
	v, ok := f.Value(key)
	if !ok {
		return 0, false
	}
	return v.AsInt()
}

// Float returns the float32 or float64 stored under key as a float64; ok is
// false when the key is absent or of another type.
func (f *File) Float(key string) (float64, bool) {
	v, _ := f.Value(key)
	return v.AsFloat()
}

// Bool returns the bool stored under key; ok is false when the key is absent
// or of another type.
func (f *File) Bool(key string) (b, ok bool) {
	v, _ := f.Value(key)
	return v.AsBool()
}

// Strings returns a copy of the array of strings stored under key (the
// strings themselves are shared, immutable); ok is false when the key is
// absent or of another type.
func (f *File) Strings(key string) ([]string, bool) {
	v, _ := f.Value(key)
	return v.AsStrings()
}

// Ints returns the array of any integer type stored under key as int64s; ok
// is false when the key is absent, of another type, or holds an unsigned
// element above math.MaxInt64.
func (f *File) Ints(key string) ([]int64, bool) {
	v, _ := f.Value(key)
	return v.AsInts()
}

// Floats returns the array of float32 or float64 stored under key as
// float64s; ok is false when the key is absent or of another type.
func (f *File) Floats(key string) ([]float64, bool) {
	v, _ := f.Value(key)
	return v.AsFloats()
}

// Tensors returns the tensor directory in file order. The result is a copy
// the caller may modify.
func (f *File) Tensors() []TensorInfo {
	out := make([]TensorInfo, len(f.tensors))
	for i, t := range f.tensors {
		t.Dims = slices.Clone(t.Dims)
		out[i] = t
	}
	return out
}

// Tensor returns the directory entry of the named tensor; ok is false when
// the file has no such tensor.
func (f *File) Tensor(name string) (TensorInfo, bool) {
	i, ok := f.nameIdx[name]
	if !ok {
		return TensorInfo{}, false
	}
	t := f.tensors[i]
	t.Dims = slices.Clone(t.Dims)
	return t, true
}

// Data returns the bytes of tensor t, t.Size of them, without copying: for a
// File from Open they are the read-only mapping, and writing to them crashes
// the process; they are valid until Close. t should come from this File's
// directory; Data returns nil when t's range does not lie inside the data
// section (never the case for entries of this File) or after Close.
func (f *File) Data(t TensorInfo) []byte {
	sec := f.DataSection()
	if t.Offset > uint64(len(sec)) || t.Size > uint64(len(sec))-t.Offset {
		return nil
	}
	lo, hi := int(t.Offset), int(t.Offset+t.Size)
	return sec[lo:hi:hi]
}

// DataSection returns the whole tensor data section (from the aligned end of
// the tensor directory to the end of the file), without copying, under the
// same rules as Data. It is empty for a file without tensors.
func (f *File) DataSection() []byte {
	if f.dataOff >= uint64(len(f.data)) {
		return nil
	}
	return f.data[f.dataOff:len(f.data):len(f.data)]
}

// DataOffset returns the byte offset of the data section within the file.
// A tensor's bytes start at DataOffset() + Offset.
func (f *File) DataOffset() int64 { return int64(f.dataOff) }

// Close releases the file's memory mapping (a no-op for a File from Parse,
// and on a second call). Afterwards Data and DataSection return nil, and
// slices they returned earlier must not be touched; metadata stays readable.
func (f *File) Close() error {
	f.data = nil
	f.dataOff = 0
	if f.unmap == nil {
		return nil
	}
	u := f.unmap
	f.unmap = nil
	return u()
}
