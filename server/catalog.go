package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// Document states in the catalog. A document is visible (listed, searchable)
// only in stateCommitted; the others exist so that a crash between the
// steps of ingest or delete can be finished or undone on the next Open.
const (
	statePending   = "pending"   // record and chunk refs written; indexes being filled
	stateCommitted = "committed" // every chunk is in every index
	stateDeleting  = "deleting"  // being removed; invisible
)

// Index names, as recorded per chunk and reported per search result.
const (
	IndexBM25  = "bm25"
	IndexDense = "dense"
	IndexCUR   = "cur"
)

// docRecord is the catalog's record of one document.
type docRecord struct {
	Doc    DocumentInfo `json:"doc"`
	State  string       `json:"state"`
	Chunks []string     `json:"chunks"` // chunk ids in document order
	// Attempts counts the opens that found this document pending and tried
	// to finish it; a document that keeps failing is rolled back.
	Attempts int `json:"attempts,omitempty"`
}

// chunkRecord is the catalog's record of one distinct chunk text, shared by
// every document (and place in it) that contains that text.
type chunkRecord struct {
	ID      string          `json:"id"`
	Text    string          `json:"text"`
	Tokens  int             `json:"tokens"`
	Refs    []ChunkRef      `json:"refs"`
	Indexes map[string]bool `json:"indexes"` // index name → the chunk is committed there
}

// ChunkRef locates one occurrence of a chunk in a document.
type ChunkRef struct {
	Doc   string `json:"doc"`
	Start int    `json:"start"` // byte offset in the document's text
	End   int    `json:"end"`
	Page  int    `json:"page,omitempty"` // PDF page (1-based); 0 when unpaged
}

// catalog is the Badger-backed record of documents and chunks: the source of
// truth the indexes are reconciled against.
type catalog struct {
	db *badger.DB
}

func docKey(id string) []byte   { return []byte("doc/" + id) }
func chunkKey(id string) []byte { return []byte("chunk/" + id) }

// CatalogOptions size the catalog's Badger instance for a small host.
type CatalogOptions struct {
	MemTableSize   int64 // bytes per memtable; default 8 MiB
	BlockCacheSize int64 // bytes; default 16 MiB
	IndexCacheSize int64 // bytes; default 8 MiB
}

func (o CatalogOptions) withDefaults() CatalogOptions {
	if o.MemTableSize <= 0 {
		o.MemTableSize = 8 << 20
	}
	if o.BlockCacheSize <= 0 {
		o.BlockCacheSize = 16 << 20
	}
	if o.IndexCacheSize <= 0 {
		o.IndexCacheSize = 8 << 20
	}
	return o
}

// openCatalog opens (creating if needed) the catalog in dir. Writes are
// synced: a committed catalog transaction survives a crash.
func openCatalog(dir string, opt CatalogOptions, log *slog.Logger) (*catalog, error) {
	opt = opt.withDefaults()
	bo := badger.DefaultOptions(dir).
		WithSyncWrites(true).
		WithNumVersionsToKeep(1).
		WithMemTableSize(opt.MemTableSize).
		WithBlockCacheSize(opt.BlockCacheSize).
		WithIndexCacheSize(opt.IndexCacheSize).
		WithValueLogFileSize(64 << 20).
		WithNumCompactors(2).
		WithCompression(options.None).
		WithLogger(badgerLogger{log.With("component", "catalog")})
	db, err := badger.Open(bo)
	if err != nil {
		return nil, fmt.Errorf("open catalog %s: %w", dir, err)
	}
	return &catalog{db: db}, nil
}

func (c *catalog) close() error { return c.db.Close() }

// getJSON reads key into v; found is false when the key is absent.
func getJSON(txn *badger.Txn, key []byte, v any) (found bool, err error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	err = item.Value(func(b []byte) error { return json.Unmarshal(b, v) })
	if err != nil {
		return true, fmt.Errorf("catalog record %q: %w", key, err)
	}
	return true, nil
}

