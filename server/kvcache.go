package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blendrag/blendrag/blend"
	"github.com/blendrag/blendrag/kvstore"
	"github.com/blendrag/blendrag/model"
)

// IndexKV marks a chunk whose KV has been computed into the KV store once.
// Unlike the search indexes it is not needed for a document to commit: the
// KV is precomputed in the background, and a chunk whose KV is missing when
// a question needs it (not computed yet, evicted, corrupt) is computed then.
const IndexKV = "kv"

// KVProgress reports the background KV precompute.
type KVProgress struct {
	Done    int           `json:"done"`    // chunks computed since Open
	Total   int           `json:"total"`   // Done + chunks waiting
	Running bool          `json:"running"` // a chunk is being computed now
	ETA     time.Duration `json:"eta_ns"`  // from the mean time per chunk so far
	Err     string        `json:"error,omitempty"`
}

// engine is the generator side of the Service: the model, the segment
// format, P's KV and the KV store, and the background precompute.
type engine struct {
	m      *model.Model
	format *blend.Format
	prefix *model.KV // P's KV, computed at Open (or loaded from the store)
	store  *kvstore.Store
	fp     string // model fingerprint (part of every KV key)
	fid    *fidelity

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
	e := &engine{m: m, fp: m.Fingerprint()[:16], wake: make(chan struct{}, 1)}
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
	if e.prefix, err = e.store.Get(e.key("P")); err != nil {
		if e.prefix, err = blend.EncodePrefix(m, e.format.Prefix()); err != nil {
			return fmt.Errorf("prefix: %w", err)
		}
		if err := e.store.Put(e.key("P"), e.prefix); err != nil {
			return err
		}
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

// precomputeSome computes the KV of pending chunks one at a time, yielding
// the model to queries between chunks. It returns how many it computed.
func (s *Service) precomputeSome(ctx context.Context) (int, error) {
	e := s.eng
	todo, err := s.pendingKV()
	if err != nil {
		return 0, err
	}
	e.pmu.Lock()
	e.progress.Total = e.progress.Done + len(todo)
	e.progress.Err = ""
	e.pmu.Unlock()
	n := 0
	for _, rec := range todo {
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
		for e.waiting.Load() > 0 { // queries first
			time.Sleep(5 * time.Millisecond)
		}
		start := time.Now()
		e.mu.Lock()
		e.pmu.Lock()
		e.progress.Running = true
		e.pmu.Unlock()
		err := s.computeChunkKV(rec.ID, rec.Text)
		e.mu.Unlock()
		e.pmu.Lock()
		e.progress.Running = false
		if err == nil {
			e.progress.Done++
			e.spent += time.Since(start)
			left := e.progress.Total - e.progress.Done
			e.progress.ETA = e.spent / time.Duration(e.progress.Done) * time.Duration(max(left, 0))
		}
		e.pmu.Unlock()
		if err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// computeChunkKV prefills one chunk after P, stores its KV and marks it.
// The caller holds e.mu.
func (s *Service) computeChunkKV(id, text string) error {
	e := s.eng
	kv, err := blend.EncodeChunk(e.m, e.prefix, e.format.Chunk(text))
	if err != nil {
		return fmt.Errorf("chunk %s: %w", id, err)
	}
	if err := e.store.Put(e.key(id), kv); err != nil {
		return fmt.Errorf("chunk %s: %w", id, err)
	}
	return s.cat.markIndexed(IndexKV, []string{id}, true)
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
	if e.m != nil {
		errs = append(errs, e.m.Close())
	}
	return errors.Join(errs...)
}

// KVPending counts committed chunks whose KV has never been computed.
func (s *Service) KVPending() int {
	if s.eng == nil {
		return 0
	}
	todo, err := s.pendingKV()
	if err != nil {
		return -1
	}
	return len(todo)
}
