package kvstore

import (
	"container/list"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"golang.org/x/sys/unix"

	"github.com/blendrag/blendrag/model"
)

var (
	// ErrNotFound means no KV is stored for a key (never put, deleted or
	// evicted): the caller computes it and puts it.
	ErrNotFound = errors.New("kvstore: chunk KV not stored")
	// ErrCorrupt means a stored value failed its checksum, was truncated or
	// is missing; the store has deleted the chunk's entries, so the caller
	// recomputes it and puts it again.
	ErrCorrupt = errors.New("kvstore: chunk KV corrupt")
)

// ChunkError is returned (wrapped) when some keys cannot be served. It
// matches ErrNotFound with errors.Is when any key is missing and ErrCorrupt
// when any is corrupt.
type ChunkError struct {
	Missing []Key
	Corrupt []Key
	Detail  error // the first corruption found, if any
}

// Error names the keys.
func (e *ChunkError) Error() string {
	var parts []string
	if len(e.Missing) > 0 {
		parts = append(parts, fmt.Sprintf("%d chunk(s) not stored: %s", len(e.Missing), chunkNames(e.Missing)))
	}
	if len(e.Corrupt) > 0 {
		parts = append(parts, fmt.Sprintf("%d chunk(s) corrupt (%v): %s", len(e.Corrupt), e.Detail, chunkNames(e.Corrupt)))
	}
	return "kvstore: " + strings.Join(parts, "; ")
}

// Is matches ErrNotFound and ErrCorrupt.
func (e *ChunkError) Is(target error) bool {
	return (target == ErrNotFound && len(e.Missing) > 0) || (target == ErrCorrupt && len(e.Corrupt) > 0)
}

// Chunks returns every key named by the error, missing ones first.
func (e *ChunkError) Chunks() []Key { return append(slices.Clone(e.Missing), e.Corrupt...) }

func chunkNames(keys []Key) string {
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k.Chunk
	}
	return strings.Join(names, ", ")
}

// Options configure Open. Zero fields take the defaults.
type Options struct {
	// Codec encodes new values and selects the values served; KV stored
	// under another codec is never served (it ages out by LRU). Default
	// DefaultCodec.
	Codec Codec
	// MemTableSize, BlockCacheSize and IndexCacheSize size Badger for a
	// small host. Defaults 16 MiB, 32 MiB and 16 MiB.
	MemTableSize, BlockCacheSize, IndexCacheSize int64
	// DiskBudget bounds the bytes of chunk KV kept (metadata and encoded
	// layer values; Badger's own overhead comes on top). Beyond it the
	// least recently used chunks are evicted. Default: half the disk space
	// free to unprivileged users at Open.
	DiskBudget int64
	// Logger receives Badger's logs: errors and warnings at their level,
	// info and debug at debug. Default slog.Default().
	Logger *slog.Logger
}

// Store keeps chunk KV caches in a Badger database. It is safe for
// concurrent use.
type Store struct {
	db     *badger.DB
	codec  Codec
	budget int64
	log    *slog.Logger

	// readValue reads the value of a layer key inside txn and passes it to
	// fn. Tests replace it to observe and delay layer reads.
	readValue func(txn *badger.Txn, key []byte, layer int, fn func([]byte) error) error

	putMu sync.Mutex // serialises Puts, so two never interleave their layers

	closeOnce sync.Once
	closeErr  error
	stopGC    chan struct{} // closed by Close
	gcDone    chan struct{}

	mu    sync.Mutex // guards the fields below
	index map[string]*entry
	lru   *list.List // of *entry, most recently used first
	used  int64
	clock int64
}

// entry is the in-memory record of one stored chunk.
type entry struct {
	key     Key
	codec   Codec
	layers  int
	bytes   int64
	lastUse int64
	dirty   bool // lastUse not yet persisted
	elem    *list.Element
}

