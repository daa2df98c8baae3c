package gguf

import (
	"encoding/binary"
	"math"
	"math/bits"
	"slices"
	"strings"

	"github.com/blendrag/blendrag/kernels"
)

var le = binary.LittleEndian

// Minimum encoded sizes, used to bound counts before anything is allocated.
const (
	headerSize    = 4 + 4 + 8 + 8 // magic, version, tensor count, kv count
	minKVSize     = 8 + 4 + 1     // empty key, type, one-byte value
	minTensorInfo = 8 + 4 + 8 + 4 + 8
)

// Parse parses a GGUF file held in data. The File keeps data (Data and
// DataSection return sub-slices of it, no copy), so the caller must not
// modify it while the File is in use; metadata strings and the tensor
// directory are copied out.
//
// Parse accepts little-endian GGUF versions 2 and 3 and checks everything it
// reads: counts and lengths against the bytes left, array nesting, types,
// tensor dimensions (1 to MaxDims, each ≥ 1, no overflow, rows of whole
// blocks), unique keys and tensor names, a uint32 power-of-two alignment,
// and that every tensor's data is aligned, inside the file and disjoint from
// the others. Every failure is an error wrapping ErrNotGGUF, ErrUnsupported
// or ErrMalformed; Parse never panics, and its allocations are bounded by a
// small multiple of len(data).
func Parse(data []byte) (*File, error) {
	f, err := parse(data)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// decoder reads little-endian values from b, advancing off.
type decoder struct {
	b   []byte
	off int
}

func (d *decoder) left() int { return len(d.b) - d.off }

// need fails unless n more bytes are available.
func (d *decoder) need(n int, what string) *formatError {
	if n > d.left() {
		return malformed("truncated: %s needs %d bytes at offset %d, file has %d left", what, n, d.off, d.left())
	}
	return nil
}

func (d *decoder) u32(what string) (uint32, *formatError) {
	if err := d.need(4, what); err != nil {
		return 0, err
	}
	x := le.Uint32(d.b[d.off:])
	d.off += 4
	return x, nil
}

func (d *decoder) u64(what string) (uint64, *formatError) {
	if err := d.need(8, what); err != nil {
		return 0, err
	}
	x := le.Uint64(d.b[d.off:])
	d.off += 8
	return x, nil
}

// count reads a uint64 element count and checks that count elements of at
// least minSize bytes each fit in the bytes left.
func (d *decoder) count(minSize int, what string) (int, *formatError) {
	at := d.off
	n, err := d.u64(what)
	if err != nil {
		return 0, err
	}
	if minSize > 0 && n > uint64(d.left()/minSize) {
		return 0, malformed("%s %d at offset %d is impossible: %d bytes left hold at most %d", what, n, at, d.left(), d.left()/minSize)
	}
	return int(n), nil
}

// bytes reads a uint64 length and that many bytes, without copying.
func (d *decoder) bytes(what string) ([]byte, *formatError) {
	at := d.off
	n, err := d.u64(what + " length")
	if err != nil {
		return nil, err
	}
	if n > uint64(d.left()) {
		return nil, malformed("%s length %d at offset %d exceeds the %d bytes left", what, n, at, d.left())
	}
	s := d.b[d.off : d.off+int(n)]
	d.off += int(n)
	return s, nil
}

func parse(data []byte) (*File, *formatError) {
	d := &decoder{b: data}
	if len(data) < 4 || string(data[:4]) != "GGUF" {
		if len(data) >= 4 || !strings.HasPrefix("GGUF", string(data)) {
			m := data[:min(4, len(data))]
			return nil, &formatError{kind: ErrNotGGUF, msg: "bad magic " + quoteBytes(m) + ", want \"GGUF\""}
		}
		return nil, malformed("truncated: %d bytes, shorter than the %d-byte header", len(data), headerSize)
	}
	d.off = 4
	version, err := d.u32("version")
	if err != nil {
		return nil, err
	}
	switch {
	case version == 2 || version == 3:
	case version == 1:
		return nil, unsupported("version 1 (32-bit counts) is not supported; only versions 2 and 3")
	case version&0xFFFF == 0 && version != 0:
		return nil, unsupported("file is big-endian (version field %#08x); only little-endian GGUF is supported", version)
	default:
		return nil, unsupported("version %d is not supported; only versions 2 and 3", version)
	}
	rawTensors, err := d.u64("tensor count")
	if err != nil {
		return nil, err
	}
	rawKVs, err := d.u64("metadata count")
	if err != nil {
		return nil, err
	}
	left := uint64(d.left())
	if rawTensors > left/minTensorInfo {
		return nil, malformed("tensor count %d is impossible: %d bytes left hold at most %d tensor infos", rawTensors, left, left/minTensorInfo)
	}
	if rawKVs > left/minKVSize {
		return nil, malformed("metadata count %d is impossible: %d bytes left hold at most %d pairs", rawKVs, left, left/minKVSize)
	}
	if rawTensors*minTensorInfo+rawKVs*minKVSize > left {
		return nil, malformed("%d tensor infos and %d metadata pairs cannot fit in %d bytes", rawTensors, rawKVs, left)
	}
	nTensors, nKVs := int(rawTensors), int(rawKVs)

	f := &File{Version: version, Alignment: DefaultAlignment, data: data}
	// Counts only bound the work: capacity grows with entries actually
	// parsed, so a header claiming many entries cannot force a large
	// allocation before the entries fail to parse.
	f.kvs = make([]kv, 0, min(nKVs, 256))
	f.keyIdx = make(map[string]int, min(nKVs, 256))
	for i := range nKVs {
		at := d.off
		kb, err := d.bytes("key")
		if err != nil {
			return nil, err.in("metadata pair %d", i)
		}
		key := string(kb)
		if _, dup := f.keyIdx[key]; dup {
			return nil, malformed("duplicate metadata key %q at offset %d", key, at)
		}
		t, err := d.u32("value type")
		if err != nil {
			return nil, err.in("key %q", key)
		}
		v, err := d.value(ValueType(t), 0)
		if err != nil {
			return nil, err.in("key %q", key)
		}
		if key == AlignmentKey {
			a, ok := v.AsUint()
			if v.typ != TypeUint32 || !ok || a == 0 || a&(a-1) != 0 {
				return nil, malformed("key %q is %s %s; want a uint32 power of two", key, v.typ, v)
			}
			f.Alignment = uint32(a)
		}
		f.keyIdx[key] = len(f.kvs)
		f.kvs = append(f.kvs, kv{key, v})
	}

	f.tensors = make([]TensorInfo, 0, min(nTensors, 1024))
	f.nameIdx = make(map[string]int, min(nTensors, 1024))
	for i := range nTensors {
		t, err := d.tensorInfo()
		if err != nil {
			return nil, err.in("tensor %d", i)
		}
		if _, dup := f.nameIdx[t.Name]; dup {
			return nil, malformed("duplicate tensor name %q", t.Name)
		}
		f.nameIdx[t.Name] = len(f.tensors)
		f.tensors = append(f.tensors, t)
	}

	// The data section starts at the next multiple of the alignment. A file
	// without tensors may end before that point.
	align := uint64(f.Alignment)
	f.dataOff = (uint64(d.off) + align - 1) &^ (align - 1)
	size := uint64(len(data))
	var dataLen uint64
	if f.dataOff < size {
		dataLen = size - f.dataOff
	}
	for _, t := range f.tensors {
		if t.Offset%align != 0 {
			return nil, malformed("tensor %q: data offset %d is not a multiple of the alignment %d", t.Name, t.Offset, align)
		}
		if t.Offset > dataLen || t.Size > dataLen-t.Offset {
			lo, c1 := bits.Add64(f.dataOff, t.Offset, 0)
			hi, c2 := bits.Add64(lo, t.Size, 0)
			if c1|c2 != 0 {
				return nil, malformed("tensor %q: data offset %d + size %d overflows", t.Name, t.Offset, t.Size)
			}
			return nil, malformed("tensor %q: data [%d, %d) past end of file (size %d)", t.Name, lo, hi, size)
		}
	}
	// Ranges must not overlap: sort by offset and compare neighbours.
	order := make([]int, len(f.tensors))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		oa, ob := f.tensors[a].Offset, f.tensors[b].Offset
		switch {
		case oa < ob:
			return -1
		case oa > ob:
			return 1
		}
		return a - b
	})
	for k := 1; k < len(order); k++ {
		p, q := f.tensors[order[k-1]], f.tensors[order[k]]
		if q.Offset < p.Offset+p.Size {
			return nil, malformed("tensor %q: data [%d, %d) overlaps tensor %q at [%d, %d) (offsets within the data section)",
				q.Name, q.Offset, q.Offset+q.Size, p.Name, p.Offset, p.Offset+p.Size)
		}
	}
	return f, nil
}

