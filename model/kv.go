package model

import (
	"fmt"
	"slices"

	"github.com/blendrag/blendrag/kernels"
)

// KV is a key/value cache for a run of rows: for every layer, each row's key
// (after RoPE at the row's position) and value, plus each row's token id and
// absolute position. Rows need not have consecutive or unique positions: a
// fused context may place chunks anywhere (APE reuses positions), and
// attention masks by position — a query at position p sees keys at positions
// ≤ p.
//
// Layout: K[l] and V[l] are [Len() × KVDim] row-major float32.
//
// The host cache is the source of truth. A device backend may keep a copy
// of it in device memory between calls and refresh only what changed: the
// cache's own methods (Grow, Truncate, Shift, Append) keep that copy's
// record up to date, and code that rewrites the keys or values of existing
// rows directly must say so with Changed or ChangedLayer. Appending rows
// needs no call.
type KV struct {
	KVDim  int
	Tokens []int32
	Pos    []int32
	K, V   [][]float32

	mirror kvMirror
}

// kvMirror is what a device backend's copy of a KV holds: for the backend
// owner, row r of layer l of the copy equals the host's iff r < len(cur[l])
// and cur[l][r]. Every row below low[l] is current (where a scan for stale
// rows starts). Changes to existing rows clear their flags; appended rows
// start stale, since cur[l] does not reach them.
type kvMirror struct {
	owner any
	cur   [][]bool
	low   []int
}

// Changed records that the keys or values of rows [lo, hi) were rewritten
// in every layer by code outside KV's methods, so that a device copy of
// them is refreshed before its next use.
func (kv *KV) Changed(lo, hi int) {
	for l := range kv.mirror.cur {
		kv.ChangedLayer(l, lo, hi)
	}
}

// ChangedLayer is Changed for layer l alone.
func (kv *KV) ChangedLayer(l, lo, hi int) {
	if l < 0 || l >= len(kv.mirror.cur) {
		return
	}
	cur := kv.mirror.cur[l]
	lo, hi = max(lo, 0), min(hi, len(cur))
	if lo >= hi {
		return
	}
	clear(cur[lo:hi])
	kv.mirror.low[l] = min(kv.mirror.low[l], lo)
}

// claimMirror makes owner the holder of kv's device copy and returns its
// record, emptied (every row stale) if another owner, or none, held it.
func (kv *KV) claimMirror(owner any) *kvMirror {
	if kv.mirror.owner != owner || len(kv.mirror.cur) != kv.Layers() {
		kv.mirror = kvMirror{owner: owner, cur: make([][]bool, kv.Layers()), low: make([]int, kv.Layers())}
	}
	return &kv.mirror
}

// setCurrent records rows [lo, hi) of layer l of the device copy as equal
// to the host's.
func (m *kvMirror) setCurrent(l, lo, hi int) {
	if lo >= hi {
		return
	}
	if n := len(m.cur[l]); hi > n {
		m.cur[l] = append(m.cur[l], make([]bool, hi-n)...)
	}
	cur := m.cur[l]
	for r := max(lo, m.low[l]); r < hi; r++ { // rows below low are current
		cur[r] = true
	}
	if lo <= m.low[l] {
		r := max(m.low[l], hi)
		for r < len(cur) && cur[r] {
			r++
		}
		m.low[l] = r
	}
}

// current reports whether row r of layer l of the device copy is recorded
// as equal to the host's.
func (m *kvMirror) current(l, r int) bool {
	return l < len(m.cur) && r < len(m.cur[l]) && m.cur[l][r]
}

// stale calls f for each run [lo, hi) of rows below n that layer l of the
// device copy lacks, in order, and stops at f's first error.
func (m *kvMirror) stale(l, n int, f func(lo, hi int) error) error {
	cur := m.cur[l]
	for r := m.low[l]; r < n; {
		if r < len(cur) && cur[r] {
			r++
			continue
		}
		hi := r + 1
		for hi < n && (hi >= len(cur) || !cur[hi]) {
			hi++
		}
		if err := f(r, hi); err != nil {
			return err
		}
		r = hi
	}
	return nil
}

// truncate forgets rows from n on.
func (m *kvMirror) truncate(n int) {
	for l := range m.cur {
		m.cur[l] = m.cur[l][:min(len(m.cur[l]), n)]
		m.low[l] = min(m.low[l], n)
	}
}

// NewKV returns an empty cache for a model with the given shape.
func NewKV(c Config) *KV {
	return &KV{KVDim: c.KVDim(), K: make([][]float32, c.Layers), V: make([][]float32, c.Layers)}
}

// Len is the number of rows in the cache.
func (kv *KV) Len() int { return len(kv.Pos) }

// Layers is the number of layers the cache holds.
func (kv *KV) Layers() int { return len(kv.K) }

