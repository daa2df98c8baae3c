//go:build (cuda || cudaemu) && cgo

package model

import (
	"errors"
	"fmt"

	"github.com/blendrag/blendrag/kernels"
	"github.com/blendrag/blendrag/kernels/cuda"
)

// maxDeviceCaches is how many host caches a CUDA backend keeps device
// copies of at once: RAPID alternates between the target's context and
// the drafter's, and a third covers a short-lived one (a cross-encoder
// pass) without evicting either. The least recently bound is replaced.
const maxDeviceCaches = 3

// devCache is the device copy of one host cache kv: per layer, keys and
// values for capRows rows. kv's mirror record, owned by this devCache,
// says which rows are current.
type devCache struct {
	kv      *KV
	k, v    []*cuda.Buffer
	capRows int
	used    uint64 // the backend's bind count when last bound
}

// free frees the copy's buffers; the devCache then holds no cache.
func (dc *devCache) free(d *cuda.Device) error {
	var errs []error
	for l := range dc.k {
		errs = append(errs, d.Free(dc.k[l]), d.Free(dc.v[l]))
	}
	dc.kv, dc.k, dc.v, dc.capRows = nil, nil, nil, 0
	return errors.Join(errs...)
}

// alloc gives dc room for rows rows of every layer (dc must hold none);
// on failure it frees what it allocated.
func (dc *devCache) alloc(d *cuda.Device, c Config, rows int) error {
	dc.k, dc.v = make([]*cuda.Buffer, c.Layers), make([]*cuda.Buffer, c.Layers)
	for l := range dc.k {
		var err error
		if dc.k[l], err = d.Alloc(int64(rows) * int64(c.KVDim()) * 4); err == nil {
			dc.v[l], err = d.Alloc(int64(rows) * int64(c.KVDim()) * 4)
		}
		if err != nil {
			return errors.Join(err, dc.free(d))
		}
	}
	return nil
}

// withRoom runs alloc, and when it fails frees device memory the backend
// only keeps for later — first the whole chunk tier, then the device
// copies of other caches than keep, least recently bound first — and
// runs it again, until it succeeds or nothing is left to free: what a
// pass needs now comes before what might save a copy later.
func (b *cudaBackend) withRoom(keep *devCache, alloc func() error) error {
	for {
		err := alloc()
		if err == nil || errors.Is(err, kernels.ErrShape) || errors.Is(err, kernels.ErrUnsupported) {
			return err // not for want of memory
		}
		switch victim := b.idleCache(keep); {
		case b.tier.order.Len() > 0:
			err = errors.Join(err, b.tier.drop(b.d))
		case victim != nil:
			err = errors.Join(err, victim.free(b.d))
		default:
			return err
		}
		if b.d.Sync() != nil { // a device that fails is not short of memory
			return err
		}
	}
}

// idleCache returns the least recently bound device copy that holds
// memory, other than keep, or nil.
func (b *cudaBackend) idleCache(keep *devCache) *devCache {
	var victim *devCache
	for _, c := range b.caches {
		if c != keep && c.capRows > 0 && (victim == nil || c.used < victim.used) {
			victim = c
		}
	}
	return victim
}

// bindCache returns the device copy of kv, with room for its rows, and
// kv's record of which rows the copy holds up to date. A cache without a
// copy takes a free one or the least recently bound, and starts with
// every row stale, as does a copy that had to grow. Capacity at least
// doubles when it grows, up to the model's context length, so decoding
// token by token reallocates rarely.
func (b *cudaBackend) bindCache(kv *KV) (*devCache, *kvMirror, error) {
	b.binds++
	var dc *devCache
	for _, c := range b.caches {
		if c.kv == kv {
			dc = c
		}
	}
	if dc == nil {
		if len(b.caches) < maxDeviceCaches {
			dc = &devCache{}
			b.caches = append(b.caches, dc)
		} else {
			dc = b.caches[0]
			for _, c := range b.caches {
				if c.used < dc.used {
					dc = c
				}
			}
		}
		dc.kv = kv
		kv.mirror = kvMirror{} // whatever it says is not about this copy
	}
	dc.used = b.binds
	c := b.m.Config
	if keys := kv.Len(); keys > dc.capRows {
		capRows := max(keys, min(2*dc.capRows, c.Context), 256)
		if err := dc.free(b.d); err != nil {
			return nil, nil, err
		}
		err := b.withRoom(dc, func() error {
			if err := dc.alloc(b.d, c, capRows); err == nil || capRows == keys {
				return err
			}
			capRows = keys // no room to grow ahead
			return dc.alloc(b.d, c, capRows)
		})
		if err != nil {
			return nil, nil, fmt.Errorf("device cache of %d rows: %w", capRows, err)
		}
		dc.kv, dc.capRows = kv, capRows
		kv.mirror = kvMirror{}
	}
	return dc, kv.claimMirror(dc), nil
}

// uploadRows copies rows [lo, hi) of layer l of dc's host cache into dc,
// queued after the device's earlier work without waiting for it, so the
// host goes on (e.g. to load the next layer's chunks) while the device
// computes.
func (b *cudaBackend) uploadRows(dc *devCache, l, lo, hi int) error {
	if lo >= hi {
		return nil
	}
	kv := dc.kv
	kd := int64(kv.KVDim)
	off, n := int64(lo)*kd*4, int64(hi-lo)*kd*4
	kb, err := dc.k[l].View(off, n)
	if err != nil {
		return err
	}
	vb, err := dc.v[l].View(off, n)
	if err != nil {
		return err
	}
	if err := errors.Join(b.d.UploadF32Queued(kb, kv.K[l][lo*kv.KVDim:hi*kv.KVDim]), b.d.UploadF32Queued(vb, kv.V[l][lo*kv.KVDim:hi*kv.KVDim])); err != nil {
		return err
	}
	b.uploadedRows += int64(hi - lo)
	return nil
}