// tensorInfo reads one tensor directory entry and computes its size.
func (d *decoder) tensorInfo() (TensorInfo, *formatError) {
	var t TensorInfo
	nb, err := d.bytes("name")
	if err != nil {
		return t, err
	}
	if len(nb) > MaxNameLen {
		return t, malformed("name %q is %d bytes, longer than %d", truncate(nb, 80), len(nb), MaxNameLen)
	}
	t.Name = string(nb)
	nd, err := d.u32("dimension count")
	if err != nil {
		return t, err.in("tensor %q", t.Name)
	}
	if nd == 0 || nd > MaxDims {
		return t, malformed("tensor %q: %d dimensions (want 1 to %d)", t.Name, nd, MaxDims)
	}
	t.Dims = make([]uint64, nd)
	for j := range t.Dims {
		if t.Dims[j], err = d.u64("dimension"); err != nil {
			return t, err.in("tensor %q", t.Name)
		}
	}
	typ, err := d.u32("type")
	if err != nil {
		return t, err.in("tensor %q", t.Name)
	}
	t.Type = kernels.DType(typ)
	if t.Offset, err = d.u64("data offset"); err != nil {
		return t, err.in("tensor %q", t.Name)
	}
	if _, t.Size, err = tensorSize(t.Type, t.Dims); err != nil {
		return t, err.in("tensor %q", t.Name)
	}
	return t, nil
}

