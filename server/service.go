package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/blendrag/blendrag/blend"
	"github.com/blendrag/blendrag/internal/atomicfile"
	"github.com/blendrag/blendrag/kvstore"
	"github.com/blendrag/blendrag/model/bert"
	"github.com/blendrag/blendrag/model/fetch"
	"github.com/blendrag/blendrag/model/tokenizer"
	"github.com/blendrag/blendrag/retrieval"
	"github.com/blendrag/blendrag/retrieval/cur"
	"github.com/blendrag/blendrag/retrieval/vector"
)

// Errors the Service returns (wrapped with context); the HTTP layer maps
// them to status codes.
var (
	ErrNotFound   = errors.New("not found")
	ErrBadRequest = errors.New("bad request")
	ErrNoCE       = errors.New("no cross-encoder configured")
)

// Config configures Open. DataDir is required; every other field has a
// default.
type Config struct {
	// DataDir holds the catalog, the indexes and (later) the KV store.
	DataDir string
	// ModelsDir is where the default models are looked up; default fetch.Dir().
	ModelsDir string
	// GeneratorPath is the generator GGUF whose tokenizer cuts chunks;
	// default the default model in ModelsDir.
	GeneratorPath string
	// EmbedderDir holds the MiniLM files; default the default embedder in ModelsDir.
	EmbedderDir string
	// Threads for the embedder and exact vector search; 0 means all cores.
	Threads int
	// Device is the generator's compute device (model.Model.OpenBackend):
	// "cpu" (the default when empty), "cuda" or "cuda:N", optionally with
	// "+blas" (model.DeviceSpec) — the CUDA ones need a binary built with
	// -tags cuda (otherwise Open fails with an error wrapping
	// model.ErrNoCUDA).
	Device string

	Chunking retrieval.ChunkOptions
	Limits   retrieval.Limits
	Vector   vector.Options
	Catalog  CatalogOptions

	// CrossEncoder, when set, is the cross-encoder of CUR search and exact
	// reranking; the CUR column of each chunk is then computed at ingest
	// and is part of its commit. When nil and the generator is loaded, the
	// KV-cached cross-encoder (blend.CrossEncoder, over each chunk's stored
	// KV) is used, and each chunk's CUR column is computed in the
	// background right after its KV. Without either, CUR and rerank are off.
	CrossEncoder cur.CrossEncoder
	// NoCrossEncoder turns the default KV-cached cross-encoder off.
	NoCrossEncoder bool
	// NoCURColumns stops the background CUR columns of the KV-cached
	// cross-encoder (CUR search then covers the chunks already indexed);
	// for tools that call the cross-encoder directly (eval cur).
	NoCURColumns bool
	// CUR configures the CUR index. With the KV-cached cross-encoder a
	// zero AnchorChunks means DefaultKVCURAnchorChunks.
	CUR cur.Options

	// EmbedBatch is how many chunks are embedded per call; default 16.
	EmbedBatch int

	// NoGenerator skips loading the generator and the KV store: the service
	// ingests and searches but cannot answer (Ask fails), and no chunk KV is
	// precomputed. For retrieval-only tools and tests.
	NoGenerator bool
	// KV configures the chunk KV store (DIR/kv).
	KV kvstore.Options
	// DraftModelPath, when set, is a GGUF that drafts for RAPID instead of
	// the generator itself: a smaller model of the same tokenizer
	// (blend.CheckDrafter), on the same Device. Its chunk KV is computed per
	// request for the drafter's few chunks.
	DraftModelPath string
	// HotKVBytes is the host RAM kept for the hot tier of chunk KV: the
	// decoded KV of the most recently used chunks, served without reading
	// the store (0: DefaultHotKVBytes; negative: no hot tier).
	HotKVBytes int64
	// DeviceKVBytes is the device memory a GPU Device keeps for its tier
	// of chunk KV (model.ChunkTier): the most recently used chunks' KV,
	// from which a fused context is assembled within the device (0:
	// model.DefaultChunkTierBytes; negative: no device tier). The CPU
	// ignores it.
	DeviceKVBytes int64
	// System and Instruction override the shared prefix P's texts
	// (blend.DefaultSystem, blend.DefaultInstruction). Changing them
	// invalidates stored chunk KV (it is recomputed under the new P).
	System, Instruction string

	// Logger receives operational logs; default discards them.
	Logger *slog.Logger
}

