package vector

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
)

// The file format, little-endian:
//
//	magic "BRVECIDX", version u32, dim u32, count u32, hasGraph u8
//	count × (idLen u32, id bytes, dim × f32)
//	if hasGraph: M u32, entry i32, top u32,
//	             count × (level u8, (level+1) × (n u16, n × u32 neighbour))
//	CRC-32C u32 of everything before it
const (
	fileMagic   = "BRVECIDX"
	fileVersion = 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// graph is an HNSW graph as stored on disk.
type graph struct {
	m     int
	level []uint8
	links [][][]int32
	entry int32
	top   int
}

// encode serialises a compacted store (no tombstones) and its graph.
func encode(st *store, g *graph) []byte {
	n := st.slots()
	b := make([]byte, 0, 21+n*(st.dim*4+24))
	b = append(b, fileMagic...)
	b = binary.LittleEndian.AppendUint32(b, fileVersion)
	b = binary.LittleEndian.AppendUint32(b, uint32(st.dim))
	b = binary.LittleEndian.AppendUint32(b, uint32(n))
	if g != nil {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	for i, id := range st.ids {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(id)))
		b = append(b, id...)
		for _, v := range st.vec(int32(i)) {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		}
	}
	if g != nil {
		b = binary.LittleEndian.AppendUint32(b, uint32(g.m))
		b = binary.LittleEndian.AppendUint32(b, uint32(g.entry))
		b = binary.LittleEndian.AppendUint32(b, uint32(g.top))
		for i := range n {
			b = append(b, g.level[i])
			for _, ls := range g.links[i] {
				b = binary.LittleEndian.AppendUint16(b, uint16(len(ls)))
				for _, x := range ls {
					b = binary.LittleEndian.AppendUint32(b, uint32(x))
				}
			}
		}
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// reader reads little-endian fields, remembering the first short read.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil || n < 0 || n > len(r.b) {
		if r.err == nil {
			r.err = errors.New("truncated")
		}
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) u32() uint32 {
	if b := r.take(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (r *reader) u16() uint16 {
	if b := r.take(2); b != nil {
		return binary.LittleEndian.Uint16(b)
	}
	return 0
}

func (r *reader) u8() uint8 {
	if b := r.take(1); b != nil {
		return b[0]
	}
	return 0
}

// decode fills the empty store st from data and returns the stored graph,
// if any.
func decode(data []byte, st *store) (*graph, error) {
	if len(data) < len(fileMagic)+4 || !bytes.Equal(data[:len(fileMagic)], []byte(fileMagic)) {
		return nil, errors.New("not a vector index file (bad magic)")
	}
	body, sum := data[:len(data)-4], binary.LittleEndian.Uint32(data[len(data)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, errors.New("checksum mismatch (file is corrupt or truncated)")
	}
	r := &reader{b: body[len(fileMagic):]}
	if v := r.u32(); v != fileVersion {
		return nil, fmt.Errorf("unsupported version %d (want %d)", v, fileVersion)
	}
	if d := int(r.u32()); d != st.dim {
		return nil, fmt.Errorf("dimension %d, want %d", d, st.dim)
	}
	n := int(r.u32())
	hasGraph := r.u8()
	if n > len(r.b)/(4+4*st.dim) {
		return nil, fmt.Errorf("count %d does not fit the file", n)
	}
	vec := make([]float32, st.dim)
	for range n {
		id := string(r.take(int(r.u32())))
		raw := r.take(4 * st.dim)
		if r.err != nil {
			return nil, r.err
		}
		for j := range vec {
			vec[j] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*j:]))
		}
		if err := st.check(vec); err != nil {
			return nil, fmt.Errorf("id %q: %w", id, err)
		}
		if _, dup := st.live[id]; dup {
			return nil, fmt.Errorf("duplicate id %q", id)
		}
		st.add(id, vec)
	}
	if hasGraph > 1 {
		return nil, fmt.Errorf("bad graph flag %d", hasGraph)
	}
	var g *graph
	if hasGraph == 1 {
		var err error
		if g, err = decodeGraph(r, n); err != nil {
			return nil, err
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%d unexpected trailing bytes", len(r.b))
	}
	return g, nil
}

func decodeGraph(r *reader, n int) (*graph, error) {
	g := &graph{m: int(r.u32()), entry: int32(r.u32()), top: int(r.u32())}
	if n > 0 && (g.entry < 0 || int(g.entry) >= n) || n == 0 && g.entry != -1 {
		return nil, fmt.Errorf("graph entry point %d out of range", g.entry)
	}
	g.level = make([]uint8, n)
	g.links = make([][][]int32, n)
	for i := range n {
		lv := r.u8()
		if lv > maxLevel {
			return nil, fmt.Errorf("node %d level %d out of range", i, lv)
		}
		g.level[i] = lv
		g.links[i] = make([][]int32, int(lv)+1)
		for l := range g.links[i] {
			ls := make([]int32, r.u16())
			for j := range ls {
				x := r.u32()
				if int64(x) >= int64(n) {
					return nil, fmt.Errorf("node %d links to %d, out of range", i, x)
				}
				ls[j] = int32(x)
			}
			g.links[i][l] = ls
		}
		if r.err != nil {
			return nil, r.err
		}
	}
	if n > 0 && int(g.level[g.entry]) != g.top {
		return nil, fmt.Errorf("graph entry point level %d, header says %d", g.level[g.entry], g.top)
	}
	for i, lsv := range g.links {
		for l, ls := range lsv {
			for _, x := range ls {
				if int(g.level[x]) < l {
					return nil, fmt.Errorf("node %d links at level %d to node %d of level %d", i, l, x, g.level[x])
				}
			}
		}
	}
	return g, nil
}