// value reads a value of type t. depth is the number of arrays enclosing it.
func (d *decoder) value(t ValueType, depth int) (Value, *formatError) {
	v := Value{typ: t}
	switch t {
	case TypeString:
		b, err := d.bytes("string")
		if err != nil {
			return v, err
		}
		v.str = string(b)
		return v, nil
	case TypeArray:
		return d.array(depth + 1)
	}
	if !t.valid() {
		return v, malformed("unknown value type %d at offset %d", uint32(t), d.off-4)
	}
	n := t.fixedSize()
	if err := d.need(n, t.String()); err != nil {
		return v, err
	}
	p := d.b[d.off:]
	switch t {
	case TypeUint8:
		v.bits = uint64(p[0])
	case TypeInt8:
		v.bits = uint64(int64(int8(p[0])))
	case TypeBool:
		if p[0] > 1 {
			return v, malformed("bool byte %d at offset %d is neither 0 nor 1", p[0], d.off)
		}
		v.bits = uint64(p[0])
	case TypeUint16:
		v.bits = uint64(le.Uint16(p))
	case TypeInt16:
		v.bits = uint64(int64(int16(le.Uint16(p))))
	case TypeUint32, TypeFloat32:
		v.bits = uint64(le.Uint32(p))
	case TypeInt32:
		v.bits = uint64(int64(int32(le.Uint32(p))))
	default: // 64-bit types
		v.bits = le.Uint64(p)
	}
	d.off += n
	return v, nil
}

