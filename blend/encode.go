package blend

import (
	"context"
	"fmt"

	"github.com/blendrag/blendrag/model"
)

// EncodePrefix prefills the shared prefix P at positions 0..|P|−1 and returns
// its KV. An empty prefix gives an empty cache.
func EncodePrefix(m *model.Model, prefix []int32) (*model.KV, error) {
	return EncodePrefixOn(nil, m, prefix)
}

// EncodePrefixOn is EncodePrefix computed on backend b (which must run m;
// nil: the CPU).
func EncodePrefixOn(b model.Backend, m *model.Model, prefix []int32) (*model.KV, error) {
	b, err := backendFor(m, b)
	if err != nil {
		return nil, err
	}
	kv := model.NewKV(m.Config)
	if len(prefix) == 0 {
		return kv, nil
	}
	if _, err := b.Forward(kv, prefix, model.Positions(0, len(prefix)), false); err != nil {
		return nil, fmt.Errorf("blend: encoding prefix: %w", err)
	}
	return kv, nil
}

// EncodeChunk prefills one chunk segment on its own after P — attending to
// P's KV, at positions |P|..|P|+n−1 — and returns only the chunk's rows, which
// is what the KV store keeps per chunk. prefix is not modified.
func EncodeChunk(m *model.Model, prefix *model.KV, chunk []int32) (*model.KV, error) {
	return EncodeChunkOn(nil, m, prefix, chunk)
}

// EncodeChunkOn is EncodeChunk computed on backend b (which must run m;
// nil: the CPU).
func EncodeChunkOn(b model.Backend, m *model.Model, prefix *model.KV, chunk []int32) (*model.KV, error) {
	b, err := backendFor(m, b)
	if err != nil {
		return nil, err
	}
	if len(chunk) == 0 {
		return nil, fmt.Errorf("blend: encoding an empty chunk")
	}
	if err := checkPrefixKV(m, prefix, nil); err != nil {
		return nil, err
	}
	kv := prefix.Clone()
	n := prefix.Len()
	if _, err := b.Forward(kv, chunk, model.Positions(n, len(chunk)), false); err != nil {
		return nil, fmt.Errorf("blend: encoding chunk of %d tokens: %w", len(chunk), err)
	}
	return kv.Slice(n, kv.Len()), nil
}

// checkPrefixKV checks that kv is a cache for m holding rows at positions
// 0..Len−1 and, when tokens is not nil, exactly those tokens.
func checkPrefixKV(m *model.Model, kv *model.KV, tokens []int32) error {
	if kv == nil {
		return fmt.Errorf("blend: prefix KV is nil")
	}
	if kv.KVDim != m.Config.KVDim() || kv.Layers() != m.Config.Layers {
		return fmt.Errorf("blend: prefix KV of %d layers × %d does not fit the model (%d × %d)", kv.Layers(), kv.KVDim, m.Config.Layers, m.Config.KVDim())
	}
	for i, p := range kv.Pos {
		if int(p) != i {
			return fmt.Errorf("blend: prefix KV row %d is at position %d, want %d", i, p, i)
		}
	}
	if tokens == nil {
		return nil
	}
	if len(tokens) != kv.Len() {
		return fmt.Errorf("blend: prefix KV has %d rows, the prefix segment %d tokens", kv.Len(), len(tokens))
	}
	for i, t := range tokens {
		if kv.Tokens[i] != t {
			return fmt.Errorf("blend: prefix KV row %d holds token %d, the prefix segment %d", i, kv.Tokens[i], t)
		}
	}
	return nil
}

// PrefillEncoded encodes each of seg's chunks after prefix on opt.Backend
// (EncodeChunkOn) and fuses them by opt: Prefill for a model whose chunk KV
// is not cached, such as a RAPID draft model.
func PrefillEncoded(ctx context.Context, m *model.Model, seg Segments, prefix *model.KV, opt Options) (*Result, error) {
	kvs := make([]*model.KV, len(seg.Chunks))
	for i, c := range seg.Chunks {
		kv, err := EncodeChunkOn(opt.Backend, m, prefix, c)
		if err != nil {
			return nil, fmt.Errorf("blend: chunk %d KV: %w", i, err)
		}
		kvs[i] = kv
	}
	return Prefill(ctx, m, seg, prefix, MemorySource(kvs), opt)
}