func setJSON(txn *badger.Txn, key []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return txn.Set(key, b)
}

// doc returns the record of document id (found false when absent).
func (c *catalog) doc(id string) (rec docRecord, found bool, err error) {
	err = c.db.View(func(txn *badger.Txn) error {
		found, err = getJSON(txn, docKey(id), &rec)
		return err
	})
	return rec, found, err
}

// chunk returns the record of chunk id (found false when absent).
func (c *catalog) chunk(id string) (rec chunkRecord, found bool, err error) {
	err = c.db.View(func(txn *badger.Txn) error {
		found, err = getJSON(txn, chunkKey(id), &rec)
		return err
	})
	return rec, found, err
}

// docs calls fn for every document record in id order; fn returning false
// stops the walk.
func (c *catalog) docs(fn func(docRecord) bool) error {
	return c.walk([]byte("doc/"), func(b []byte) (bool, error) {
		var rec docRecord
		if err := json.Unmarshal(b, &rec); err != nil {
			return false, err
		}
		return fn(rec), nil
	})
}

// chunks calls fn for every chunk record; fn returning false stops.
func (c *catalog) chunks(fn func(chunkRecord) bool) error {
	return c.walk([]byte("chunk/"), func(b []byte) (bool, error) {
		var rec chunkRecord
		if err := json.Unmarshal(b, &rec); err != nil {
			return false, err
		}
		return fn(rec), nil
	})
}

func (c *catalog) walk(prefix []byte, fn func([]byte) (bool, error)) error {
	return c.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 64, Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var more bool
			err := it.Item().Value(func(b []byte) (err error) {
				more, err = fn(b)
				return err
			})
			if err != nil {
				return fmt.Errorf("catalog record %q: %w", it.Item().Key(), err)
			}
			if !more {
				return nil
			}
		}
		return nil
	})
}

// update runs fn in one read-write transaction, retrying on conflicts.
func (c *catalog) update(fn func(txn *badger.Txn) error) error {
	for range 5 {
		err := c.db.Update(fn)
		if !errors.Is(err, badger.ErrConflict) {
			return err
		}
	}
	return c.db.Update(fn)
}

// begin records doc as pending with its chunks, adding a ref to each chunk
// record (created when new). It returns the ids of chunks that still need
// adding to at least one of the indexes named in want.
func (c *catalog) begin(rec docRecord, chunks []chunkRecord, want []string) (todo []string, err error) {
	err = c.update(func(txn *badger.Txn) error {
		todo = todo[:0]
		rec.State = statePending
		if err := setJSON(txn, docKey(rec.Doc.ID), rec); err != nil {
			return err
		}
		for _, ch := range chunks {
			var cur chunkRecord
			found, err := getJSON(txn, chunkKey(ch.ID), &cur)
			if err != nil {
				return err
			}
			if !found {
				cur = chunkRecord{ID: ch.ID, Text: ch.Text, Tokens: ch.Tokens, Indexes: map[string]bool{}}
			}
			cur.Refs = addRefs(cur.Refs, ch.Refs)
			if err := setJSON(txn, chunkKey(ch.ID), cur); err != nil {
				return err
			}
			for _, ix := range want {
				if !cur.Indexes[ix] {
					todo = append(todo, ch.ID)
					break
				}
			}
		}
		return nil
	})
	return todo, err
}

// addRefs adds the refs of add missing from refs.
func addRefs(refs, add []ChunkRef) []ChunkRef {
	for _, r := range add {
		if !slices.Contains(refs, r) {
			refs = append(refs, r)
		}
	}
	return refs
}

