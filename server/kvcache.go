package server

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blendrag/blendrag/blend"
	"github.com/blendrag/blendrag/kvstore"
	"github.com/blendrag/blendrag/model"
	"github.com/blendrag/blendrag/retrieval/cur"
)

// IndexKV marks a chunk whose KV has been computed into the KV store once.
// Unlike the search indexes it is not needed for a document to commit: the
// KV is precomputed in the background, and a chunk whose KV is missing when
// a question needs it (not computed yet, evicted, corrupt) is computed then.
const IndexKV = "kv"

// KVProgress reports the background precompute: each chunk's KV and, with
// the KV-cached cross-encoder, its CUR column right after (a chunk counts
// as done when both are).
type KVProgress struct {
	// Done counts the steps made since Open — a chunk's KV, or (after
	// every chunk's KV) a chunk's CUR column; Total is Done + steps waiting.
	Done    int           `json:"done"`
	Total   int           `json:"total"`
	Running bool          `json:"running"` // a chunk is being computed now
	ETA     time.Duration `json:"eta_ns"`  // from the mean time per chunk so far
	Err     string        `json:"error,omitempty"`
}

// engine is the generator side of the Service: the model, the segment
// format, P's KV and the KV store, and the background precompute.
type engine struct {
	m      *model.Model
	be     model.Backend // Config.Device's backend of m
	format *blend.Format
	prefix *model.KV // P's KV, computed at Open (or loaded from the store)
	store  *kvstore.Store
	fp     string // model fingerprint (part of every KV key)
	fid    *fidelity
	hot    *hotKV // recently used chunks' decoded KV in host RAM
	// devTier is the device tier's record (model.ChunkTier) as of the
	// last fusion, for readers that must not wait for the model.
	devTier atomic.Pointer[model.ChunkTierStats]
	// dm, dbe and dprefix are the RAPID drafter's model, backend and P's KV
	// when Config.DraftModelPath is set (else nil: the generator drafts).
	dm      *model.Model
	dbe     model.Backend
	dprefix *model.KV
	// rapid remembers what RAPID's steps cost on this machine, so that a
	// request whose drafting cannot pay skips the drafter altogether.
	rapid blend.RapidCosts

	// mu serialises use of the model. Queries announce themselves in
	// waiting so the precompute yields between chunks.
	mu      sync.Mutex
	waiting atomic.Int32

	wake   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}

	pmu      sync.Mutex
	progress KVProgress
	spent    time.Duration
}

// key is the KV store key of a chunk (or of P, named "P").
func (e *engine) key(chunk string) kvstore.Key {
	return kvstore.Key{Model: e.fp, Segment: e.format.Key(), Chunk: chunk}
}

// lockForQuery takes the model ahead of the background precompute.
func (e *engine) lockForQuery() func() {
	e.waiting.Add(1)
	e.mu.Lock()
	e.waiting.Add(-1)
	return e.mu.Unlock
}

// openEngine loads the generator and the KV store and makes P's KV.
func (s *Service) openEngine() error {
	m, err := model.Load(s.cfg.GeneratorPath, model.Options{Threads: s.cfg.Threads})
	if err != nil {
		return fmt.Errorf("generator: %w", err)
	}
	device := s.cfg.Device
	if device == "" {
		device = "cpu"
	}
	be, err := m.OpenBackend(device)
	if err != nil {
		m.Close()
		return fmt.Errorf("generator: %w", err)
	}
	if t, ok := be.(model.ChunkTier); ok && s.cfg.DeviceKVBytes != 0 {
		if err := t.SetChunkBudget(s.cfg.DeviceKVBytes); err != nil {
			be.Close()
			m.Close()
			return fmt.Errorf("generator: device chunk tier: %w", err)
		}
	}
	hot := s.cfg.HotKVBytes
	if hot == 0 {
		hot = DefaultHotKVBytes
	}
	e := &engine{m: m, be: be, fp: m.Fingerprint()[:16], wake: make(chan struct{}, 1), hot: newHotKV(hot)}
	s.eng = e
	if e.format, err = blend.NewFormat(m.Tok, s.cfg.System, s.cfg.Instruction); err != nil {
		return err
	}
	kvo := s.cfg.KV
	if kvo.Logger == nil {
		kvo.Logger = s.log.With("component", "kvstore")
	}
	if e.store, err = kvstore.Open(s.cfg.DataDir+"/kv", kvo); err != nil {
		return err
	}
	if e.fid, err = newFidelity(s.cfg.DataDir, e.fp, e.format.Key()); err != nil {
		return err
	}
	if p := s.cfg.DraftModelPath; p != "" {
		if err := e.openDrafter(p, device); err != nil {
			return fmt.Errorf("draft model %s: %w", p, err)
		}
	}
	if e.prefix, err = e.store.Get(e.key("P")); err != nil {
		if e.prefix, err = blend.EncodePrefixOn(e.be, m, e.format.Prefix()); err != nil {
			return fmt.Errorf("prefix: %w", err)
		}
		if err := e.store.Put(e.key("P"), e.prefix); err != nil {
			return err
		}
		// Use P as stored (the codec rounds it), so chunk KV computed in
		// this session and after a restart attend to the same P.
		if e.prefix, err = e.store.Get(e.key("P")); err != nil {
			return fmt.Errorf("prefix: %w", err)
		}
	}
	return nil
}

