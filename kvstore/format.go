package kvstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// formatVersion is the version of the key and value layout. Keys of another
// version are never read; Open deletes them.
const formatVersion = 1

// Key prefixes: a chunk's metadata record, one value per layer, and its
// last-use time.
const (
	tagMeta  = 'm'
	tagLayer = 'l'
	tagUse   = 'u'
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Key names one chunk's cached KV.
type Key struct {
	// Model is the generator's fingerprint (model.Model.Fingerprint()).
	Model string
	// Segment is the segment format version and the hash of the shared
	// prefix P's tokens.
	Segment string
	// Chunk is the chunk's content hash, or "P" for the prefix itself.
	Chunk string
}

// String names the key in errors.
func (k Key) String() string {
	return fmt.Sprintf("chunk %q (model %q, segment %q)", k.Chunk, k.Model, k.Segment)
}

// dbKey encodes tag / version / model / segment / codec / chunk [/ layer] as
// Badger key bytes; strings are length-prefixed, so no separator can be
// forged by their content.
func dbKey(tag byte, k Key, c Codec, layer int) []byte {
	b := []byte{tag, formatVersion}
	for _, s := range []string{k.Model, k.Segment, string(c), k.Chunk} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	if tag == tagLayer {
		b = binary.BigEndian.AppendUint16(b, uint16(layer))
	}
	return b
}

// parseKey decodes a key written by dbKey. ok is false for a key of another
// format version or a malformed key.
func parseKey(b []byte) (tag byte, k Key, c Codec, layer int, ok bool) {
	if len(b) < 2 || b[1] != formatVersion {
		return 0, k, "", 0, false
	}
	tag, rest := b[0], b[2:]
	var s [4]string
	for i := range s {
		n, w := binary.Uvarint(rest)
		if w <= 0 || uint64(len(rest)-w) < n {
			return 0, k, "", 0, false
		}
		s[i], rest = string(rest[w:w+int(n)]), rest[w+int(n):]
	}
	k, c = Key{Model: s[0], Segment: s[1], Chunk: s[3]}, Codec(s[2])
	switch {
	case tag == tagLayer && len(rest) == 2:
		layer = int(binary.BigEndian.Uint16(rest))
	case tag != tagLayer && len(rest) == 0:
	default:
		return 0, k, "", 0, false
	}
	return tag, k, c, layer, true
}

// meta is a chunk's metadata record: its shape, positions and tokens, and
// the length and CRC-32C of every layer value, so a layer value from another
// Put (or a partial one) never passes as valid.
type meta struct {
	Codec    Codec
	Rows     int
	Dim      int
	Pos      []int32
	Tokens   []int32
	Lens     []uint32 // per layer: value length
	CRCs     []uint32 // per layer: value CRC-32C
	Modified int64    // unix nanoseconds of the Put
}

// Layers is the number of layers stored.
func (m *meta) Layers() int { return len(m.Lens) }

// bytes is the stored size of the chunk: the metadata record and every layer.
func (m *meta) bytes(metaLen int) int64 {
	n := int64(metaLen)
	for _, l := range m.Lens {
		n += int64(l)
	}
	return n
}

// encode lays the record out as version, codec, layers (u16), rows, dim
// (u32), modified (i64), positions and tokens (i32 each), per-layer length
// and CRC (u32 each), and a trailing CRC-32C of everything before it.
func (m *meta) encode() ([]byte, error) {
	id, err := m.Codec.id()
	if err != nil {
		return nil, err
	}
	b := []byte{formatVersion, id}
	b = binary.LittleEndian.AppendUint16(b, uint16(len(m.Lens)))
	b = binary.LittleEndian.AppendUint32(b, uint32(m.Rows))
	b = binary.LittleEndian.AppendUint32(b, uint32(m.Dim))
	b = binary.LittleEndian.AppendUint64(b, uint64(m.Modified))
	for _, p := range m.Pos {
		b = binary.LittleEndian.AppendUint32(b, uint32(p))
	}
	for _, t := range m.Tokens {
		b = binary.LittleEndian.AppendUint32(b, uint32(t))
	}
	for i := range m.Lens {
		b = binary.LittleEndian.AppendUint32(b, m.Lens[i])
		b = binary.LittleEndian.AppendUint32(b, m.CRCs[i])
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli)), nil
}

// errBadRecord is wrapped into ErrCorrupt by callers.
var errBadRecord = errors.New("bad record")

