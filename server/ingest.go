package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/blendrag/blendrag/retrieval"
)

// Progress reports how far one ingest has got: Stage is "parse", "bm25",
// "embed", "cur" or "commit"; Done of Total units (chunks) of that stage.
type Progress struct {
	Stage       string
	Done, Total int
}

// IngestResult is the outcome of ingesting one document.
type IngestResult struct {
	Doc DocumentInfo `json:"document"`
	// Existing is true when the same content was already ingested (nothing
	// was done).
	Existing bool `json:"existing,omitempty"`
	// NewChunks counts chunks indexed by this ingest (chunks shared with
	// documents already in the store are not indexed again).
	NewChunks int `json:"new_chunks"`
	// Timings per stage.
	Parse, BM25, Embed, CUR time.Duration `json:"-"`
}

// Ingest parses data (a file named name), chunks it, indexes the new chunks
// and commits the document. Re-ingesting identical content is a no-op that
// returns the existing document. On any error — bad input, an index
// failure, ctx cancelled — nothing of the document stays in the store.
// progress may be nil.
func (s *Service) Ingest(ctx context.Context, name string, data []byte, progress func(Progress)) (IngestResult, error) {
	start := time.Now()
	parsed, err := retrieval.Parse(name, data, s.cfg.Limits)
	if err != nil {
		return IngestResult{}, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	return s.ingestParsed(ctx, parsed, start, progress)
}

// IngestText ingests text as a document titled title (see Ingest).
func (s *Service) IngestText(ctx context.Context, title, text string, progress func(Progress)) (IngestResult, error) {
	start := time.Now()
	parsed, err := retrieval.ParseText(title, text)
	if err != nil {
		return IngestResult{}, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	return s.ingestParsed(ctx, parsed, start, progress)
}

func (s *Service) ingestParsed(ctx context.Context, p *retrieval.Parsed, start time.Time, progress func(Progress)) (res IngestResult, err error) {
	if progress == nil {
		progress = func(Progress) {}
	}
	chunks := s.chunker.Split(p)
	if len(chunks) == 0 {
		return res, fmt.Errorf("%s: no text to index: %w", p.Doc.FileName, ErrBadRequest)
	}
	res.Parse = time.Since(start)
	progress(Progress{Stage: "parse", Done: 1, Total: 1})

	s.write.Lock()
	defer s.write.Unlock()
	if err := ctx.Err(); err != nil {
		return res, err
	}
	id := p.Doc.ID
	old, found, err := s.cat.doc(id)
	if err != nil {
		return res, fmt.Errorf("ingest %s: %w", p.Doc.FileName, err)
	}
	if found && old.State == stateCommitted {
		return IngestResult{Doc: old.Doc, Existing: true}, nil
	}
	if found { // a leftover Open could not finish: start over
		if err := s.rollback(id); err != nil {
			return res, fmt.Errorf("ingest %s: %w", p.Doc.FileName, err)
		}
	}

	rec := docRecord{Doc: DocumentInfo{
		ID: id, Title: p.Doc.Title, FileName: p.Doc.FileName, Kind: string(p.Doc.Kind),
		Size: p.Doc.Size, Pages: p.Doc.Pages, Chunks: len(chunks),
	}}
	var recs []chunkRecord
	at := map[string]int{} // chunk id → index in recs (a text may repeat in a document)
	for _, c := range chunks {
		rec.Chunks = append(rec.Chunks, c.ID)
		ref := ChunkRef{Doc: id, Start: c.Start, End: c.End, Page: c.Page}
		if i, ok := at[c.ID]; ok {
			recs[i].Refs = append(recs[i].Refs, ref)
			continue
		}
		at[c.ID] = len(recs)
		recs = append(recs, chunkRecord{ID: c.ID, Text: c.Text, Tokens: c.Tokens, Refs: []ChunkRef{ref}})
	}
	todo, err := s.cat.begin(rec, recs, s.indexNames())
	if err != nil {
		return res, fmt.Errorf("ingest %s: %w", p.Doc.FileName, err)
	}
	defer func() {
		if err != nil {
			if rerr := s.rollback(id); rerr != nil {
				err = errors.Join(err, fmt.Errorf("roll back: %w", rerr))
			}
		}
	}()
	t, err := s.index(ctx, todo, progress)
	if err != nil {
		return res, fmt.Errorf("ingest %s: %w", p.Doc.FileName, err)
	}
	res.BM25, res.Embed, res.CUR = t.bm25, t.embed, t.cur
	if err := ctx.Err(); err != nil { // cancelled: the document is not committed
		return res, err
	}
	if err := s.cat.setState(id, stateCommitted, 0); err != nil {
		return res, fmt.Errorf("ingest %s: commit: %w", p.Doc.FileName, err)
	}
	progress(Progress{Stage: "commit", Done: 1, Total: 1})
	s.kickPrecompute()
	rec, _, err = s.cat.doc(id)
	if err != nil {
		return res, fmt.Errorf("ingest %s: %w", p.Doc.FileName, err)
	}
	res.Doc, res.NewChunks = rec.Doc, len(todo)
	return res, nil
}

// indexNames lists the indexes every chunk must be in.
func (s *Service) indexNames() []string {
	if s.curAtIngest() {
		return []string{IndexBM25, IndexDense, IndexCUR}
	}
	return []string{IndexBM25, IndexDense}
}

type indexTimes struct{ bm25, embed, cur time.Duration }

// index adds the chunks ids (already in the catalog) to every index that
// does not hold them yet, marking each in the catalog after the index has
// durably committed it.
func (s *Service) index(ctx context.Context, ids []string, progress func(Progress)) (t indexTimes, err error) {
	if len(ids) == 0 {
		return t, nil
	}
	need := func(ix string) ([]retrieval.Chunk, error) {
		var out []retrieval.Chunk
		for _, id := range ids {
			rec, found, err := s.cat.chunk(id)
			if err != nil {
				return nil, err
			}
			if found && !rec.Indexes[ix] {
				out = append(out, retrieval.Chunk{ID: rec.ID, Text: rec.Text, Tokens: rec.Tokens})
			}
		}
		return out, nil
	}
	chunkIDs := func(cs []retrieval.Chunk) []string {
		out := make([]string, len(cs))
		for i, c := range cs {
			out[i] = c.ID
		}
		return out
	}

	// BM25: one batch.
	start := time.Now()
	cs, err := need(IndexBM25)
	if err != nil {
		return t, err
	}
	if len(cs) > 0 {
		if err := s.bm25.Add(cs); err != nil {
			return t, fmt.Errorf("bm25: %w", err)
		}
		if err := s.cat.markIndexed(IndexBM25, chunkIDs(cs), true); err != nil {
			return t, err
		}
	}
	progress(Progress{Stage: "bm25", Done: len(cs), Total: len(cs)})
	t.bm25 = time.Since(start)

	// Dense: embed in batches, save the index once, then mark.
	start = time.Now()
	if cs, err = need(IndexDense); err != nil {
		return t, err
	}
	for i := 0; i < len(cs); i += s.cfg.EmbedBatch {
		if err := ctx.Err(); err != nil {
			return t, err
		}
		batch := cs[i:min(i+s.cfg.EmbedBatch, len(cs))]
		texts := make([]string, len(batch))
		for j, c := range batch {
			texts[j] = c.Text
		}
		vecs, err := s.embed.Embed(texts)
		if err != nil {
			return t, fmt.Errorf("embed: %w", err)
		}
		for j, c := range batch {
			if err := s.dense.Add(c.ID, vecs[j]); err != nil {
				return t, fmt.Errorf("dense index: %w", err)
			}
		}
		progress(Progress{Stage: "embed", Done: i + len(batch), Total: len(cs)})
	}
	if len(cs) > 0 {
		if err := s.dense.Save(); err != nil {
			return t, fmt.Errorf("dense index: %w", err)
		}
		if err := s.cat.markIndexed(IndexDense, chunkIDs(cs), true); err != nil {
			return t, err
		}
	}
	t.embed = time.Since(start)

	// CUR: one R column per chunk (with the KV-cached cross-encoder the
	// columns follow the KV precompute instead).
	if !s.curAtIngest() {
		return t, nil
	}
	start = time.Now()
	if cs, err = need(IndexCUR); err != nil {
		return t, err
	}
	for i, c := range cs {
		if err := ctx.Err(); err != nil {
			return t, err
		}
		if err := s.cur.AddChunk(ctx, c.ID); err != nil {
			return t, fmt.Errorf("cur: %w", err)
		}
		progress(Progress{Stage: "cur", Done: i + 1, Total: len(cs)})
	}
	if len(cs) > 0 {
		if err := s.cur.Save(); err != nil {
			return t, fmt.Errorf("cur: %w", err)
		}
		if err := s.cat.markIndexed(IndexCUR, chunkIDs(cs), true); err != nil {
			return t, err
		}
	}
	t.cur = time.Since(start)
	return t, nil
}

// Delete removes committed document id. Its chunks leave every index unless
// another document shares them. The error wraps ErrNotFound when there is
// no such document.
func (s *Service) Delete(ctx context.Context, id string) error {
	s.write.Lock()
	defer s.write.Unlock()
	rec, found, err := s.cat.doc(id)
	if err != nil {
		return fmt.Errorf("delete %s: %w", id, err)
	}
	if !found || rec.State != stateCommitted {
		return fmt.Errorf("delete %s: %w", id, ErrNotFound)
	}
	// Invisible first, so a crash mid-delete never shows half a document.
	if err := s.cat.setState(id, stateDeleting, 0); err != nil {
		return fmt.Errorf("delete %s: %w", id, err)
	}
	if err := s.rollback(id); err != nil {
		return fmt.Errorf("delete %s: %w", id, err)
	}
	return nil
}

// rollback removes document id from the catalog and its orphaned chunks
// from every index. It is idempotent: a crash part way is finished by the
// next call (recover reconciles indexes with the catalog).
func (s *Service) rollback(id string) error {
	orphans, err := s.cat.drop(id)
	if err != nil {
		return err
	}
	return s.unindex(orphans)
}

// unindex removes chunks that no document references from every index and
// then forgets their records.
func (s *Service) unindex(orphans []chunkRecord) error {
	if len(orphans) == 0 {
		return nil
	}
	ids := make([]string, len(orphans))
	for i, o := range orphans {
		ids[i] = o.ID
	}
	if err := s.bm25.Delete(ids); err != nil {
		return fmt.Errorf("bm25: %w", err)
	}
	for _, id := range ids {
		if err := s.dense.Delete(id); err != nil {
			return fmt.Errorf("dense index: %w", err)
		}
		if s.cur != nil {
			if err := s.cur.Delete(id); err != nil {
				return fmt.Errorf("cur: %w", err)
			}
		}
	}
	if err := s.dense.Save(); err != nil {
		return fmt.Errorf("dense index: %w", err)
	}
	if s.eng != nil {
		for _, id := range ids {
			if err := s.eng.store.DeleteChunk(id); err != nil {
				return fmt.Errorf("kv store: %w", err)
			}
		}
	}
	if s.cur != nil {
		if err := s.cur.Save(); err != nil {
			return fmt.Errorf("cur: %w", err)
		}
	}
	return s.cat.forget(ids)
}

// maxAttempts bounds how often Open resumes a pending ingest before rolling
// it back (a document that crashes the process must not do so forever).
const maxAttempts = 2

// recover runs at Open: pending ingests are resumed (their chunk texts are
// in the catalog) or, after maxAttempts, rolled back; interrupted deletes
// are finished; then every index is reconciled with the catalog — entries
// no chunk record claims are removed, and chunks the catalog marks as
// indexed but an index lost (bleve persists asynchronously) are re-added.
func (s *Service) recover(ctx context.Context) error {
	s.write.Lock()
	defer s.write.Unlock()
	var pending, deleting []docRecord
	err := s.cat.docs(func(rec docRecord) bool {
		switch rec.State {
		case statePending:
			pending = append(pending, rec)
		case stateDeleting:
			deleting = append(deleting, rec)
		}
		return true
	})
	if err != nil {
		return err
	}
	for _, rec := range deleting {
		s.log.Info("finishing interrupted delete", "doc", rec.Doc.ID)
		if err := s.rollback(rec.Doc.ID); err != nil {
			return err
		}
	}
	if err := s.reconcile(); err != nil {
		return err
	}
	for _, rec := range pending {
		if rec.Attempts >= maxAttempts {
			s.log.Warn("rolling back ingest that failed to resume", "doc", rec.Doc.ID, "attempts", rec.Attempts)
			if err := s.rollback(rec.Doc.ID); err != nil {
				return err
			}
			continue
		}
		s.log.Info("resuming interrupted ingest", "doc", rec.Doc.ID, "title", rec.Doc.Title)
		if err := s.cat.setState(rec.Doc.ID, statePending, rec.Attempts+1); err != nil {
			return err
		}
		_, err := s.index(ctx, rec.Chunks, func(Progress) {})
		if err == nil {
			err = s.cat.setState(rec.Doc.ID, stateCommitted, 0)
		}
		if err != nil {
			s.log.Warn("resume failed; rolling back", "doc", rec.Doc.ID, "err", err)
			if err := s.rollback(rec.Doc.ID); err != nil {
				return err
			}
		}
	}
	return nil
}

// reconcile makes every index hold exactly the chunks the catalog marks as
// held: it deletes unclaimed entries and clears the mark of lost ones (so
// the resume or a re-add indexes them again), and re-indexes lost chunks of
// committed documents at once.
func (s *Service) reconcile() error {
	marked := map[string]map[string]bool{IndexBM25: {}, IndexDense: {}, IndexCUR: {}}
	var orphans []chunkRecord
	err := s.cat.chunks(func(rec chunkRecord) bool {
		if len(rec.Refs) == 0 {
			orphans = append(orphans, rec)
			return true
		}
		for ix, on := range rec.Indexes {
			if on && marked[ix] != nil {
				marked[ix][rec.ID] = true
			}
		}
		return true
	})
	if err != nil {
		return err
	}
	if err := s.unindex(orphans); err != nil {
		return err
	}

	// BM25.
	have, err := s.bm25.IDs()
	if err != nil {
		return fmt.Errorf("bm25: %w", err)
	}
	var extra []string
	for _, id := range have {
		if !marked[IndexBM25][id] {
			extra = append(extra, id)
		}
	}
	lost := missing(marked[IndexBM25], have)
	if len(extra) > 0 {
		s.log.Info("bm25: removing entries without a catalog record", "n", len(extra))
		if err := s.bm25.Delete(extra); err != nil {
			return fmt.Errorf("bm25: %w", err)
		}
	}
	if err := s.relost(IndexBM25, lost); err != nil {
		return err
	}

	// Dense.
	have = s.dense.IDs()
	extra = extra[:0]
	for _, id := range have {
		if !marked[IndexDense][id] {
			extra = append(extra, id)
		}
	}
	for _, id := range extra {
		if err := s.dense.Delete(id); err != nil {
			return fmt.Errorf("dense index: %w", err)
		}
	}
	if len(extra) > 0 {
		s.log.Info("dense: removed entries without a catalog record", "n", len(extra))
		if err := s.dense.Save(); err != nil {
			return fmt.Errorf("dense index: %w", err)
		}
	}
	if err := s.relost(IndexDense, missing(marked[IndexDense], have)); err != nil {
		return err
	}

	// CUR.
	if s.cur != nil {
		var lostCUR []string
		for id := range marked[IndexCUR] {
			if !s.cur.Has(id) {
				lostCUR = append(lostCUR, id)
			}
		}
		if err := s.relost(IndexCUR, lostCUR); err != nil {
			return err
		}
	}
	return nil
}

// missing returns the ids marked but not in have, sorted.
func missing(marked map[string]bool, have []string) []string {
	in := make(map[string]bool, len(have))
	for _, id := range have {
		in[id] = true
	}
	var out []string
	for id := range marked {
		if !in[id] {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// relost clears the index mark of chunks index ix lost and indexes them
// again.
func (s *Service) relost(ix string, lost []string) error {
	if len(lost) == 0 {
		return nil
	}
	s.log.Info("re-indexing chunks an index lost", "index", ix, "n", len(lost))
	if err := s.cat.markIndexed(ix, lost, false); err != nil {
		return err
	}
	_, err := s.index(context.Background(), lost, func(Progress) {})
	return err
}

// sortRefs orders chunks by their position in the document.
func sortRefs(cs []ChunkInfo) []ChunkInfo {
	slices.SortFunc(cs, func(a, b ChunkInfo) int { return cmp.Compare(a.Start, b.Start) })
	return cs
}