// Grow appends n rows with the given tokens and positions and zero K/V, and
// returns the index of the first new row. The caller fills K/V (a forward
// pass does).
func (kv *KV) Grow(tokens, pos []int32) int {
	if len(tokens) != len(pos) {
		panic(fmt.Sprintf("model: KV.Grow with %d tokens and %d positions", len(tokens), len(pos)))
	}
	first := kv.Len()
	kv.Tokens = append(kv.Tokens, tokens...)
	kv.Pos = append(kv.Pos, pos...)
	n := len(pos) * kv.KVDim
	for l := range kv.K {
		kv.K[l] = slices.Grow(kv.K[l], n)[:len(kv.K[l])+n]
		kv.V[l] = slices.Grow(kv.V[l], n)[:len(kv.V[l])+n]
		clear(kv.K[l][first*kv.KVDim:])
		clear(kv.V[l][first*kv.KVDim:])
	}
	return first
}

// Truncate drops every row from index n on. It is how a speculative decoder
// rolls back rejected tokens.
func (kv *KV) Truncate(n int) {
	if n < 0 || n > kv.Len() {
		panic(fmt.Sprintf("model: KV.Truncate(%d) of %d rows", n, kv.Len()))
	}
	kv.mirror.truncate(n)
	kv.Tokens = kv.Tokens[:n]
	kv.Pos = kv.Pos[:n]
	for l := range kv.K {
		kv.K[l] = kv.K[l][:n*kv.KVDim]
		kv.V[l] = kv.V[l][:n*kv.KVDim]
	}
}

// Slice returns a copy of rows [lo, hi).
func (kv *KV) Slice(lo, hi int) *KV {
	if lo < 0 || hi < lo || hi > kv.Len() {
		panic(fmt.Sprintf("model: KV.Slice(%d, %d) of %d rows", lo, hi, kv.Len()))
	}
	out := &KV{
		KVDim:  kv.KVDim,
		Tokens: slices.Clone(kv.Tokens[lo:hi]),
		Pos:    slices.Clone(kv.Pos[lo:hi]),
		K:      make([][]float32, len(kv.K)),
		V:      make([][]float32, len(kv.V)),
	}
	for l := range kv.K {
		out.K[l] = slices.Clone(kv.K[l][lo*kv.KVDim : hi*kv.KVDim])
		out.V[l] = slices.Clone(kv.V[l][lo*kv.KVDim : hi*kv.KVDim])
	}
	return out
}

// Clone returns a deep copy of the cache.
func (kv *KV) Clone() *KV { return kv.Slice(0, kv.Len()) }

// Append adds the rows of other after the rows of kv, unchanged (positions
// and keys are not shifted; use Shift first to move a block).
func (kv *KV) Append(other *KV) error {
	if other.KVDim != kv.KVDim || len(other.K) != len(kv.K) {
		return fmt.Errorf("model: appending KV of %d layers × %d to KV of %d layers × %d", len(other.K), other.KVDim, len(kv.K), kv.KVDim)
	}
	kv.Tokens = append(kv.Tokens, other.Tokens...)
	kv.Pos = append(kv.Pos, other.Pos...)
	for l := range kv.K {
		kv.K[l] = append(kv.K[l], other.K[l]...)
		kv.V[l] = append(kv.V[l], other.V[l]...)
	}
	return nil
}

// Concat returns a new cache holding the rows of each part in order.
func Concat(parts ...*KV) (*KV, error) {
	if len(parts) == 0 {
		return nil, fmt.Errorf("model: Concat of no caches")
	}
	out := &KV{KVDim: parts[0].KVDim, K: make([][]float32, len(parts[0].K)), V: make([][]float32, len(parts[0].V))}
	for _, p := range parts {
		if err := out.Append(p); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Shift moves rows [lo, hi) by delta positions: each key is rotated by
// delta·θ_i (RoPE(k, p+Δ) = R(Δ·θ_i)·RoPE(k, p)) and each position increased
// by delta. Values do not depend on position and are unchanged.
func (kv *KV) Shift(lo, hi, delta int, c Config) error {
	if lo < 0 || hi < lo || hi > kv.Len() {
		return fmt.Errorf("model: KV.Shift rows [%d, %d) of %d", lo, hi, kv.Len())
	}
	if delta == 0 {
		return nil
	}
	for r := lo; r < hi; r++ {
		p := int64(kv.Pos[r]) + int64(delta)
		if p < 0 || p > 1<<30 {
			return fmt.Errorf("model: shifting row %d from position %d by %d leaves the valid range", r, kv.Pos[r], delta)
		}
	}
	rope, err := kernels.NewRoPETable(c.HeadDim, c.RopeBase, c.RopeNeox, nil)
	if err != nil {
		return fmt.Errorf("model: %w", err)
	}
	cos := make([]float32, c.HeadDim/2)
	sin := make([]float32, c.HeadDim/2)
	rope.CosSin(delta, cos, sin)
	for l := range kv.K {
		for r := lo; r < hi; r++ {
			rope.Rotate(kv.K[l][r*kv.KVDim:(r+1)*kv.KVDim], c.KVHeads, cos, sin)
		}
	}
	for r := lo; r < hi; r++ {
		kv.Pos[r] += int32(delta)
	}
	kv.Changed(lo, hi)
	return nil
}