// Open opens (creating if needed) the store in dir. It rebuilds the LRU
// order from the persisted last-use times (a chunk without one counts as
// used when it was put) and deletes values left by an interrupted Put or an
// older format.
func Open(dir string, opt Options) (*Store, error) {
	if opt.Codec == "" {
		opt.Codec = DefaultCodec
	}
	if _, err := opt.Codec.id(); err != nil {
		return nil, err
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	def := func(v *int64, d int64) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&opt.MemTableSize, 16<<20)
	def(&opt.BlockCacheSize, 32<<20)
	def(&opt.IndexCacheSize, 16<<20)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("kvstore: %w", err)
	}
	if opt.DiskBudget <= 0 {
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil {
			return nil, fmt.Errorf("kvstore: free disk space of %s: %w", dir, err)
		}
		opt.DiskBudget = int64(st.Bavail) * int64(st.Bsize) / 2
	}
	bo := badger.DefaultOptions(dir).
		WithLogger(badgerLogger{opt.Logger}).
		WithMemTableSize(opt.MemTableSize).
		WithBlockCacheSize(opt.BlockCacheSize).
		WithIndexCacheSize(opt.IndexCacheSize).
		WithCompression(options.None). // float data does not compress
		WithNumVersionsToKeep(1).
		WithNumCompactors(2).
		WithValueLogFileSize(256 << 20)
	db, err := badger.Open(bo)
	if err != nil {
		return nil, fmt.Errorf("kvstore: open %s: %w", dir, err)
	}
	s := &Store{db: db, codec: opt.Codec, budget: opt.DiskBudget, log: opt.Logger, index: map[string]*entry{}, lru: list.New()}
	s.readValue = readValue
	if err := s.rebuild(); err != nil {
		db.Close()
		return nil, err
	}
	s.stopGC, s.gcDone = make(chan struct{}), make(chan struct{})
	go s.gcLoop()
	return s, nil
}

// gcInterval is how often the value log is garbage-collected.
const gcInterval = 10 * time.Minute

// gcLoop rewrites value-log files that are at least half garbage (large
// values of evicted or deleted chunks) until Close.
func (s *Store) gcLoop() {
	defer close(s.gcDone)
	t := time.NewTicker(gcInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stopGC:
			return
		case <-t.C:
			for s.db.RunValueLogGC(0.5) == nil {
				select {
				case <-s.stopGC:
					return
				default:
				}
			}
		}
	}
}

// readValue is the default layer reader.
func readValue(txn *badger.Txn, key []byte, _ int, fn func([]byte) error) error {
	item, err := txn.Get(key)
	if err != nil {
		return err
	}
	return item.Value(fn)
}