// Service is blendrag's application core: the document catalog, the ingest
// pipeline (parse → chunk → BM25 + dense + CUR → commit) and search. The CLI
// and the HTTP layer both use it. It is safe for concurrent use: ingest and
// delete are serialised, searches run concurrently with them and with each
// other, and a search only ever sees committed documents.
type Service struct {
	cfg     Config
	log     *slog.Logger
	tok     *tokenizer.Tokenizer
	chunker *retrieval.Chunker
	embed   *bert.Encoder
	cat     *catalog
	bm25    *retrieval.BM25
	dense   *vector.Index
	cur     *cur.Index // nil without a cross-encoder
	curOpt  cur.Options
	ce      cur.CrossEncoder    // Config.CrossEncoder or kvCE; nil when off
	kvCE    *blend.CrossEncoder // the KV-cached cross-encoder, when used
	eng     *engine             // nil with NoGenerator

	write sync.Mutex // serialises ingest, delete and recovery
}

// dataMeta is DIR/blendrag.json: what the data directory was built with.
// Chunk ids and boundaries depend on the tokenizer and chunk options, so a
// mismatch is an error rather than a silently mixed store.
type dataMeta struct {
	Version  int                    `json:"version"`
	Chunking retrieval.ChunkOptions `json:"chunking"`
	EmbedDim int                    `json:"embed_dim"`
}

const dataVersion = 1