// openDrafter loads the RAPID drafter's GGUF on device and encodes P with it.
func (e *engine) openDrafter(path, device string) error {
	var err error
	if e.dm, e.dbe, err = blend.OpenDrafter(e.m, path, device); err != nil {
		return err
	}
	if e.dprefix, err = blend.EncodePrefixOn(e.dbe, e.dm, e.format.Prefix()); err != nil {
		return fmt.Errorf("prefix: %w", err)
	}
	return nil
}

// startPrecompute runs the background KV precompute until Close.
func (s *Service) startPrecompute() {
	e := s.eng
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan struct{})
	go func() {
		defer close(e.done)
		for {
			n, err := s.precomputeSome(ctx)
			if err != nil && ctx.Err() == nil {
				s.log.Error("kv precompute", "err", err)
				e.pmu.Lock()
				e.progress.Err = err.Error()
				e.pmu.Unlock()
			}
			if n > 0 && err == nil {
				continue
			}
			select {
			case <-ctx.Done():
				return
			case <-e.wake:
			case <-time.After(time.Minute): // retry after errors
			}
		}
	}()
	s.kickPrecompute()
}

func (s *Service) kickPrecompute() {
	if s.eng == nil {
		return
	}
	select {
	case s.eng.wake <- struct{}{}:
	default:
	}
}

// pendingKV lists committed chunks whose KV was never computed.
func (s *Service) pendingKV() ([]chunkRecord, error) {
	var out []chunkRecord
	err := s.cat.chunks(func(rec chunkRecord) bool {
		if !rec.Indexes[IndexKV] && rec.Indexes[IndexBM25] && len(rec.Refs) > 0 {
			out = append(out, rec)
		}
		return true
	})
	return out, err
}

// pendingWork lists committed chunks whose KV was never computed or,
// with background CUR columns, whose CUR column is missing.
func (s *Service) pendingWork() ([]chunkRecord, error) {
	bg := s.curInBackground()
	var out []chunkRecord
	err := s.cat.chunks(func(rec chunkRecord) bool {
		if rec.Indexes[IndexBM25] && len(rec.Refs) > 0 && (!rec.Indexes[IndexKV] || bg && !rec.Indexes[IndexCUR]) {
			out = append(out, rec)
		}
		return true
	})
	return out, err
}

// precomputeSome computes the KV of every pending chunk, one at a time,
// and then, with background CUR columns, the missing CUR columns —
// KV first, because questions need it and the columns only refine search.
// It yields the model to queries between chunks (and between the
// cross-encoder's questions). It returns how many steps it made.
func (s *Service) precomputeSome(ctx context.Context) (int, error) {
	e := s.eng
	todo, err := s.pendingWork()
	if err != nil {
		return 0, err
	}
	bg := s.curInBackground()
	var needKV, needCUR []chunkRecord
	for _, rec := range todo {
		if !rec.Indexes[IndexKV] {
			needKV = append(needKV, rec)
		}
		if bg && !rec.Indexes[IndexCUR] {
			needCUR = append(needCUR, rec)
		}
	}
	e.pmu.Lock()
	e.progress.Total = e.progress.Done + len(needKV) + len(needCUR)
	e.progress.Err = ""
	e.pmu.Unlock()
	n := 0
	step := func(work func() error) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		for e.waiting.Load() > 0 { // queries first
			time.Sleep(5 * time.Millisecond)
		}
		start := time.Now()
		e.pmu.Lock()
		e.progress.Running = true
		e.pmu.Unlock()
		err := work()
		e.pmu.Lock()
		e.progress.Running = false
		if err == nil {
			e.progress.Done++
			e.spent += time.Since(start)
			left := e.progress.Total - e.progress.Done
			e.progress.ETA = e.spent / time.Duration(e.progress.Done) * time.Duration(max(left, 0))
		}
		e.pmu.Unlock()
		if err == nil {
			n++
		}
		return err
	}
	for _, rec := range needKV {
		if err := step(func() error {
			e.mu.Lock()
			defer e.mu.Unlock()
			return s.computeChunkKV(rec.ID, rec.Text)
		}); err != nil {
			return n, err
		}
	}
	for _, rec := range needCUR {
		if err := step(func() error { return s.addCURColumn(ctx, rec.ID) }); err != nil {
			return n, err
		}
	}
	return n, nil
}

