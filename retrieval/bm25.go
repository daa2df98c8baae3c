package retrieval

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/blevesearch/bleve/v2"
	"github.com/blevesearch/bleve/v2/analysis"
	"github.com/blevesearch/bleve/v2/analysis/lang/en"
	"github.com/blevesearch/bleve/v2/index/scorch"
	"github.com/blevesearch/bleve/v2/mapping"
	"github.com/blevesearch/bleve/v2/search"
	index "github.com/blevesearch/bleve_index_api"
)

// bm25Field is the indexed (not stored) field holding a chunk's text.
const bm25Field = "text"

// Hit is one result of a single retriever: a chunk ID and the retriever's
// own score (higher is better).
type Hit struct {
	ID    string
	Score float64
}

// BM25 is a bleve v2 index on disk (scorch engine, BM25 scoring, English
// analyzer) of chunk texts keyed by chunk ID. Only the IDs are stored; the
// catalog keeps the text. It is safe for concurrent use.
//
// Per query term t in a chunk of dl analysed tokens, bleve v2.6.3 scores
//
//	idf(t)·√tf·k1 / (√tf + k1·(1 − b + b·dl/avgdl)),  idf(t) = ln(1 + (N − n_t + 0.5)/(n_t + 0.5))
//
// with k1 = 1.2, b = 0.75 and tf square-rooted; for several query terms it
// sums the terms' scores, each multiplied by idf(t)/√Σidf² (a query norm),
// and multiplies by the coordination factor matched/query terms, which
// favours chunks matching more of the query. Left to itself bleve takes
// avgdl as ⌈(term-dictionary size summed over segments)/N⌉, which is not a
// length and drifts as segments merge; so BM25 keeps the total analysed
// length of its chunks in the index (updated in the same batch as the
// chunks) and passes avgdl = ⌈total/N⌉ to every search.
// TestBM25ScoresAreBM25 checks all this against statistics it counts.
type BM25 struct {
	idx      bleve.Index
	analyzer analysis.Analyzer

	mu    sync.Mutex // serialises writers: Add, Delete
	total atomic.Int64
}

// Internal keys: the total analysed length and each chunk's length.
var (
	bm25TotalKey     = []byte("bm25/total")
	bm25LenKeyPrefix = "bm25/len/"
)

// OpenBM25 opens the BM25 index in dir, creating it (and dir) if missing.
// An existing index must have been made by OpenBM25 (BM25 scoring).
func OpenBM25(dir string) (*BM25, error) {
	if _, err := os.Stat(filepath.Join(dir, "index_meta.json")); err == nil {
		idx, err := bleve.Open(dir)
		if err != nil {
			return nil, fmt.Errorf("opening BM25 index %s: %w", dir, err)
		}
		m, ok := idx.Mapping().(*mapping.IndexMappingImpl)
		if !ok || m.ScoringModel != index.BM25Scoring {
			idx.Close()
			return nil, fmt.Errorf("opening BM25 index %s: not a BM25-scored index", dir)
		}
		b, err := newBM25(idx)
		if err != nil {
			idx.Close()
			return nil, fmt.Errorf("opening BM25 index %s: %w", dir, err)
		}
		return b, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("opening BM25 index: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(filepath.Clean(dir)), 0o755); err != nil {
		return nil, fmt.Errorf("creating BM25 index: %w", err)
	}
	idx, err := bleve.NewUsing(dir, bm25Mapping(), scorch.Name, scorch.Name, nil)
	if err != nil {
		return nil, fmt.Errorf("creating BM25 index %s: %w", dir, err)
	}
	b, err := newBM25(idx)
	if err != nil {
		idx.Close()
		return nil, fmt.Errorf("creating BM25 index %s: %w", dir, err)
	}
	return b, nil
}

func newBM25(idx bleve.Index) (*BM25, error) {
	an := idx.Mapping().AnalyzerNamed(en.AnalyzerName)
	if an == nil {
		return nil, fmt.Errorf("no %q analyzer", en.AnalyzerName)
	}
	b := &BM25{idx: idx, analyzer: an}
	v, err := idx.GetInternal(bm25TotalKey)
	if err != nil {
		return nil, fmt.Errorf("reading total length: %w", err)
	}
	if v != nil {
		n, k := binary.Uvarint(v)
		if k <= 0 {
			return nil, fmt.Errorf("corrupt total length %x", v)
		}
		b.total.Store(int64(n))
	}
	return b, nil
}

// storedLen returns the analysed length recorded for chunk id, and whether
// the chunk is indexed.
func (b *BM25) storedLen(id string) (int64, bool, error) {
	v, err := b.idx.GetInternal([]byte(bm25LenKeyPrefix + id))
	if err != nil {
		return 0, false, fmt.Errorf("bm25: reading length of %s: %w", id, err)
	}
	if v == nil {
		return 0, false, nil
	}
	n, k := binary.Uvarint(v)
	if k <= 0 {
		return 0, false, fmt.Errorf("bm25: corrupt length of %s: %x", id, v)
	}
	return int64(n), true, nil
}

// bm25Mapping indexes one English-analysed text field, unstored, with
// BM25 scoring; nothing else is indexed.
func bm25Mapping() *mapping.IndexMappingImpl {
	text := bleve.NewTextFieldMapping()
	text.Analyzer = en.AnalyzerName
	text.Store = false
	text.IncludeInAll = false
	text.IncludeTermVectors = false
	text.DocValues = false
	doc := bleve.NewDocumentStaticMapping()
	doc.AddFieldMappingsAt(bm25Field, text)
	m := bleve.NewIndexMapping()
	m.DefaultMapping = doc
	m.DefaultAnalyzer = en.AnalyzerName
	m.DefaultField = bm25Field
	m.ScoringModel = index.BM25Scoring
	m.StoreDynamic = false
	m.IndexDynamic = false
	m.DocValuesDynamic = false
	return m
}

// Add indexes chunks in one batch, keyed by chunk ID. Chunks already
// indexed are skipped (an ID fixes the text), so adding again is a no-op.
func (b *BM25) Add(chunks []Chunk) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	batch := b.idx.NewBatch()
	total := b.total.Load()
	seen := make(map[string]bool, len(chunks))
	for i := range chunks {
		c := &chunks[i]
		if seen[c.ID] {
			continue
		}
		seen[c.ID] = true
		if _, ok, err := b.storedLen(c.ID); err != nil {
			return err
		} else if ok {
			continue
		}
		if err := batch.Index(c.ID, map[string]any{bm25Field: c.Text}); err != nil {
			return fmt.Errorf("bm25: indexing chunk %s: %w", c.ID, err)
		}
		n := int64(len(b.analyzer.Analyze([]byte(c.Text))))
		batch.SetInternal([]byte(bm25LenKeyPrefix+c.ID), binary.AppendUvarint(nil, uint64(n)))
		total += n
	}
	return b.commit(batch, total, "adding")
}

