//go:build (cuda || cudaemu) && cgo

package model

import (
	"container/list"
	"errors"
	"fmt"

	"github.com/blendrag/blendrag/kernels/cuda"
)

// chunkTier is the CUDA backend's device-memory tier of chunk KV: for
// (chunk id, layer), the chunk's keys (at their cached positions) and
// values, least recently used first out within a byte budget.
type chunkTier struct {
	budget, used int64
	order        *list.List // of *tierEntry, most recently used first
	byKey        map[tierKey]*list.Element
	hits, misses int64
}

type tierKey struct {
	id    string
	layer int
}

type tierEntry struct {
	key  tierKey
	k, v *cuda.Buffer
	rows int
}

func (e *tierEntry) bytes() int64 { return e.k.Bytes() + e.v.Bytes() }

func newChunkTier(budget int64) chunkTier {
	return chunkTier{budget: budget, order: list.New(), byKey: map[tierKey]*list.Element{}}
}

// get returns key's entry, marked used, or nil.
func (t *chunkTier) get(key tierKey) *tierEntry {
	el, ok := t.byKey[key]
	if !ok {
		return nil
	}
	t.order.MoveToFront(el)
	return el.Value.(*tierEntry)
}

// evict frees least recently used entries until bytes more fit the budget
// (all of them for a budget ≤ 0).
func (t *chunkTier) evict(d *cuda.Device, bytes int64) error {
	var errs []error
	for t.order.Len() > 0 && (t.budget <= 0 || t.used+bytes > t.budget) {
		errs = append(errs, t.dropOldest(d))
	}
	return errors.Join(errs...)
}

// drop frees every entry, whatever the budget.
func (t *chunkTier) drop(d *cuda.Device) error {
	var errs []error
	for t.order.Len() > 0 {
		errs = append(errs, t.dropOldest(d))
	}
	return errors.Join(errs...)
}

// dropOldest frees the least recently used entry.
func (t *chunkTier) dropOldest(d *cuda.Device) error {
	last := t.order.Back()
	e := last.Value.(*tierEntry)
	t.order.Remove(last)
	delete(t.byKey, e.key)
	t.used -= e.bytes()
	return errors.Join(d.Free(e.k), d.Free(e.v))
}

// put uploads k and v as key's entry (asynchronously), evicting to make
// room, and returns it; nil (and no error) when they do not fit the budget
// at all or the device has no memory left for them.
func (t *chunkTier) put(d *cuda.Device, key tierKey, k, v []float32, rows int) (*tierEntry, error) {
	bytes := int64(len(k)+len(v)) * 4
	if bytes > t.budget {
		return nil, nil
	}
	if err := t.evict(d, bytes); err != nil {
		return nil, err
	}
	kb, err := d.Alloc(int64(len(k)) * 4)
	if err != nil {
		return nil, nil // out of device memory: serve from the host instead
	}
	vb, err := d.Alloc(int64(len(v)) * 4)
	if err != nil {
		return nil, d.Free(kb)
	}
	// New buffers: nothing queued uses them, so the copies need not wait
	// for the kernels before them (the chunk loader runs while the GPU
	// computes the previous layer).
	if err := errors.Join(d.UploadF32Async(kb, k), d.UploadF32Async(vb, v)); err != nil {
		return nil, errors.Join(err, d.Free(kb), d.Free(vb))
	}
	e := &tierEntry{key: key, k: kb, v: vb, rows: rows}
	t.byKey[key] = t.order.PushFront(e)
	t.used += e.bytes()
	return e, nil
}