// computeChunkKV prefills one chunk after P, stores its KV and marks it.
// The caller holds e.mu.
func (s *Service) computeChunkKV(id, text string) error {
	e := s.eng
	kv, err := blend.EncodeChunkOn(e.be, e.m, e.prefix, e.format.Chunk(text))
	if err != nil {
		return fmt.Errorf("chunk %s: %w", id, err)
	}
	if err := e.store.Put(e.key(id), kv); err != nil {
		return fmt.Errorf("chunk %s: %w", id, err)
	}
	return s.cat.markIndexed(IndexKV, []string{id}, true)
}

// chunkKV is the KV-cached cross-encoder's lookup: chunk id's stored KV.
// A chunk the store lacks or holds corrupt (the store drops a corrupt
// value on reading; it is never served) is encoded in memory for this
// score, and not stored: storing chunk KV is the precompute's and Ask's
// job (Ask counts what it had to compute), and the search path stays
// read-only on the store. The caller holds e.mu (the cross-encoder's lock).
func (s *Service) chunkKV(_ context.Context, id string) (*model.KV, error) {
	e := s.eng
	kv, err := e.store.Get(e.key(id))
	if err == nil {
		return kv, nil
	}
	if !errors.Is(err, kvstore.ErrNotFound) && !errors.Is(err, kvstore.ErrCorrupt) {
		return nil, err
	}
	if errors.Is(err, kvstore.ErrCorrupt) {
		s.log.Warn("corrupt chunk KV for the cross-encoder; encoding it again", "chunk", id, "err", err)
	}
	ch, found, err := s.cat.chunk(id)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("chunk %s: not in the catalog: %w", id, ErrNotFound)
	}
	kv, err = blend.EncodeChunkOn(e.be, e.m, e.prefix, e.format.Chunk(ch.Text))
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %w", id, err)
	}
	return kv, nil
}

// DefaultKVCURAnchorChunks is k_i, the anchor chunks a CUR search scores
// exactly, with the KV-cached cross-encoder. Each costs a question-length
// forward over a chunk's KV (~0.2 s on 2 cores for a MuSiQue question), so
// the default keeps hybrid search within about a second (docs/CUR.md).
const DefaultKVCURAnchorChunks = 4

// openCUR picks the cross-encoder (Config.CrossEncoder, else the KV-cached
// one when the generator is loaded) and opens the CUR index over it.
func (s *Service) openCUR() error {
	opt := s.cfg.CUR
	switch {
	case s.cfg.CrossEncoder != nil:
		s.ce = s.cfg.CrossEncoder
	case s.eng != nil && !s.cfg.NoCrossEncoder:
		e := s.eng
		ce, err := blend.NewCrossEncoder(e.m, e.format, e.prefix, s.chunkKV, blend.CrossEncoderOptions{Lock: e.lockForQuery, Backend: e.be})
		if err != nil {
			return err
		}
		s.ce, s.kvCE = ce, ce
		if opt.AnchorChunks <= 0 {
			opt.AnchorChunks = DefaultKVCURAnchorChunks
		}
	default:
		return nil
	}
	// cur's defaults, resolved here for ensureAnchors and curReady.
	if opt.AnchorQueries <= 0 {
		opt.AnchorQueries = 32
	}
	if opt.AnchorChunks <= 0 {
		opt.AnchorChunks = 32
	}
	if opt.TopK <= 0 {
		opt.TopK = 16
	}
	s.curOpt = opt
	var err error
	s.cur, err = cur.Open(filepath.Join(s.cfg.DataDir, "cur.idx"), s.ce, opt)
	return err
}

// CrossEncoder returns the cross-encoder of CUR search and rerank, nil when
// both are off.
func (s *Service) CrossEncoder() cur.CrossEncoder { return s.ce }

// curAtIngest reports whether CUR columns are computed at ingest, as part
// of a document's commit (an injected cross-encoder).
func (s *Service) curAtIngest() bool { return s.cur != nil && s.kvCE == nil }

// curInBackground reports whether CUR columns follow the KV precompute.
func (s *Service) curInBackground() bool {
	return s.cur != nil && s.kvCE != nil && !s.cfg.NoCURColumns
}

// curReady reports whether a CUR search can run: the index scores every
// chunk exactly while it holds at most k_i + k_r of them, and needs anchor
// queries beyond that.
func (s *Service) curReady() bool {
	return s.cur != nil && (s.cur.Len() <= s.curOpt.AnchorChunks+s.curOpt.TopK || len(s.cur.Anchors()) > 0)
}