// markIndexed records that the chunks ids are (on) or are not (!on)
// committed in index ix.
func (c *catalog) markIndexed(ix string, ids []string, on bool) error {
	err := c.eachChunk(ids, func(txn *badger.Txn, rec chunkRecord) error {
		if rec.Indexes[ix] == on {
			return nil
		}
		if rec.Indexes == nil {
			rec.Indexes = map[string]bool{}
		}
		if on {
			rec.Indexes[ix] = true
		} else {
			delete(rec.Indexes, ix)
		}
		return setJSON(txn, chunkKey(rec.ID), rec)
	})
	if err != nil {
		return fmt.Errorf("catalog: mark %d chunks in %s: %w", len(ids), ix, err)
	}
	return nil
}

// eachChunk calls fn with the record of each of ids that exists, in
// read-write transactions of at most 256 chunks (large ingests would exceed
// Badger's transaction size limit in one).
func (c *catalog) eachChunk(ids []string, fn func(txn *badger.Txn, rec chunkRecord) error) error {
	for len(ids) > 0 {
		batch := ids[:min(len(ids), 256)]
		ids = ids[len(batch):]
		err := c.update(func(txn *badger.Txn) error {
			for _, id := range batch {
				var rec chunkRecord
				found, err := getJSON(txn, chunkKey(id), &rec)
				if err != nil {
					return err
				}
				if found {
					if err := fn(txn, rec); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// setState changes the state of document id (and its attempt count).
func (c *catalog) setState(id, state string, attempts int) error {
	return c.update(func(txn *badger.Txn) error {
		var rec docRecord
		found, err := getJSON(txn, docKey(id), &rec)
		if err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("catalog: document %s: %w", id, ErrNotFound)
		}
		rec.State, rec.Attempts = state, attempts
		if state == stateCommitted {
			rec.Doc.IngestedAt = time.Now().UTC()
		}
		return setJSON(txn, docKey(id), rec)
	})
}

// drop removes document id and its refs. It returns the chunk records that
// no document references any more (their records are kept, so the caller
// can remove them from the indexes and then call forget).
func (c *catalog) drop(id string) (orphans []chunkRecord, err error) {
	err = c.update(func(txn *badger.Txn) error {
		orphans = orphans[:0]
		seen := map[string]bool{}
		var rec docRecord
		found, err := getJSON(txn, docKey(id), &rec)
		if err != nil || !found {
			return err
		}
		for _, cid := range rec.Chunks {
			var ch chunkRecord
			found, err := getJSON(txn, chunkKey(cid), &ch)
			if err != nil {
				return err
			}
			if !found {
				continue
			}
			ch.Refs = slices.DeleteFunc(ch.Refs, func(r ChunkRef) bool { return r.Doc == id })
			if len(ch.Refs) == 0 && !seen[cid] {
				seen[cid] = true
				orphans = append(orphans, ch)
			}
			if err := setJSON(txn, chunkKey(cid), ch); err != nil {
				return err
			}
		}
		return txn.Delete(docKey(id))
	})
	return orphans, err
}

// forget deletes the records of chunks that no document references.
func (c *catalog) forget(ids []string) error {
	err := c.eachChunk(ids, func(txn *badger.Txn, rec chunkRecord) error {
		if len(rec.Refs) > 0 {
			return nil
		}
		return txn.Delete(chunkKey(rec.ID))
	})
	if err != nil {
		return fmt.Errorf("catalog: forget chunks: %w", err)
	}
	return nil
}

// badgerLogger sends Badger's log lines to slog: errors and warnings at
// their level, info and debug at debug (Badger is chatty at info).
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any)   { b.l.Error(trimNL(fmt.Sprintf(f, a...))) }
func (b badgerLogger) Warningf(f string, a ...any) { b.l.Warn(trimNL(fmt.Sprintf(f, a...))) }
func (b badgerLogger) Infof(f string, a ...any)    { b.l.Debug(trimNL(fmt.Sprintf(f, a...))) }
func (b badgerLogger) Debugf(f string, a ...any)   { b.l.Debug(trimNL(fmt.Sprintf(f, a...))) }

func trimNL(s string) string {
	for len(s) > 0 && s[len(s)-1] == '\n' {
		s = s[:len(s)-1]
	}
	return s
}
