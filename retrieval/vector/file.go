package vector

import (
	"errors"
	"fmt"

	"github.com/blendrag/blendrag/retrieval/vector/binfile"
)

// The file format (binfile framing: magic, version, body, CRC-32C), with a
// little-endian body:
//
//	dim u32, count u32, hasGraph u8
//	count × (id string, dim × f32)
//	if hasGraph: M u32, entry i32, top u32,
//	             count × (level u8, (level+1) × (n u16, n × u32 neighbour))
const (
	fileMagic   = "BRVECIDX"
	fileVersion = 1
)

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
	w := binfile.NewWriter(fileMagic, fileVersion, n*(st.dim*4+24))
	w.U32(uint32(st.dim))
	w.U32(uint32(n))
	if g != nil {
		w.U8(1)
	} else {
		w.U8(0)
	}
	for i, id := range st.ids {
		w.String(id)
		for _, v := range st.vec(int32(i)) {
			w.F32(v)
		}
	}
	if g != nil {
		w.U32(uint32(g.m))
		w.U32(uint32(g.entry))
		w.U32(uint32(g.top))
		for i := range n {
			w.U8(g.level[i])
			for _, ls := range g.links[i] {
				w.U16(uint16(len(ls)))
				for _, x := range ls {
					w.U32(uint32(x))
				}
			}
		}
	}
	return w.Finish()
}

// decode fills the empty store st from data and returns the stored graph,
// if any.
func decode(data []byte, st *store) (*graph, error) {
	r, err := binfile.NewReader(data, fileMagic, fileVersion)
	if err != nil {
		return nil, err
	}
	if d := int(r.U32()); d != st.dim {
		return nil, fmt.Errorf("dimension %d, want %d", d, st.dim)
	}
	n := int(r.U32())
	hasGraph := r.U8()
	if n > r.Remaining()/(4+4*st.dim) {
		return nil, fmt.Errorf("count %d does not fit the file", n)
	}
	if hasGraph > 1 {
		return nil, fmt.Errorf("bad graph flag %d", hasGraph)
	}
	vec := make([]float32, st.dim)
	for range n {
		id := r.String()
		for j := range vec {
			vec[j] = r.F32()
		}
		if r.Err() != nil {
			return nil, r.Err()
		}
		if err := st.check(vec); err != nil {
			return nil, fmt.Errorf("id %q: %w", id, err)
		}
		if _, dup := st.live[id]; dup {
			return nil, fmt.Errorf("duplicate id %q", id)
		}
		st.add(id, vec)
	}
	var g *graph
	if hasGraph == 1 {
		if g, err = decodeGraph(r, n); err != nil {
			return nil, err
		}
	}
	return g, r.Done()
}

func decodeGraph(r *binfile.Reader, n int) (*graph, error) {
	g := &graph{m: int(r.U32()), entry: int32(r.U32()), top: int(r.U32())}
	if n > 0 && (g.entry < 0 || int(g.entry) >= n) || n == 0 && g.entry != -1 {
		return nil, fmt.Errorf("graph entry point %d out of range", g.entry)
	}
	g.level = make([]uint8, n)
	g.links = make([][][]int32, n)
	for i := range n {
		lv := r.U8()
		if lv > maxLevel {
			return nil, fmt.Errorf("node %d level %d out of range", i, lv)
		}
		g.level[i] = lv
		g.links[i] = make([][]int32, int(lv)+1)
		for l := range g.links[i] {
			ls := make([]int32, r.U16())
			for j := range ls {
				x := r.U32()
				if int64(x) >= int64(n) {
					return nil, fmt.Errorf("node %d links to %d, out of range", i, x)
				}
				ls[j] = int32(x)
			}
			g.links[i][l] = ls
		}
		if r.Err() != nil {
			return nil, r.Err()
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
	if len(g.links) == 0 && g.top != 0 {
		return nil, errors.New("empty graph with a nonzero top level")
	}
	return g, nil
}