// addCURColumn computes chunk id's CUR column (every anchor query over
// its KV), saves the index and marks the chunk. The anchor queries are
// sampled from the corpus once it outgrows exact search.
func (s *Service) addCURColumn(ctx context.Context, id string) error {
	rec, found, err := s.cat.chunk(id)
	if err != nil {
		return err
	}
	if !found || len(rec.Refs) == 0 { // deleted meanwhile
		return nil
	}
	if err := s.ensureAnchors(ctx); err != nil {
		return err
	}
	if err := s.cur.AddChunk(ctx, id); err != nil {
		return fmt.Errorf("cur: %w", err)
	}
	if err := s.cur.Save(); err != nil {
		return fmt.Errorf("cur: %w", err)
	}
	return s.cat.markIndexed(IndexCUR, []string{id}, true)
}

// ensureAnchors sets the anchor queries, sampled from the committed
// chunks' texts (cur.SampleAnchors), once there are more chunks than exact
// search covers. Setting them computes the columns of the chunks already
// indexed.
func (s *Service) ensureAnchors(ctx context.Context) error {
	if len(s.cur.Anchors()) > 0 {
		return nil
	}
	var texts []string
	err := s.cat.chunks(func(rec chunkRecord) bool {
		if rec.Indexes[IndexBM25] && len(rec.Refs) > 0 {
			texts = append(texts, rec.Text)
		}
		return true
	})
	if err != nil || len(texts) <= s.curOpt.AnchorChunks+s.curOpt.TopK {
		return err
	}
	anchors := cur.SampleAnchors(texts, s.curOpt.AnchorQueries, s.curOpt.Seed)
	if len(anchors) == 0 {
		return nil
	}
	s.log.Info("cur: setting anchor queries", "anchors", len(anchors), "chunks", s.cur.Len())
	if err := s.cur.SetAnchors(ctx, anchors); err != nil {
		return fmt.Errorf("cur: %w", err)
	}
	return s.cur.Save()
}

// KVTiers is what the tiers of chunk KV hold: the decoded KV of recently
// used chunks in host RAM (Config.HotKVBytes), and, with a GPU Device, the
// chunks' KV in device memory (Config.DeviceKVBytes; as of the last
// question, since the device's own record is read under the model's lock).
type KVTiers struct {
	HotChunks int   `json:"hot_chunks"`
	HotBytes  int64 `json:"hot_bytes"`
	// Device is the device tier's record (entries are (chunk, layer)
	// pairs); zero without one.
	Device model.ChunkTierStats `json:"device"`
}

// KVTiers reports the tiers of chunk KV.
func (s *Service) KVTiers() KVTiers {
	if s.eng == nil {
		return KVTiers{}
	}
	var t KVTiers
	t.HotChunks, t.HotBytes = s.eng.hot.size()
	if d := s.eng.devTier.Load(); d != nil {
		t.Device = *d
	}
	return t
}

// KVProgress reports the background KV precompute.
func (s *Service) KVProgress() KVProgress {
	if s.eng == nil {
		return KVProgress{}
	}
	s.eng.pmu.Lock()
	defer s.eng.pmu.Unlock()
	return s.eng.progress
}

// closeEngine stops the precompute and closes the KV store and the model.
func (s *Service) closeEngine() error {
	e := s.eng
	if e == nil {
		return nil
	}
	if e.cancel != nil {
		e.cancel()
		<-e.done
	}
	var errs []error
	if e.store != nil {
		errs = append(errs, e.store.Close())
	}
	if e.dbe != nil {
		errs = append(errs, e.dbe.Close())
	}
	if e.dm != nil {
		errs = append(errs, e.dm.Close())
	}
	if e.be != nil {
		errs = append(errs, e.be.Close())
	}
	if e.m != nil {
		errs = append(errs, e.m.Close())
	}
	return errors.Join(errs...)
}

// KVPending counts committed chunks whose KV has never been computed.
func (s *Service) KVPending() int {
	return s.countPending(s.pendingKV)
}

// CURPending is the number of committed chunks whose CUR column the
// background precompute has yet to compute (0 when CUR columns are not
// computed in the background), or -1 if the catalog cannot be read.
func (s *Service) CURPending() int {
	if s.eng == nil || !s.curInBackground() {
		return 0
	}
	return s.countPending(func() ([]chunkRecord, error) {
		var out []chunkRecord
		err := s.cat.chunks(func(rec chunkRecord) bool {
			if rec.Indexes[IndexBM25] && len(rec.Refs) > 0 && !rec.Indexes[IndexCUR] {
				out = append(out, rec)
			}
			return true
		})
		return out, err
	})
}

// countPending is len(list()), 0 without a generator, -1 on error.
func (s *Service) countPending(list func() ([]chunkRecord, error)) int {
	if s.eng == nil {
		return 0
	}
	todo, err := list()
	if err != nil {
		return -1
	}
	return len(todo)
}