// Open opens (creating if needed) the service's store in cfg.DataDir, loads
// the tokenizer and the embedder, and finishes or rolls back any ingest or
// delete that a crash interrupted.
func Open(cfg Config) (s *Service, err error) {
	if cfg.DataDir == "" {
		return nil, fmt.Errorf("server: Config.DataDir is required: %w", ErrBadRequest)
	}
	if cfg.ModelsDir == "" {
		cfg.ModelsDir = fetch.Dir()
	}
	if cfg.GeneratorPath == "" {
		cfg.GeneratorPath = fetch.GeneratorPath(cfg.ModelsDir)
	}
	if cfg.EmbedderDir == "" {
		cfg.EmbedderDir = fetch.EmbedderDir(cfg.ModelsDir)
	}
	if cfg.EmbedBatch <= 0 {
		cfg.EmbedBatch = 16
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	svc := &Service{cfg: cfg, log: cfg.Logger}
	s = svc
	defer func() {
		if err != nil {
			svc.Close() // s is nil here: every error return sets it
			s = nil
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("server: data dir: %w", err)
	}
	if s.tok, err = tokenizer.Load(cfg.GeneratorPath); err != nil {
		return nil, fmt.Errorf("server: generator tokenizer: %w", err)
	}
	if s.chunker, err = retrieval.NewChunker(s.tok, cfg.Chunking); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	if s.embed, err = bert.Load(cfg.EmbedderDir, bert.Options{Threads: cfg.Threads}); err != nil {
		return nil, fmt.Errorf("server: embedder: %w", err)
	}
	if err := s.checkMeta(); err != nil {
		return nil, err
	}
	if s.cat, err = openCatalog(filepath.Join(cfg.DataDir, "catalog"), cfg.Catalog, s.log); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	if s.bm25, err = retrieval.OpenBM25(filepath.Join(cfg.DataDir, "bm25")); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	vopt := cfg.Vector
	if vopt.Threads <= 0 {
		vopt.Threads = cfg.Threads
	}
	if s.dense, err = vector.Open(filepath.Join(cfg.DataDir, "dense.vec"), s.embed.Dim(), vopt); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	if !cfg.NoGenerator {
		if err := s.openEngine(); err != nil {
			return nil, fmt.Errorf("server: %w", err)
		}
	}
	if err := s.openCUR(); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	if err := s.recover(context.Background()); err != nil {
		return nil, fmt.Errorf("server: recovery: %w", err)
	}
	if s.eng != nil {
		s.startPrecompute()
	}
	return s, nil
}

// checkMeta writes DIR/blendrag.json on first open and checks it after.
func (s *Service) checkMeta() error {
	path := filepath.Join(s.cfg.DataDir, "blendrag.json")
	want := dataMeta{Version: dataVersion, Chunking: s.chunker.Options(), EmbedDim: s.embed.Dim()}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		b, _ = json.MarshalIndent(want, "", "  ")
		return atomicfile.WriteFile(path, b)
	}
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	var have dataMeta
	if err := json.Unmarshal(b, &have); err != nil {
		return fmt.Errorf("server: %s is corrupt: %w", path, err)
	}
	if have != want {
		return fmt.Errorf("server: %s was built with %+v, this configuration is %+v: use the same chunk options or a new data dir: %w",
			s.cfg.DataDir, have, want, ErrBadRequest)
	}
	return nil
}

// Close releases the stores. It is safe to call on a partly opened Service.
func (s *Service) Close() error {
	var errs []error
	errs = append(errs, s.closeEngine())
	if s.cur != nil {
		errs = append(errs, s.cur.Save())
	}
	if s.dense != nil {
		errs = append(errs, s.dense.Close())
	}
	if s.bm25 != nil {
		errs = append(errs, s.bm25.Close())
	}
	if s.cat != nil {
		errs = append(errs, s.cat.close())
	}
	if s.embed != nil {
		errs = append(errs, s.embed.Close())
	}
	return errors.Join(errs...)
}

// DocumentInfo describes one document.
type DocumentInfo struct {
	ID         string    `json:"id"`
	Title      string    `json:"title"`
	FileName   string    `json:"file_name,omitempty"`
	Kind       string    `json:"kind"`
	Size       int64     `json:"size"`
	Pages      int       `json:"pages,omitempty"`
	Chunks     int       `json:"chunks"`
	IngestedAt time.Time `json:"ingested_at"`
}

// ChunkInfo is one chunk of a document.
type ChunkInfo struct {
	ID     string `json:"id"`
	Text   string `json:"text"`
	Tokens int    `json:"tokens"`
	ChunkRef
}

// Document returns the metadata of committed document id and its chunks in
// document order. The error wraps ErrNotFound when there is none.
func (s *Service) Document(id string) (DocumentInfo, []ChunkInfo, error) {
	rec, found, err := s.cat.doc(id)
	if err != nil {
		return DocumentInfo{}, nil, fmt.Errorf("document %s: %w", id, err)
	}
	if !found || rec.State != stateCommitted {
		return DocumentInfo{}, nil, fmt.Errorf("document %s: %w", id, ErrNotFound)
	}
	var chunks []ChunkInfo
	for _, cid := range rec.Chunks {
		ch, found, err := s.cat.chunk(cid)
		if err != nil {
			return DocumentInfo{}, nil, fmt.Errorf("document %s: %w", id, err)
		}
		if !found {
			return DocumentInfo{}, nil, fmt.Errorf("document %s: chunk %s missing from the catalog", id, cid)
		}
		for _, r := range ch.Refs {
			if r.Doc == id {
				chunks = append(chunks, ChunkInfo{ID: ch.ID, Text: ch.Text, Tokens: ch.Tokens, ChunkRef: r})
			}
		}
	}
	chunks = sortRefs(chunks)
	return rec.Doc, chunks, nil
}

// Documents returns committed documents in id order, skipping offset and
// returning at most limit (limit ≤ 0: all), and the total count.
func (s *Service) Documents(offset, limit int) (docs []DocumentInfo, total int, err error) {
	err = s.cat.docs(func(rec docRecord) bool {
		if rec.State != stateCommitted {
			return true
		}
		if total >= offset && (limit <= 0 || len(docs) < limit) {
			docs = append(docs, rec.Doc)
		}
		total++
		return true
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list documents: %w", err)
	}
	return docs, total, nil
}