// Delete removes the chunks with these IDs in one batch; IDs not in the
// index are ignored.
func (b *BM25) Delete(ids []string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	batch := b.idx.NewBatch()
	total := b.total.Load()
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		n, ok, err := b.storedLen(id)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		batch.Delete(id)
		batch.DeleteInternal([]byte(bm25LenKeyPrefix + id))
		total -= n
	}
	return b.commit(batch, total, "deleting")
}

// commit applies batch together with the new total length.
func (b *BM25) commit(batch *bleve.Batch, total int64, what string) error {
	if batch.Size() == 0 {
		return nil
	}
	batch.SetInternal(bm25TotalKey, binary.AppendUvarint(nil, uint64(total)))
	if err := b.idx.Batch(batch); err != nil {
		return fmt.Errorf("bm25: %s chunks: %w", what, err)
	}
	b.total.Store(total)
	return nil
}

// Search returns the k best chunks for query (English-analysed, any term
// may match), best first, ties broken by ID. A query without searchable
// terms (empty, only stop words) or k ≤ 0 returns no hits.
func (b *BM25) Search(query string, k int) ([]Hit, error) {
	if k <= 0 {
		return nil, nil
	}
	n, err := b.Count()
	if err != nil || n == 0 {
		return nil, err
	}
	q := bleve.NewMatchQuery(query)
	q.SetField(bm25Field)
	req := bleve.NewSearchRequestOptions(q, k, 0, false)
	req.SortBy([]string{"-_score", "_id"})
	req.PreSearchData = map[string]any{search.BM25PreSearchDataKey: &search.BM25Stats{
		DocCount:         float64(n),
		FieldCardinality: map[string]int{bm25Field: int(b.total.Load())},
	}}
	res, err := b.idx.Search(req)
	if err != nil {
		return nil, fmt.Errorf("bm25: searching %q: %w", query, err)
	}
	hits := make([]Hit, len(res.Hits))
	for i, h := range res.Hits {
		hits[i] = Hit{ID: h.ID, Score: h.Score}
	}
	return hits, nil
}

// Has reports whether the chunk with this ID is indexed.
func (b *BM25) Has(id string) (bool, error) {
	r, err := b.reader()
	if err != nil {
		return false, err
	}
	defer r.Close()
	it, err := r.DocIDReaderOnly([]string{id})
	if err != nil {
		return false, fmt.Errorf("bm25: looking up %s: %w", id, err)
	}
	defer it.Close()
	got, err := it.Next()
	if err != nil {
		return false, fmt.Errorf("bm25: looking up %s: %w", id, err)
	}
	return got != nil, nil
}

// IDs returns every indexed chunk ID, sorted.
func (b *BM25) IDs() ([]string, error) {
	r, err := b.reader()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	it, err := r.DocIDReaderAll()
	if err != nil {
		return nil, fmt.Errorf("bm25: listing ids: %w", err)
	}
	defer it.Close()
	var ids []string
	for {
		iid, err := it.Next()
		if err != nil {
			return nil, fmt.Errorf("bm25: listing ids: %w", err)
		}
		if iid == nil {
			break
		}
		id, err := r.ExternalID(iid)
		if err != nil {
			return nil, fmt.Errorf("bm25: listing ids: %w", err)
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, nil
}

// Count returns the number of indexed chunks.
func (b *BM25) Count() (uint64, error) {
	n, err := b.idx.DocCount()
	if err != nil {
		return 0, fmt.Errorf("bm25: counting: %w", err)
	}
	return n, nil
}

// Close flushes and closes the index.
func (b *BM25) Close() error {
	if err := b.idx.Close(); err != nil {
		return fmt.Errorf("bm25: closing: %w", err)
	}
	return nil
}

func (b *BM25) reader() (index.IndexReader, error) {
	adv, err := b.idx.Advanced()
	if err != nil {
		return nil, fmt.Errorf("bm25: %w", err)
	}
	r, err := adv.Reader()
	if err != nil {
		return nil, fmt.Errorf("bm25: opening reader: %w", err)
	}
	return r, nil
}