// rebuild loads the index from the metadata records and last-use times and
// deletes orphaned values.
func (s *Store) rebuild() error {
	uses := map[string]int64{}
	var orphans [][]byte
	var entries []*entry
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false})
		defer it.Close()
		var layerKeys [][]byte
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			kb := item.KeyCopy(nil)
			tag, k, c, _, ok := parseKey(kb)
			switch {
			case !ok:
				orphans = append(orphans, kb)
			case tag == tagUse:
				err := item.Value(func(v []byte) error {
					if len(v) == 8 {
						uses[string(dbKey(tagMeta, k, c, 0))] = int64(binary.LittleEndian.Uint64(v))
					}
					return nil
				})
				if err != nil {
					return err
				}
			case tag == tagLayer:
				layerKeys = append(layerKeys, kb)
			case tag == tagMeta:
				var m *meta
				var n int
				err := item.Value(func(v []byte) error {
					n = len(v)
					var err error
					m, err = decodeMeta(v, c)
					return err
				})
				if err != nil {
					// A bad record: its chunk is dropped below with the
					// layers that no longer have a metadata record.
					s.log.Warn("kvstore: dropping chunk with a bad metadata record", "chunk", k.Chunk, "err", err)
					orphans = append(orphans, kb)
					continue
				}
				entries = append(entries, &entry{key: k, codec: c, layers: m.Layers(), bytes: m.bytes(n), lastUse: m.Modified})
			}
		}
		valid := map[string]int{}
		for _, e := range entries {
			valid[string(dbKey(tagMeta, e.key, e.codec, 0))] = e.layers
		}
		for _, kb := range layerKeys {
			_, k, c, l, _ := parseKey(kb)
			if n, ok := valid[string(dbKey(tagMeta, k, c, 0))]; !ok || l >= n {
				orphans = append(orphans, kb)
			}
		}
		for mk := range uses {
			if _, ok := valid[mk]; !ok {
				_, k, c, _, _ := parseKey([]byte(mk))
				orphans = append(orphans, dbKey(tagUse, k, c, 0))
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("kvstore: reading the index: %w", err)
	}
	for _, e := range entries {
		if u, ok := uses[string(dbKey(tagMeta, e.key, e.codec, 0))]; ok {
			e.lastUse = u
		}
		s.clock = max(s.clock, e.lastUse)
	}
	slices.SortFunc(entries, func(a, b *entry) int { return int(sign(b.lastUse - a.lastUse)) })
	for _, e := range entries {
		e.elem = s.lru.PushBack(e)
		s.index[string(dbKey(tagMeta, e.key, e.codec, 0))] = e
		s.used += e.bytes
	}
	if len(orphans) > 0 {
		s.log.Info("kvstore: deleting values of interrupted writes or older formats", "keys", len(orphans))
		wb := s.db.NewWriteBatch()
		defer wb.Cancel()
		for _, kb := range orphans {
			if err := wb.Delete(kb); err != nil {
				return fmt.Errorf("kvstore: deleting orphans: %w", err)
			}
		}
		if err := wb.Flush(); err != nil {
			return fmt.Errorf("kvstore: deleting orphans: %w", err)
		}
	}
	return s.evict(nil)
}

func sign(x int64) int64 {
	switch {
	case x < 0:
		return -1
	case x > 0:
		return 1
	}
	return 0
}

// Close persists the last-use times and closes the database. Loaders must
// be closed first. Later calls return the first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.close() })
	return s.closeErr
}

func (s *Store) close() error {
	close(s.stopGC)
	<-s.gcDone
	s.mu.Lock()
	wb := s.db.NewWriteBatch()
	for _, e := range s.index {
		if e.dirty {
			if err := wb.Set(dbKey(tagUse, e.key, e.codec, 0), binary.LittleEndian.AppendUint64(nil, uint64(e.lastUse))); err != nil {
				s.log.Warn("kvstore: persisting last use", "err", err)
				break
			}
			e.dirty = false
		}
	}
	s.mu.Unlock()
	if err := wb.Flush(); err != nil {
		s.log.Warn("kvstore: persisting last use", "err", err)
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("kvstore: close: %w", err)
	}
	return nil
}

// Codec is the codec the store writes and serves.
func (s *Store) Codec() Codec { return s.codec }

// Budget is the disk budget in bytes.
func (s *Store) Budget() int64 { return s.budget }

