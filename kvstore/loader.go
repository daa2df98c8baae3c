package kvstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// ChunkMeta describes one loaded chunk.
type ChunkMeta struct {
	Rows   int
	Pos    []int32 // absolute positions of the rows, as stored
	Tokens []int32
}

// Loader streams the KV of several chunks layer by layer from one consistent
// snapshot of the store: a background goroutine reads and decodes layer l+1
// while the caller works on layer l. A Loader is used by one goroutine.
type Loader struct {
	s      *Store
	keys   []Key
	metas  []*meta
	layers int
	out    chan layerData
	done   chan struct{}
	wg     sync.WaitGroup
	next   int
	err    error
	once   sync.Once
	// read is the total time spent reading and decoding layers
	// (nanoseconds), apart from any time the reader waited on the caller.
	readNS atomic.Int64
}

// layerData is one decoded layer of every chunk, or the error that ended
// the stream.
type layerData struct {
	k, v [][]float32
	err  error
}

// Load starts streaming the KV of keys (stored under the store's codec). It
// reads every key's metadata first: when some are missing or corrupt it
// returns a *ChunkError naming them (wrapping ErrNotFound / ErrCorrupt;
// corrupt chunks are deleted) and streams nothing. All chunks must have the
// same number of layers and KV dimension. The Loader must be closed.
func (s *Store) Load(ctx context.Context, keys []Key) (*Loader, error) {
	if len(keys) == 0 {
		return nil, fmt.Errorf("kvstore: Load of no chunks")
	}
	txn := s.db.NewTransaction(false)
	ld := &Loader{s: s, keys: keys, metas: make([]*meta, len(keys)), out: make(chan layerData, 1), done: make(chan struct{})}
	cerr := &ChunkError{}
	for i, k := range keys {
		m, err := s.readMeta(txn, k)
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
			cerr.Missing = append(cerr.Missing, k)
		case errors.Is(err, errBadRecord):
			cerr.Corrupt = append(cerr.Corrupt, k)
			if cerr.Detail == nil {
				cerr.Detail = err
			}
		case err != nil:
			txn.Discard()
			return nil, fmt.Errorf("kvstore: reading %v: %w", k, err)
		}
		ld.metas[i] = m
	}
	if len(cerr.Missing)+len(cerr.Corrupt) > 0 {
		txn.Discard()
		for _, k := range cerr.Corrupt {
			if err := s.drop(k, s.codec, 0); err != nil {
				s.log.Warn("kvstore: deleting a corrupt chunk", "chunk", k.Chunk, "err", err)
			}
		}
		return nil, cerr
	}
	ld.layers = ld.metas[0].Layers()
	for i, m := range ld.metas {
		if m.Layers() != ld.layers || m.Dim != ld.metas[0].Dim {
			txn.Discard()
			return nil, fmt.Errorf("kvstore: %v has %d layers × %d, %v has %d × %d", keys[i], m.Layers(), m.Dim, keys[0], ld.layers, ld.metas[0].Dim)
		}
	}
	s.mu.Lock()
	for _, k := range keys {
		if e, ok := s.index[string(dbKey(tagMeta, k, s.codec, 0))]; ok {
			s.touchLocked(e)
		}
	}
	s.mu.Unlock()
	ld.wg.Add(1)
	go ld.run(ctx, txn)
	return ld, nil
}

// readMeta reads and verifies the metadata record of k.
func (s *Store) readMeta(txn *badger.Txn, k Key) (*meta, error) {
	item, err := txn.Get(dbKey(tagMeta, k, s.codec, 0))
	if err != nil {
		return nil, err
	}
	var m *meta
	err = item.Value(func(v []byte) error {
		var err error
		m, err = decodeMeta(v, s.codec)
		return err
	})
	return m, err
}