// PlaceChunk fills rows [row, row+n) of layer l of the device copy of kv
// with chunk id's keys and values: copied within the device from the tier
// when it holds them, else uploaded from k and v (and kept in the tier
// while the budget allows); the keys are then rotated by delta on the
// device (RoPEShift, within a few ulp of KV.Shift's rotation). The rows
// count as current until the host changes them.
func (b *cudaBackend) PlaceChunk(kv *KV, l, row int, id string, k, v []float32, delta int) (bool, error) {
	if b.d == nil {
		return false, fmt.Errorf("model: %s: %w", b.name, cuda.ErrClosed)
	}
	c, kd := b.m.Config, kv.KVDim
	n := len(k) / max(kd, 1)
	switch {
	case kd != c.KVDim() || kv.Layers() != c.Layers:
		return false, fmt.Errorf("model: PlaceChunk: KV of %d layers × %d does not fit model (%d × %d)", kv.Layers(), kd, c.Layers, c.KVDim())
	case l < 0 || l >= c.Layers:
		return false, fmt.Errorf("model: PlaceChunk: layer %d of %d", l, c.Layers)
	case n == 0 || len(k) != n*kd || len(v) != len(k):
		return false, fmt.Errorf("model: PlaceChunk: %d keys and %d values are not whole rows of %d", len(k), len(v), kd)
	case row < 0 || row+n > kv.Len():
		return false, fmt.Errorf("model: PlaceChunk: rows [%d, %d) outside the cache's %d", row, row+n, kv.Len())
	}
	dc, mirror, err := b.bindCache(kv)
	if err != nil {
		return false, fmt.Errorf("model: %s: PlaceChunk: %w", b.name, err)
	}
	key := tierKey{id, l}
	e := b.tier.get(key)
	if e != nil && e.rows != n {
		return false, fmt.Errorf("model: PlaceChunk: chunk %q has %d rows at layer %d, the device tier holds %d", id, n, l, e.rows)
	}
	hit := e != nil
	if hit {
		b.tier.hits++
	} else {
		b.tier.misses++
		if e, err = b.tier.put(b.d, key, k, v, n); err != nil {
			return false, fmt.Errorf("model: %s: device chunk tier: %w", b.name, err)
		}
	}
	off, bytes := int64(row)*int64(kd)*4, int64(n)*int64(kd)*4
	dk, err := dc.k[l].View(off, bytes)
	if err != nil {
		return false, err
	}
	dv, err := dc.v[l].View(off, bytes)
	if err != nil {
		return false, err
	}
	kv.ChangedLayer(l, row, row+n) // until the device rows are written
	s := steps{}
	if e != nil {
		s.run("copy keys", func() error { return b.d.Copy(dk, e.k, bytes) })
		s.run("copy values", func() error { return b.d.Copy(dv, e.v, bytes) })
	} else {
		s.run("upload", func() error { return errors.Join(b.d.UploadF32Queued(dk, k), b.d.UploadF32Queued(dv, v)) })
	}
	if delta != 0 {
		s.run("shift keys", func() error { return b.d.RoPEShift(dk, b.rope, n, c.KVHeads, delta) })
	}
	if s.err != nil {
		return false, fmt.Errorf("model: %s: PlaceChunk %q layer %d: %w", b.name, id, l, s.err)
	}
	mirror.setCurrent(l, row, row+n)
	return hit, nil
}

// SetChunkBudget sets the chunk tier's device memory budget; ≤ 0 frees it.
func (b *cudaBackend) SetChunkBudget(bytes int64) error {
	if b.d == nil {
		return fmt.Errorf("model: %s: %w", b.name, cuda.ErrClosed)
	}
	b.tier.budget = bytes
	if err := b.tier.evict(b.d, 0); err != nil {
		return fmt.Errorf("model: %s: shrinking the chunk tier: %w", b.name, err)
	}
	return nil
}

// ChunkTierStats reports the chunk tier's hits, misses and holdings.
func (b *cudaBackend) ChunkTierStats() ChunkTierStats {
	return ChunkTierStats{Hits: b.tier.hits, Misses: b.tier.misses, Entries: b.tier.order.Len(), Bytes: b.tier.used, Budget: b.tier.budget}
}