// Put stores every layer of kv (rows, positions and tokens included) under
// key, replacing what was stored. The layer values are written first and the
// metadata record, which holds their lengths and checksums, last; a Put
// interrupted by a crash leaves no record (or a record its layers do not
// match), so it is never read as valid. Then least recently used chunks are
// evicted until the store fits its budget. A chunk larger than the whole
// budget is refused.
func (s *Store) Put(key Key, kv *model.KV) error {
	rows, dim, layers := kv.Len(), kv.KVDim, len(kv.K)
	switch {
	case rows == 0 || dim <= 0 || layers == 0 || layers > math.MaxUint16 || len(kv.V) != layers || len(kv.Tokens) != rows:
		return fmt.Errorf("kvstore: put %v: malformed KV of %d rows × %d, %d/%d layers, %d tokens", key, rows, dim, layers, len(kv.V), len(kv.Tokens))
	}
	for l := range layers {
		if len(kv.K[l]) != rows*dim || len(kv.V[l]) != rows*dim {
			return fmt.Errorf("kvstore: put %v: layer %d holds %d/%d values, want %d", key, l, len(kv.K[l]), len(kv.V[l]), rows*dim)
		}
	}
	if err := s.codec.check(dim); err != nil {
		return fmt.Errorf("put %v: %w", key, err)
	}
	m := &meta{Codec: s.codec, Rows: rows, Dim: dim, Pos: kv.Pos, Tokens: kv.Tokens,
		Lens: make([]uint32, layers), CRCs: make([]uint32, layers), Modified: time.Now().UnixNano()}
	total := int64(layers) * int64(layerHead+s.codec.encodedSize(rows, dim, true)+s.codec.encodedSize(rows, dim, false))
	if total > s.budget {
		return fmt.Errorf("kvstore: put %v: %d bytes exceed the disk budget of %d", key, total, s.budget)
	}

	// Encode everything first, so bad input leaves the stored chunk alone.
	vals := make([][]byte, layers)
	for l := range layers {
		v, err := encodeLayer(s.codec, l, rows, dim, kv.K[l], kv.V[l])
		if err != nil {
			return fmt.Errorf("kvstore: put %v: %w", key, err)
		}
		vals[l] = v
		m.Lens[l] = uint32(len(v))
		m.CRCs[l] = binary.LittleEndian.Uint32(v[16:])
	}

	s.putMu.Lock()
	defer s.putMu.Unlock()
	mk := dbKey(tagMeta, key, s.codec, 0)
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Delete(mk) }); err != nil {
		return fmt.Errorf("kvstore: put %v: %w", key, err)
	}
	s.forget(mk)
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for l, v := range vals {
		if err := wb.Set(dbKey(tagLayer, key, s.codec, l), v); err != nil {
			return fmt.Errorf("kvstore: put %v layer %d: %w", key, l, err)
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("kvstore: put %v: %w", key, err)
	}
	rec, err := m.encode()
	if err != nil {
		return fmt.Errorf("kvstore: put %v: %w", key, err)
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(mk, rec) }); err != nil {
		return fmt.Errorf("kvstore: put %v: %w", key, err)
	}
	s.mu.Lock()
	e := &entry{key: key, codec: s.codec, layers: layers, bytes: m.bytes(len(rec)), dirty: true}
	s.touchLocked(e)
	e.elem = s.lru.PushFront(e)
	s.index[string(mk)] = e
	s.used += e.bytes
	s.mu.Unlock()
	return s.evict(e)
}

// touchLocked marks e as used now.
func (s *Store) touchLocked(e *entry) {
	s.clock = max(s.clock+1, time.Now().UnixNano())
	e.lastUse, e.dirty = s.clock, true
	if e.elem != nil {
		s.lru.MoveToFront(e.elem)
	}
}

// forget removes the index entry of meta key mk, if any.
func (s *Store) forget(mk []byte) *entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.index[string(mk)]
	if !ok {
		return nil
	}
	delete(s.index, string(mk))
	s.lru.Remove(e.elem)
	s.used -= e.bytes
	return e
}

// evict deletes least recently used chunks, never keep, until the store fits
// its budget.
func (s *Store) evict(keep *entry) error {
	for {
		s.mu.Lock()
		var victim *entry
		if s.used > s.budget {
			for el := s.lru.Back(); el != nil; el = el.Prev() {
				if e := el.Value.(*entry); e != keep {
					victim = e
					break
				}
			}
		}
		s.mu.Unlock()
		if victim == nil {
			return nil
		}
		s.log.Debug("kvstore: evicting", "chunk", victim.key.Chunk, "bytes", victim.bytes)
		if err := s.drop(victim.key, victim.codec, victim.layers); err != nil {
			return err
		}
	}
}