// run reads and decodes the layers in order, handing each over through
// ld.out; it stops at the first error, on Close or when ctx ends.
func (ld *Loader) run(ctx context.Context, txn *badger.Txn) {
	defer ld.wg.Done()
	defer txn.Discard()
	for l := 0; l < ld.layers; l++ {
		start := time.Now()
		d := ld.read(txn, l)
		ld.readNS.Add(int64(time.Since(start)))
		select {
		case ld.out <- d:
		case <-ld.done:
			return
		case <-ctx.Done():
			select {
			case ld.out <- layerData{err: fmt.Errorf("kvstore: loading layer %d: %w", l, ctx.Err())}:
			case <-ld.done:
			}
			return
		}
		if d.err != nil {
			return
		}
	}
}

// read reads and decodes layer l of every chunk. A value that is missing or
// fails verification makes its chunk corrupt: it is deleted and named in
// the error.
func (ld *Loader) read(txn *badger.Txn, l int) layerData {
	d := layerData{k: make([][]float32, len(ld.keys)), v: make([][]float32, len(ld.keys))}
	for i, key := range ld.keys {
		m := ld.metas[i]
		k, v := make([]float32, m.Rows*m.Dim), make([]float32, m.Rows*m.Dim)
		err := ld.s.readValue(txn, dbKey(tagLayer, key, ld.s.codec, l), l, func(b []byte) error {
			return decodeLayer(b, m, l, k, v)
		})
		if errors.Is(err, badger.ErrKeyNotFound) {
			err = fmt.Errorf("%w: layer %d missing", errBadRecord, l)
		}
		if err != nil {
			if errors.Is(err, errBadRecord) {
				if derr := ld.s.drop(key, ld.s.codec, m.Layers()); derr != nil {
					ld.s.log.Warn("kvstore: deleting a corrupt chunk", "chunk", key.Chunk, "err", derr)
				}
				return layerData{err: &ChunkError{Corrupt: []Key{key}, Detail: err}}
			}
			return layerData{err: fmt.Errorf("kvstore: reading %v layer %d: %w", key, l, err)}
		}
		d.k[i], d.v[i] = k, v
	}
	return d
}

// Chunks is the number of chunks loaded.
func (ld *Loader) Chunks() int { return len(ld.keys) }

// Layers is the number of layers every chunk has.
func (ld *Loader) Layers() int { return ld.layers }

// KVDim is the width of every row of K and V.
func (ld *Loader) KVDim() int { return ld.metas[0].Dim }

// Meta describes chunk i (in the order of the keys given to Load). The
// caller must not modify the slices.
func (ld *Loader) Meta(i int) ChunkMeta {
	m := ld.metas[i]
	return ChunkMeta{Rows: m.Rows, Pos: m.Pos, Tokens: m.Tokens}
}

// LoadLayer returns layer l of every chunk: k[i] and v[i] are chunk i's
// [Rows × KVDim] keys and values, owned by the caller. Layers must be
// requested in order 0, 1, …; it blocks until layer l is decoded. After an
// error every later call returns the same error; a *ChunkError names a
// corrupt chunk, which has been deleted.
func (ld *Loader) LoadLayer(l int) (k, v [][]float32, err error) {
	if ld.err != nil {
		return nil, nil, ld.err
	}
	if l != ld.next || l >= ld.layers {
		return nil, nil, fmt.Errorf("kvstore: LoadLayer(%d): the next layer is %d of %d", l, ld.next, ld.layers)
	}
	d := <-ld.out
	if d.err != nil {
		ld.err = d.err
		return nil, nil, d.err
	}
	ld.next++
	return d.k, d.v, nil
}

// ReadTime is the time the background reader has spent reading and
// decoding the layers delivered so far (or in flight), not counting time
// it waited for the caller to take a layer: the raw load cost that
// CacheBlend's loading controller weighs against recompute. Safe to call
// from any goroutine.
func (ld *Loader) ReadTime() time.Duration { return time.Duration(ld.readNS.Load()) }

// Close stops the background reader and releases the snapshot. It is safe
// to call more than once.
func (ld *Loader) Close() {
	ld.once.Do(func() { close(ld.done) })
	ld.wg.Wait()
}
