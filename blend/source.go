package blend

import (
	"context"
	"fmt"
	"slices"

	"github.com/blendrag/blendrag/model"
)

// Source supplies cached chunk KV layer by layer. LoadLayer(l) returns, for
// every chunk in prompt order, its keys and values at layer l as
// [rows × KVDim] row-major slices, at the positions the chunk was encoded at
// (|P|.., see EncodeChunk). Layers are requested in ascending order, each
// once. The caller does not modify the returned slices.
type Source interface {
	LoadLayer(l int) (k, v [][]float32, err error)
}

// MemorySource serves chunk KVs held in memory (for example from
// EncodeChunk).
func MemorySource(chunks []*model.KV) Source { return memorySource(chunks) }

type memorySource []*model.KV

func (s memorySource) LoadLayer(l int) (k, v [][]float32, err error) {
	k = make([][]float32, len(s))
	v = make([][]float32, len(s))
	for i, c := range s {
		if c == nil || l < 0 || l >= c.Layers() {
			return nil, nil, fmt.Errorf("blend: chunk %d has no layer %d", i, l)
		}
		k[i], v[i] = c.K[l], c.V[l]
	}
	return k, v, nil
}

// Prefetch wraps src so that layers are read ahead in a goroutine, up to
// depth layers beyond the one last requested: while the caller computes
// layer l, layer l+1 is being read. Layers must be requested in order
// 0..layers−1. Cancel ctx to stop the reader early (for example when the
// prefill fails); after cancellation LoadLayer returns ctx's error.
func Prefetch(ctx context.Context, src Source, layers, depth int) Source {
	depth = max(depth, 1)
	p := &prefetcher{ctx: ctx, ch: make(chan loaded, depth), layers: layers}
	go func() {
		defer close(p.ch)
		for l := 0; l < layers; l++ {
			k, v, err := src.LoadLayer(l)
			select {
			case p.ch <- loaded{l, k, v, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return p
}

type loaded struct {
	l    int
	k, v [][]float32
	err  error
}

type prefetcher struct {
	ctx    context.Context
	ch     chan loaded
	layers int
	next   int
}

func (p *prefetcher) LoadLayer(l int) (k, v [][]float32, err error) {
	if l != p.next {
		return nil, nil, fmt.Errorf("blend: prefetching source asked for layer %d, next is %d", l, p.next)
	}
	select {
	case r, ok := <-p.ch:
		if !ok {
			if err := p.ctx.Err(); err != nil {
				return nil, nil, err
			}
			return nil, nil, fmt.Errorf("blend: prefetching source has no layer %d (of %d)", l, p.layers)
		}
		p.next++
		if r.err != nil {
			return nil, nil, fmt.Errorf("blend: reading layer %d: %w", l, r.err)
		}
		return r.k, r.v, nil
	case <-p.ctx.Done():
		return nil, nil, p.ctx.Err()
	}
}

// Override serves the chunks in over (by prompt index) from memory and every
// other chunk from src; src may return nil for an overridden chunk. It is how
// a chunk whose stored KV is missing or corrupt is recomputed (EncodeChunk)
// and fused with the rest.
func Override(src Source, over map[int]*model.KV) Source {
	return overrideSource{src, over}
}

type overrideSource struct {
	src  Source
	over map[int]*model.KV
}

func (s overrideSource) LoadLayer(l int) (k, v [][]float32, err error) {
	if k, v, err = s.src.LoadLayer(l); err != nil {
		return nil, nil, err
	}
	if len(k) != len(v) {
		return nil, nil, fmt.Errorf("blend: source gave %d keys and %d values at layer %d", len(k), len(v), l)
	}
	k, v = slices.Clone(k), slices.Clone(v)
	for i, c := range s.over {
		if i < 0 || i >= len(k) {
			return nil, nil, fmt.Errorf("blend: override of chunk %d, the source has %d", i, len(k))
		}
		if c == nil || l < 0 || l >= c.Layers() {
			return nil, nil, fmt.Errorf("blend: override of chunk %d has no layer %d", i, l)
		}
		k[i], v[i] = c.K[l], c.V[l]
	}
	return k, v, nil
}
