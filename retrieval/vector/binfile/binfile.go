// Package binfile frames small little-endian binary files: an 8-byte magic,
// a version, the body, and a CRC-32C trailer over everything before it.
// Writer builds such a file; Reader validates the frame and reads fields,
// remembering the first out-of-bounds read so callers check once.
package binfile

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Writer appends fields to a file body.
type Writer struct{ b []byte }

// NewWriter starts a file with the given magic and version, with room for
// sizeHint bytes.
func NewWriter(magic string, version uint32, sizeHint int) *Writer {
	w := &Writer{b: make([]byte, 0, len(magic)+8+sizeHint)}
	w.b = append(w.b, magic...)
	w.U32(version)
	return w
}

// U8 appends a byte.
func (w *Writer) U8(v uint8) { w.b = append(w.b, v) }

// U16 appends a uint16.
func (w *Writer) U16(v uint16) { w.b = binary.LittleEndian.AppendUint16(w.b, v) }

// U32 appends a uint32.
func (w *Writer) U32(v uint32) { w.b = binary.LittleEndian.AppendUint32(w.b, v) }

// F32 appends a float32.
func (w *Writer) F32(v float32) { w.U32(math.Float32bits(v)) }

// F64 appends a float64.
func (w *Writer) F64(v float64) { w.b = binary.LittleEndian.AppendUint64(w.b, math.Float64bits(v)) }

// String appends a uint32 length and the string's bytes.
func (w *Writer) String(s string) {
	w.U32(uint32(len(s)))
	w.b = append(w.b, s...)
}

// Finish appends the checksum and returns the whole file.
func (w *Writer) Finish() []byte {
	return binary.LittleEndian.AppendUint32(w.b, crc32.Checksum(w.b, castagnoli))
}

// ErrTruncated is the error of a read past the end of the body.
var ErrTruncated = errors.New("truncated")

// Reader reads the fields of a validated body.
type Reader struct {
	b   []byte
	err error
}

// NewReader checks data's magic, checksum and version and returns a reader
// positioned after the version.
func NewReader(data []byte, magic string, version uint32) (*Reader, error) {
	if len(data) < len(magic)+8 || !bytes.Equal(data[:len(magic)], []byte(magic)) {
		return nil, fmt.Errorf("bad magic: not a %q file", magic)
	}
	body := data[:len(data)-4]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(data[len(data)-4:]) {
		return nil, errors.New("checksum mismatch (file is corrupt or truncated)")
	}
	r := &Reader{b: body[len(magic):]}
	if v := r.U32(); v != version {
		return nil, fmt.Errorf("unsupported version %d (want %d)", v, version)
	}
	return r, nil
}

// Take returns the next n bytes (aliasing the data), or nil after an error.
func (r *Reader) Take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.err = ErrTruncated
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

// U8 reads a byte.
func (r *Reader) U8() uint8 {
	if b := r.Take(1); b != nil {
		return b[0]
	}
	return 0
}

// U16 reads a uint16.
func (r *Reader) U16() uint16 {
	if b := r.Take(2); b != nil {
		return binary.LittleEndian.Uint16(b)
	}
	return 0
}

// U32 reads a uint32.
func (r *Reader) U32() uint32 {
	if b := r.Take(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

// F32 reads a float32.
func (r *Reader) F32() float32 { return math.Float32frombits(r.U32()) }

// F64 reads a float64.
func (r *Reader) F64() float64 {
	if b := r.Take(8); b != nil {
		return math.Float64frombits(binary.LittleEndian.Uint64(b))
	}
	return 0
}

// String reads a string written by Writer.String.
func (r *Reader) String() string { return string(r.Take(int(r.U32()))) }

// Remaining returns the number of unread body bytes.
func (r *Reader) Remaining() int { return len(r.b) }

// Err returns the first read error, if any.
func (r *Reader) Err() error { return r.err }

// Done returns the first read error, or an error if body bytes remain.
func (r *Reader) Done() error {
	if r.err != nil {
		return r.err
	}
	if len(r.b) != 0 {
		return fmt.Errorf("%d unexpected trailing bytes", len(r.b))
	}
	return nil
}
