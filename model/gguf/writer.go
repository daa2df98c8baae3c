package gguf

import (
	"bufio"
	"encoding/binary"
	"io"
	"slices"

	"github.com/blendrag/blendrag/kernels"
)

// Writer builds a GGUF version 3 file: metadata pairs and tensors are added
// in the order they should appear, then WriteTo lays the file out. Tensor
// data is placed in the order added, each tensor at the next multiple of the
// alignment (DefaultAlignment, or the value of an added "general.alignment"
// pair), padded with zero bytes. Every file a Writer produces is accepted by
// Parse, and Parse followed by re-adding everything reproduces it byte for
// byte.
//
// The zero Writer is ready to use. A Writer is not safe for concurrent use.
type Writer struct {
	kvs     []kv
	keys    map[string]bool
	tensors []wtensor
	names   map[string]bool
	align   uint64
}

type wtensor struct {
	info TensorInfo
	data []byte
}

// AddKV appends the metadata pair key = v. It fails (ErrMalformed) on a
// duplicate key, on an array of arrays whose elements are not all arrays or
// that nests more than 4 levels, and on a "general.alignment" value that is
// not a uint32 power of two.
func (w *Writer) AddKV(key string, v Value) error {
	if w.keys[key] {
		return malformed("writer: duplicate metadata key %q", key)
	}
	if err := checkValue(v, 0); err != nil {
		return err.in("writer: key %q", key)
	}
	if key == AlignmentKey {
		a, _ := v.AsUint()
		if v.typ != TypeUint32 || a == 0 || a&(a-1) != 0 {
			return malformed("writer: key %q is %s %s; want a uint32 power of two", key, v.typ, v)
		}
		w.align = a
	}
	if w.keys == nil {
		w.keys = make(map[string]bool)
	}
	w.keys[key] = true
	w.kvs = append(w.kvs, kv{key, v})
	return nil
}

// checkValue verifies what the constructors cannot: the shape of arrays of
// arrays. depth is the number of arrays enclosing v.
func checkValue(v Value, depth int) *formatError {
	if !v.typ.valid() {
		return malformed("invalid value type %d", uint32(v.typ))
	}
	if v.typ != TypeArray {
		return nil
	}
	if depth+1 > maxArrayDepth {
		return malformed("arrays nested deeper than %d", maxArrayDepth)
	}
	if v.elem != TypeArray {
		return nil
	}
	a, _ := v.arr.([]Value)
	for i, e := range a {
		if e.typ != TypeArray {
			return malformed("element %d of an array of arrays is a %s", i, e.typ)
		}
		if err := checkValue(e, depth+1); err != nil {
			return err.in("element %d", i)
		}
	}
	return nil
}

// AddTensor appends a tensor. dims are in GGML order (dims[0] is the row
// length, a multiple of typ's block size); 1 to MaxDims dimensions, each ≥ 1.
// data must hold exactly the tensor's encoded bytes; the Writer keeps the
// slice (no copy), so it must not change before the last WriteTo. It fails
// (ErrMalformed or ErrUnsupported) on a duplicate, empty or over-long name,
// an unsupported type, bad dims, or a data length that does not match.
func (w *Writer) AddTensor(name string, typ kernels.DType, dims []uint64, data []byte) error {
	if name == "" || len(name) > MaxNameLen {
		return malformed("writer: tensor name %q must be 1 to %d bytes", name, MaxNameLen)
	}
	if w.names[name] {
		return malformed("writer: duplicate tensor name %q", name)
	}
	_, size, err := tensorSize(typ, dims)
	if err != nil {
		return err.in("writer: tensor %q", name)
	}
	if uint64(len(data)) != size {
		return malformed("writer: tensor %q: %d bytes of data, want %d for %s %v", name, len(data), size, typeName(typ), dims)
	}
	if w.names == nil {
		w.names = make(map[string]bool)
	}
	w.names[name] = true
	w.tensors = append(w.tensors, wtensor{
		info: TensorInfo{Name: name, Dims: slices.Clone(dims), Type: typ, Size: size},
		data: data,
	})
	return nil
}

func (w *Writer) alignment() uint64 {
	if w.align == 0 {
		return DefaultAlignment
	}
	return w.align
}

// WriteTo writes the file to out and returns the number of bytes written.
// It may be called more than once; each call writes the same bytes.
func (w *Writer) WriteTo(out io.Writer) (int64, error) {
	align := w.alignment()
	pad := func(n uint64) uint64 { return (align - n%align) % align }

	var h []byte
	h = append(h, "GGUF"...)
	h = binary.LittleEndian.AppendUint32(h, 3)
	h = binary.LittleEndian.AppendUint64(h, uint64(len(w.tensors)))
	h = binary.LittleEndian.AppendUint64(h, uint64(len(w.kvs)))
	for _, p := range w.kvs {
		h = appendString(h, p.key)
		h = binary.LittleEndian.AppendUint32(h, uint32(p.val.typ))
		h = appendValue(h, p.val)
	}
	var off uint64
	for _, t := range w.tensors {
		h = appendString(h, t.info.Name)
		h = binary.LittleEndian.AppendUint32(h, uint32(len(t.info.Dims)))
		for _, d := range t.info.Dims {
			h = binary.LittleEndian.AppendUint64(h, d)
		}
		h = binary.LittleEndian.AppendUint32(h, uint32(t.info.Type))
		h = binary.LittleEndian.AppendUint64(h, off)
		off += t.info.Size + pad(t.info.Size)
	}

	bw := bufio.NewWriterSize(out, 1<<16)
	var n int64
	write := func(b []byte) error {
		m, err := bw.Write(b)
		n += int64(m)
		return err
	}
	var zeros [4096]byte
	writePad := func(k uint64) error {
		for k > 0 {
			c := min(k, uint64(len(zeros)))
			if err := write(zeros[:c]); err != nil {
				return err
			}
			k -= c
		}
		return nil
	}
	if err := write(h); err != nil {
		return n, err
	}
	if err := writePad(pad(uint64(len(h)))); err != nil {
		return n, err
	}
	for _, t := range w.tensors {
		if err := write(t.data); err != nil {
			return n, err
		}
		if err := writePad(pad(t.info.Size)); err != nil {
			return n, err
		}
	}
	return n, bw.Flush()
}

func appendString(b []byte, s string) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(len(s)))
	return append(b, s...)
}

// appendValue appends v's encoding, without its type tag.
func appendValue(b []byte, v Value) []byte {
	switch v.typ {
	case TypeString:
		return appendString(b, v.str)
	case TypeArray:
		b = binary.LittleEndian.AppendUint32(b, uint32(v.elem))
		b = binary.LittleEndian.AppendUint64(b, uint64(v.Len()))
		switch a := v.arr.(type) {
		case []string:
			for _, s := range a {
				b = appendString(b, s)
			}
		case []Value:
			for _, e := range a {
				b = appendValue(b, e)
			}
		case []uint8:
			b = append(b, a...)
		default:
			for i, n := 0, v.Len(); i < n; i++ {
				b = appendValue(b, v.index(i))
			}
		}
		return b
	}
	switch v.typ.fixedSize() {
	case 1:
		return append(b, byte(v.bits))
	case 2:
		return binary.LittleEndian.AppendUint16(b, uint16(v.bits))
	case 4:
		return binary.LittleEndian.AppendUint32(b, uint32(v.bits))
	default:
		return binary.LittleEndian.AppendUint64(b, v.bits)
	}
}