// drop deletes the entries of key under codec c: the metadata record first,
// so a crash midway leaves only orphans, then up to layers layer values and
// the last-use time.
func (s *Store) drop(key Key, c Codec, layers int) error {
	mk := dbKey(tagMeta, key, c, 0)
	if e := s.forget(mk); e != nil {
		layers = max(layers, e.layers)
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Delete(mk) }); err != nil {
		return fmt.Errorf("kvstore: deleting %v: %w", key, err)
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for l := range layers {
		if err := wb.Delete(dbKey(tagLayer, key, c, l)); err != nil {
			return fmt.Errorf("kvstore: deleting %v: %w", key, err)
		}
	}
	if err := wb.Delete(dbKey(tagUse, key, c, 0)); err != nil {
		return fmt.Errorf("kvstore: deleting %v: %w", key, err)
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("kvstore: deleting %v: %w", key, err)
	}
	return nil
}

// Has reports whether KV for key is stored under the store's codec. A chunk
// can still turn out corrupt when loaded.
func (s *Store) Has(key Key) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.index[string(dbKey(tagMeta, key, s.codec, 0))]
	return ok
}

// Get returns the stored KV of key, decoded to float32. Errors wrap
// ErrNotFound or ErrCorrupt (a *ChunkError naming the chunk); a corrupt
// chunk has been deleted.
func (s *Store) Get(key Key) (*model.KV, error) {
	ld, err := s.Load(context.Background(), []Key{key})
	if err != nil {
		return nil, err
	}
	defer ld.Close()
	m := ld.metas[0]
	kv := &model.KV{KVDim: m.Dim, Tokens: m.Tokens, Pos: m.Pos, K: make([][]float32, m.Layers()), V: make([][]float32, m.Layers())}
	for l := range kv.K {
		k, v, err := ld.LoadLayer(l)
		if err != nil {
			return nil, err
		}
		kv.K[l], kv.V[l] = k[0], v[0]
	}
	return kv, nil
}

// DeleteChunk deletes every entry of the chunk with content hash chunk,
// under any model, segment and codec.
func (s *Store) DeleteChunk(chunk string) error {
	s.mu.Lock()
	var victims []*entry
	for _, e := range s.index {
		if e.key.Chunk == chunk {
			victims = append(victims, e)
		}
	}
	s.mu.Unlock()
	for _, e := range victims {
		if err := s.drop(e.key, e.codec, e.layers); err != nil {
			return err
		}
	}
	return nil
}

// Usage returns the bytes of chunk KV stored (metadata records and layer
// values, the figure the budget bounds) and the number of chunks, over all
// codecs.
func (s *Store) Usage() (bytes int64, chunks int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used, len(s.index)
}

// badgerLogger routes Badger's logs to slog.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) {
	b.l.Error("badger: " + strings.TrimSpace(fmt.Sprintf(f, a...)))
}

// Warningf logs at warn, except Badger's periodic block-cache hit-ratio
// report: chunk KV values are large and each is read once per question, so
// the block cache never hits and Badger suggests a bigger one every minute
// of load — a metric, not a problem (the OS page cache serves rereads).
func (b badgerLogger) Warningf(f string, a ...any) {
	msg := "badger: " + strings.TrimSpace(fmt.Sprintf(f, a...))
	if strings.HasPrefix(msg, "badger: Block cache might be too small") || strings.HasPrefix(msg, "badger: Cache life expectancy") {
		b.l.Debug(msg)
		return
	}
	b.l.Warn(msg)
}
func (b badgerLogger) Infof(f string, a ...any) {
	b.l.Debug("badger: " + strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (b badgerLogger) Debugf(f string, a ...any) {
	b.l.Debug("badger: " + strings.TrimSpace(fmt.Sprintf(f, a...)))
}