// decodeMeta parses and verifies a record written by meta.encode for codec c.
func decodeMeta(b []byte, c Codec) (*meta, error) {
	const head = 20
	if len(b) < head+4 {
		return nil, fmt.Errorf("%w: metadata of %d bytes", errBadRecord, len(b))
	}
	body := b[:len(b)-4]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return nil, fmt.Errorf("%w: metadata checksum mismatch", errBadRecord)
	}
	id, _ := c.id()
	if body[0] != formatVersion || body[1] != id {
		return nil, fmt.Errorf("%w: metadata of format %d, codec %d", errBadRecord, body[0], body[1])
	}
	m := &meta{Codec: c}
	layers := int(binary.LittleEndian.Uint16(body[2:]))
	m.Rows = int(binary.LittleEndian.Uint32(body[4:]))
	m.Dim = int(binary.LittleEndian.Uint32(body[8:]))
	m.Modified = int64(binary.LittleEndian.Uint64(body[12:]))
	if int64(len(body)) != head+8*int64(m.Rows)+8*int64(layers) || m.Dim <= 0 || layers == 0 {
		return nil, fmt.Errorf("%w: metadata of %d bytes for %d rows, %d layers", errBadRecord, len(b), m.Rows, layers)
	}
	p := body[head:]
	m.Pos, m.Tokens = make([]int32, m.Rows), make([]int32, m.Rows)
	for i := range m.Pos {
		m.Pos[i] = int32(binary.LittleEndian.Uint32(p[4*i:]))
		m.Tokens[i] = int32(binary.LittleEndian.Uint32(p[4*(m.Rows+i):]))
	}
	p = p[8*m.Rows:]
	m.Lens, m.CRCs = make([]uint32, layers), make([]uint32, layers)
	for l := range m.Lens {
		m.Lens[l] = binary.LittleEndian.Uint32(p[8*l:])
		m.CRCs[l] = binary.LittleEndian.Uint32(p[8*l+4:])
	}
	return m, nil
}

// layerHead is the size of a layer value's header: version, codec, layer
// (u16), rows, dim, length of the K part (u32 each), CRC-32C of the header
// before it and the payload (u32).
const layerHead = 20

// encodeLayer returns the value of layer l: the header, then K and V encoded
// with codec c (K with per-column int8 scales, V per-row).
func encodeLayer(c Codec, l, rows, dim int, k, v []float32) ([]byte, error) {
	id, err := c.id()
	if err != nil {
		return nil, err
	}
	kn, vn := c.encodedSize(rows, dim, true), c.encodedSize(rows, dim, false)
	b := make([]byte, layerHead, layerHead+kn+vn)
	b[0], b[1] = formatVersion, id
	binary.LittleEndian.PutUint16(b[2:], uint16(l))
	binary.LittleEndian.PutUint32(b[4:], uint32(rows))
	binary.LittleEndian.PutUint32(b[8:], uint32(dim))
	binary.LittleEndian.PutUint32(b[12:], uint32(kn))
	if b, err = c.encode(b, k, rows, dim, true); err != nil {
		return nil, fmt.Errorf("layer %d K: %w", l, err)
	}
	if b, err = c.encode(b, v, rows, dim, false); err != nil {
		return nil, fmt.Errorf("layer %d V: %w", l, err)
	}
	crc := crc32.Update(crc32.Checksum(b[:16], castagnoli), castagnoli, b[layerHead:])
	binary.LittleEndian.PutUint32(b[16:], crc)
	return b, nil
}

// decodeLayer verifies value b of layer l against its header and the
// metadata record m and decodes it into k and v ([rows × dim] each).
func decodeLayer(b []byte, m *meta, l int, k, v []float32) error {
	if len(b) < layerHead || uint32(len(b)) != m.Lens[l] {
		return fmt.Errorf("%w: layer %d value of %d bytes, want %d", errBadRecord, l, len(b), m.Lens[l])
	}
	crc := crc32.Update(crc32.Checksum(b[:16], castagnoli), castagnoli, b[layerHead:])
	if crc != binary.LittleEndian.Uint32(b[16:]) || crc != m.CRCs[l] {
		return fmt.Errorf("%w: layer %d checksum mismatch", errBadRecord, l)
	}
	id, _ := m.Codec.id()
	if b[0] != formatVersion || b[1] != id || int(binary.LittleEndian.Uint16(b[2:])) != l ||
		int(binary.LittleEndian.Uint32(b[4:])) != m.Rows || int(binary.LittleEndian.Uint32(b[8:])) != m.Dim {
		return fmt.Errorf("%w: layer %d header does not match the metadata", errBadRecord, l)
	}
	kn := int(binary.LittleEndian.Uint32(b[12:]))
	if kn > len(b)-layerHead {
		return fmt.Errorf("%w: layer %d K part of %d bytes", errBadRecord, l, kn)
	}
	p := b[layerHead:]
	if err := m.Codec.decode(k, p[:kn], m.Rows, m.Dim, true); err != nil {
		return fmt.Errorf("%w: layer %d K: %v", errBadRecord, l, err)
	}
	if err := m.Codec.decode(v, p[kn:], m.Rows, m.Dim, false); err != nil {
		return fmt.Errorf("%w: layer %d V: %v", errBadRecord, l, err)
	}
	return nil
}