// array reads an array's element type, count and elements. depth counts
// this array.
func (d *decoder) array(depth int) (Value, *formatError) {
	if depth > maxArrayDepth {
		return Value{}, malformed("arrays nested deeper than %d at offset %d", maxArrayDepth, d.off)
	}
	at := d.off
	et, err := d.u32("array element type")
	if err != nil {
		return Value{}, err
	}
	elem := ValueType(et)
	if !elem.valid() {
		return Value{}, malformed("unknown array element type %d at offset %d", et, at)
	}
	n, err := d.count(elem.minSize(), "array count")
	if err != nil {
		return Value{}, err.in("array of %s", elem)
	}
	v := Value{typ: TypeArray, elem: elem}
	p := d.b[d.off:]
	switch elem {
	case TypeString:
		v.arr, err = d.strings(n)
		return v, err
	case TypeArray:
		a := make([]Value, n)
		for i := range a {
			if a[i], err = d.array(depth + 1); err != nil {
				return v, err.in("element %d", i)
			}
		}
		v.arr = a
		return v, nil
	case TypeUint8:
		v.arr = slices.Clone(p[:n:n])
	case TypeInt8:
		a := make([]int8, n)
		for i := range a {
			a[i] = int8(p[i])
		}
		v.arr = a
	case TypeBool:
		a := make([]bool, n)
		for i := range a {
			if p[i] > 1 {
				return v, malformed("array of bool: element %d is %d at offset %d, neither 0 nor 1", i, p[i], d.off+i)
			}
			a[i] = p[i] == 1
		}
		v.arr = a
	case TypeUint16:
		v.arr = decodeSlice(p, n, 2, func(b []byte) uint16 { return le.Uint16(b) })
	case TypeInt16:
		v.arr = decodeSlice(p, n, 2, func(b []byte) int16 { return int16(le.Uint16(b)) })
	case TypeUint32:
		v.arr = decodeSlice(p, n, 4, func(b []byte) uint32 { return le.Uint32(b) })
	case TypeInt32:
		v.arr = decodeSlice(p, n, 4, func(b []byte) int32 { return int32(le.Uint32(b)) })
	case TypeFloat32:
		v.arr = decodeSlice(p, n, 4, func(b []byte) float32 { return math.Float32frombits(le.Uint32(b)) })
	case TypeUint64:
		v.arr = decodeSlice(p, n, 8, func(b []byte) uint64 { return le.Uint64(b) })
	case TypeInt64:
		v.arr = decodeSlice(p, n, 8, func(b []byte) int64 { return int64(le.Uint64(b)) })
	case TypeFloat64:
		v.arr = decodeSlice(p, n, 8, func(b []byte) float64 { return math.Float64frombits(le.Uint64(b)) })
	}
	d.off += n * elem.fixedSize()
	return v, nil
}

// decodeSlice decodes n fixed-size elements from p; the caller has checked
// that p holds n*size bytes.
func decodeSlice[T any](p []byte, n, size int, get func([]byte) T) []T {
	a := make([]T, n)
	for i := range a {
		a[i] = get(p[i*size:])
	}
	return a
}

// strings reads n length-prefixed strings into one shared backing string:
// a first pass validates the lengths and sums them, a second copies the
// bytes once.
func (d *decoder) strings(n int) ([]string, *formatError) {
	start := d.off
	total := 0
	for i := range n {
		at := d.off
		l, err := d.u64("string length")
		if err != nil {
			return nil, err.in("array of string: element %d", i)
		}
		if l > uint64(d.left()) {
			return nil, malformed("array of string: element %d: length %d at offset %d exceeds the %d bytes left", i, l, at, d.left())
		}
		d.off += int(l)
		total += int(l)
	}
	var sb strings.Builder
	sb.Grow(total)
	ends := make([]int, n)
	p := start
	for i := range ends {
		l := int(le.Uint64(d.b[p:]))
		sb.Write(d.b[p+8 : p+8+l])
		p += 8 + l
		ends[i] = sb.Len()
	}
	all := sb.String()
	out := make([]string, n)
	prev := 0
	for i, e := range ends {
		out[i] = all[prev:e]
		prev = e
	}
	return out, nil
}

// quoteBytes renders a short byte string for a message.
func quoteBytes(b []byte) string {
	var sb strings.Builder
	sb.WriteByte('"')
	for _, c := range b {
		if c >= 0x20 && c < 0x7f && c != '"' && c != '\\' {
			sb.WriteByte(c)
		} else {
			sb.WriteString(`\x`)
			sb.WriteByte("0123456789abcdef"[c>>4])
			sb.WriteByte("0123456789abcdef"[c&15])
		}
	}
	sb.WriteByte('"')
	return sb.String()
}

// truncate shortens b to at most n bytes for a message.
func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}
