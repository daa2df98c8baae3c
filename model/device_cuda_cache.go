//go:build (cuda || cudaemu) && cgo

package model

import (
	"errors"
	"fmt"

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
		dc.k, dc.v = make([]*cuda.Buffer, c.Layers), make([]*cuda.Buffer, c.Layers)
		for l := range dc.k {
			var err error
			if dc.k[l], err = b.d.Alloc(int64(capRows) * int64(c.KVDim()) * 4); err == nil {
				dc.v[l], err = b.d.Alloc(int64(capRows) * int64(c.KVDim()) * 4)
			}
			if err != nil {
				return nil, nil, errors.Join(fmt.Errorf("device cache of %d rows: %w", capRows, err), dc.free(b.d))
			}
		}
		dc.kv, dc.capRows = kv, capRows
		kv.mirror = kvMirror{}
	}
	return dc, kv.claimMirror(dc), nil
}

// uploadRows copies rows [lo, hi) of layer l of dc's host cache into dc.
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
	if err := errors.Join(b.d.UploadF32(kb, kv.K[l][lo*kv.KVDim:hi*kv.KVDim]), b.d.UploadF32(vb, kv.V[l][lo*kv.KVDim:hi*kv.KVDim])); err != nil {
		return err
	}
	b.uploadedRows += int64(hi - lo)
	return nil
}
