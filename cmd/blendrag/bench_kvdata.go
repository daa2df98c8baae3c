package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/blendrag/blendrag/blend"
	"github.com/blendrag/blendrag/kvstore"
	"github.com/blendrag/blendrag/model"
	"github.com/blendrag/blendrag/model/fetch"
	"github.com/blendrag/blendrag/retrieval"
	"github.com/blendrag/blendrag/server"
)

// kvLoadRate is one streaming measurement: every layer of the sample's
// chunks read through a kvstore.Loader.
type kvLoadRate struct {
	Seconds float64 `json:"seconds"`
	// GBs is the stored (encoded) bytes streamed per second, 1e9 bytes.
	GBs  float64 `json:"gb_s"`
	TokS float64 `json:"tok_s"`
}

// kvDataCodec is one codec's row of `bench kv --data`.
type kvDataCodec struct {
	Codec   kvstore.Codec `json:"codec"`
	Default bool          `json:"default,omitempty"`
	// Store marks the data directory's own codec, measured in DIR/kv; the
	// other codecs are measured in a temporary store holding the sample
	// re-encoded.
	Store bool `json:"store,omitempty"`
	// BytesPerToken is the stored bytes (metadata record and layer values,
	// as kvstore.Store.Usage counts them) per row, all layers, of the
	// sample put into an empty store with this codec.
	BytesPerToken float64 `json:"bytes_per_token"`
	// Cold is the first stream after the store was opened afresh (Badger's
	// block cache empty) and, where DropCaches says so, the OS page cache
	// dropped; Warm the mean of the streams that follow.
	Cold kvLoadRate `json:"cold"`
	Warm kvLoadRate `json:"warm"`
}

// kvDataResult is the JSON `bench kv --data` prints.
type kvDataResult struct {
	Data       string        `json:"data"`
	Model      string        `json:"model"`
	StoreCodec kvstore.Codec `json:"store_codec"`
	Layers     int           `json:"layers"`
	KVDim      int           `json:"kv_dim"`
	// Chunks is the distinct committed chunks; StoreBytes the store's
	// Usage (every chunk and P, all codecs).
	Chunks     int   `json:"chunks"`
	StoreBytes int64 `json:"store_bytes"`
	// SampleChunks and SampleTokens are the chunks (the first ones in
	// document order) every codec is measured on.
	SampleChunks int `json:"sample_chunks"`
	SampleTokens int `json:"sample_tokens"`
	// WarmRounds is the number of warm streams averaged.
	WarmRounds int `json:"warm_rounds"`
	// DropCaches says whether the OS page cache was dropped before each
	// cold stream (writing /proc/sys/vm/drop_caches needs root); when not,
	// ColdNote says why and cold means only a freshly opened store.
	DropCaches bool          `json:"drop_caches"`
	ColdNote   string        `json:"cold_note,omitempty"`
	Codecs     []kvDataCodec `json:"codecs"`
	// PrecomputeTokS is the chunk KV precompute rate: the sample's chunk
	// segments prefilled on their own after P (blend.EncodeChunk, the
	// service's precompute step, without the store write).
	PrecomputeTokS float64 `json:"precompute_tok_s"`
	// CECallsS is the KV-cached cross-encoder's rate: one question scored
	// over CEChunks chunks (ScoreChunks, KV read from the store included).
	CECallsS float64 `json:"ce_calls_s"`
	CEChunks int     `json:"ce_chunks"`
	Question string  `json:"ce_question"`
	Seconds  float64 `json:"seconds"`
}

// kvDataOptions configure benchKVData.
type kvDataOptions struct {
	Sample   int    // chunks measured per codec and precomputed
	CEChunks int    // chunks the cross-encoder scores
	Rounds   int    // warm streams per codec
	Question string // the cross-encoder's question
	NoDrop   bool   // do not drop the OS page cache before cold streams
}

// addKVDataBenchCommand registers `blendrag bench kv` under bench.
func addKVDataBenchCommand(bench *cobra.Command) {
	var df dataFlags
	var opt kvDataOptions
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "kv --data DIR",
		Short: "Chunk KV on a real store: bytes/token per codec, cold and warm load rates, precompute and cross-encoder rates",
		Long: "kv measures a data directory made by `blendrag ingest`. It opens the service, waits for\n" +
			"any pending chunk KV, and times the KV-cached cross-encoder scoring --question over the\n" +
			"first --ce-chunks chunks. Then it opens DIR/kv itself and streams every layer of the first\n" +
			"--sample chunks through a kvstore.Loader: cold (store just opened, OS page cache dropped when\n" +
			"the process may) and warm (--rounds more streams). For each other codec the sample is\n" +
			"read back, re-encoded into a temporary store and streamed the same way. Bytes per token\n" +
			"are those of the sample in an empty store with each codec. Finally it prefills the sample's\n" +
			"chunks after P (the precompute step) for tokens/s. The default codec is marked.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if df.device != "cpu" {
				return fmt.Errorf("--device %s: bench kv measures the CPU (its precompute and cross-encoder rates); see bench engine and eval blend for a GPU", df.device)
			}
			cfg := server.Config{
				DataDir:   df.dir,
				ModelsDir: modelsDir(cmd),
				Threads:   df.threads,
				Chunking:  retrieval.ChunkOptions{Tokens: df.chunkTokens, Overlap: df.chunkOverlap},
			}
			if df.verbose {
				cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
			}
			if _, err := os.Stat(filepath.Join(df.dir, "catalog")); err != nil {
				return fmt.Errorf("bench kv: %s is not a data directory (run blendrag ingest --data %s FILE...): %w", df.dir, df.dir, err)
			}
			res, err := benchKVData(cmd.Context(), cfg, opt, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				return json.NewEncoder(w).Encode(res)
			}
			printKVData(w, res)
			return nil
		},
	}
	df.register(cmd)
	cmd.Flags().IntVar(&opt.Sample, "sample", 16, "chunks streamed per codec and precomputed")
	cmd.Flags().IntVar(&opt.CEChunks, "ce-chunks", 8, "chunks the cross-encoder scores one question over")
	cmd.Flags().IntVar(&opt.Rounds, "rounds", 3, "warm streams per codec")
	cmd.Flags().StringVar(&opt.Question, "question", "How is each chunk's KV cache stored and loaded?", "the cross-encoder's question")
	cmd.Flags().BoolVar(&opt.NoDrop, "no-drop-caches", false, "do not drop the OS page cache before cold streams")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	bench.AddCommand(cmd)
}

// printKVData prints res as a table.
func printKVData(w io.Writer, res *kvDataResult) {
	fmt.Fprintf(w, "%s: %s, %d chunks (%d layers × %d), store codec %s, %.1f MB\n",
		res.Data, res.Model, res.Chunks, res.Layers, res.KVDim, res.StoreCodec, float64(res.StoreBytes)/1e6)
	fmt.Fprintf(w, "sample %d chunks, %d tokens; cold: drop caches %v %s\n", res.SampleChunks, res.SampleTokens, res.DropCaches, res.ColdNote)
	fmt.Fprintf(w, "%-14s %12s %10s %12s %10s %12s\n", "codec", "bytes/token", "cold GB/s", "cold tok/s", "warm GB/s", "warm tok/s")
	for _, c := range res.Codecs {
		name := string(c.Codec)
		if c.Default {
			name += "*"
		}
		if c.Store {
			name += " (store)"
		}
		fmt.Fprintf(w, "%-14s %12.0f %10.3f %12.0f %10.3f %12.0f\n", name, c.BytesPerToken, c.Cold.GBs, c.Cold.TokS, c.Warm.GBs, c.Warm.TokS)
	}
	fmt.Fprintf(w, "precompute %.1f tok/s; cross-encoder %.2f calls/s (%d chunks)\n", res.PrecomputeTokS, res.CECallsS, res.CEChunks)
}

// benchChunk is one distinct chunk of the store.
type benchChunk struct{ id, text string }

// benchKVData measures the store in cfg.DataDir (see `bench kv`). Progress
// notes go to logw.
func benchKVData(ctx context.Context, cfg server.Config, opt kvDataOptions, logw io.Writer) (*kvDataResult, error) {
	if opt.Sample < 1 || opt.CEChunks < 1 || opt.Rounds < 1 {
		return nil, fmt.Errorf("bench kv: --sample, --ce-chunks and --rounds must be ≥ 1")
	}
	t0 := time.Now()
	res := &kvDataResult{Data: cfg.DataDir, WarmRounds: opt.Rounds, Question: opt.Question}
	chunks, err := serviceBench(ctx, cfg, opt, res, logw)
	if err != nil {
		return nil, err
	}
	if cfg.GeneratorPath == "" {
		cfg.GeneratorPath = fetch.GeneratorPath(cfg.ModelsDir)
	}
	m, err := model.Load(cfg.GeneratorPath, model.Options{Threads: cfg.Threads})
	if err != nil {
		return nil, fmt.Errorf("bench kv: generator: %w", err)
	}
	defer m.Close()
	res.Model = m.Config.Name
	format, err := blend.NewFormat(m.Tok, cfg.System, cfg.Instruction)
	if err != nil {
		return nil, fmt.Errorf("bench kv: %w", err)
	}
	// The service's key of a chunk: model fingerprint (its first 16 hex
	// digits), segment format key, chunk id.
	key := func(id string) kvstore.Key {
		return kvstore.Key{Model: m.Fingerprint()[:16], Segment: format.Key(), Chunk: id}
	}
	sample := chunks[:min(opt.Sample, len(chunks))]
	keys := make([]kvstore.Key, len(sample))
	for i, c := range sample {
		keys[i] = key(c.id)
	}
	res.SampleChunks = len(sample)
	res.DropCaches, res.ColdNote = true, ""
	if opt.NoDrop {
		res.DropCaches, res.ColdNote = false, "--no-drop-caches"
	}
	quiet := slog.New(slog.DiscardHandler)
	storeCodec := cfg.KV.Codec
	if storeCodec == "" {
		storeCodec = kvstore.DefaultCodec
	}
	res.StoreCodec = storeCodec

	// The store's own codec, in DIR/kv.
	fmt.Fprintf(logw, "bench kv: streaming %d chunks from %s/kv (%s)\n", len(sample), cfg.DataDir, storeCodec)
	kvs, prefix, own, err := storeBench(ctx, cfg.DataDir, storeCodec, keys, key("P"), opt.Rounds, res)
	if err != nil {
		return nil, err
	}
	own.Store = true
	for _, kv := range kvs {
		res.SampleTokens += kv.Len()
	}
	res.Layers, res.KVDim = len(kvs[0].K), m.Config.KVDim()

	// Every codec's bytes per token, and the other codecs' load rates.
	tmp, err := os.MkdirTemp("", "blendrag-benchkv-")
	if err != nil {
		return nil, fmt.Errorf("bench kv: %w", err)
	}
	defer os.RemoveAll(tmp)
	for _, c := range kvstore.Codecs {
		row := kvDataCodec{Codec: c, Default: c == kvstore.DefaultCodec}
		if c == storeCodec {
			row.Cold, row.Warm, row.Store = own.Cold, own.Warm, true
		}
		fmt.Fprintf(logw, "bench kv: %s\n", c)
		if err := codecBench(ctx, filepath.Join(tmp, string(c)), c, keys, kvs, opt.Rounds, &row, res, quiet); err != nil {
			return nil, err
		}
		res.Codecs = append(res.Codecs, row)
	}

	// The precompute step over the sample.
	fmt.Fprintf(logw, "bench kv: precomputing %d chunks\n", len(sample))
	start, toks := time.Now(), 0
	for _, c := range sample {
		seg := format.Chunk(c.text)
		if _, err := blend.EncodeChunk(m, prefix, seg); err != nil {
			return nil, fmt.Errorf("bench kv: precompute %s: %w", c.id, err)
		}
		toks += len(seg)
	}
	res.PrecomputeTokS = float64(toks) / time.Since(start).Seconds()
	res.Seconds = time.Since(t0).Seconds()
	return res, nil
}

// serviceBench opens the service on cfg, waits for pending chunk KV, lists
// the distinct committed chunks in document order and times the KV-cached
// cross-encoder. It closes the service (which holds DIR/kv) before
// returning.
func serviceBench(ctx context.Context, cfg server.Config, opt kvDataOptions, res *kvDataResult, logw io.Writer) ([]benchChunk, error) {
	cfg.NoCURColumns = true // nothing else uses the model while it is timed
	svc, err := server.Open(cfg)
	if err != nil {
		return nil, fmt.Errorf("bench kv: %w", err)
	}
	chunks, err := timeCE(ctx, svc, cfg.DataDir, opt, res, logw)
	if cerr := svc.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("bench kv: closing the service: %w", cerr)
	}
	return chunks, err
}

// timeCE is serviceBench on the open service.
func timeCE(ctx context.Context, svc *server.Service, dir string, opt kvDataOptions, res *kvDataResult, logw io.Writer) ([]benchChunk, error) {
	for n := svc.KVPending(); n != 0; n = svc.KVPending() {
		if n < 0 {
			return nil, fmt.Errorf("bench kv: cannot read the catalog")
		}
		if p := svc.KVProgress(); p.Err != "" {
			return nil, fmt.Errorf("bench kv: chunk KV precompute: %s", p.Err)
		}
		fmt.Fprintf(logw, "bench kv: waiting for %d chunks' KV\n", n)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
	docs, _, err := svc.Documents(0, 0)
	if err != nil {
		return nil, fmt.Errorf("bench kv: %w", err)
	}
	seen := map[string]bool{}
	var chunks []benchChunk
	for _, d := range docs {
		_, cs, err := svc.Document(d.ID)
		if err != nil {
			return nil, fmt.Errorf("bench kv: %w", err)
		}
		for _, c := range cs {
			if !seen[c.ID] {
				seen[c.ID] = true
				chunks = append(chunks, benchChunk{c.ID, c.Text})
			}
		}
	}
	if len(chunks) == 0 {
		return nil, fmt.Errorf("bench kv: %s holds no committed chunks", dir)
	}
	res.Chunks = len(chunks)
	ce := svc.CrossEncoder()
	if ce == nil {
		return nil, fmt.Errorf("bench kv: the service has no cross-encoder")
	}
	ids := make([]string, min(opt.CEChunks, len(chunks)))
	for i := range ids {
		ids[i] = chunks[i].id
	}
	fmt.Fprintf(logw, "bench kv: cross-encoder over %d chunks\n", len(ids))
	start := time.Now()
	scores, err := ce.ScoreChunks(ctx, opt.Question, ids)
	if err != nil {
		return nil, fmt.Errorf("bench kv: cross-encoder: %w", err)
	}
	if len(scores) != len(ids) {
		return nil, fmt.Errorf("bench kv: cross-encoder returned %d scores for %d chunks", len(scores), len(ids))
	}
	res.CECallsS, res.CEChunks = float64(len(ids))/time.Since(start).Seconds(), len(ids)
	return chunks, nil
}

// storeBench streams keys from the data directory's store with its codec:
// once cold, then rounds times warm. It returns the sample's KV (decoded),
// P's KV as stored, and the load rates (bytes per token from the store's
// Usage is not per-sample, so the caller fills BytesPerToken).
func storeBench(ctx context.Context, dir string, c kvstore.Codec, keys []kvstore.Key, pKey kvstore.Key, rounds int, res *kvDataResult) ([]*model.KV, *model.KV, kvDataCodec, error) {
	var row kvDataCodec
	opts := kvstore.Options{Codec: c, DiskBudget: 1 << 50, Logger: slog.New(slog.DiscardHandler)}
	res.dropCaches()
	s, err := kvstore.Open(filepath.Join(dir, "kv"), opts)
	if err != nil {
		return nil, nil, row, fmt.Errorf("bench kv: %w", err)
	}
	defer s.Close()
	res.StoreBytes, _ = s.Usage()
	if row.Cold, row.Warm, err = streamRates(ctx, s, keys, rounds, 0); err != nil {
		if errors.Is(err, kvstore.ErrNotFound) {
			err = fmt.Errorf("%w (the store's keys are the service's: same model, P and codec %s?)", err, c)
		}
		return nil, nil, row, err
	}
	kvs := make([]*model.KV, len(keys))
	for i, k := range keys {
		if kvs[i], err = s.Get(k); err != nil {
			return nil, nil, row, fmt.Errorf("bench kv: %w", err)
		}
	}
	prefix, err := s.Get(pKey)
	if err != nil {
		return nil, nil, row, fmt.Errorf("bench kv: P's KV: %w", err)
	}
	return kvs, prefix, row, s.Close()
}

// codecBench puts kvs under keys into an empty store with codec c in dir,
// records its bytes per token and, unless row already holds the store's own
// rates, streams it cold (after reopening) and warm.
func codecBench(ctx context.Context, dir string, c kvstore.Codec, keys []kvstore.Key, kvs []*model.KV, rounds int, row *kvDataCodec, res *kvDataResult, log *slog.Logger) error {
	opts := kvstore.Options{Codec: c, DiskBudget: 1 << 50, Logger: log}
	s, err := kvstore.Open(dir, opts)
	if err != nil {
		return fmt.Errorf("bench kv: %s: %w", c, err)
	}
	defer s.Close()
	rows := 0
	for i, k := range keys {
		if err := s.Put(k, kvs[i]); err != nil {
			return fmt.Errorf("bench kv: %s: %w", c, err)
		}
		rows += kvs[i].Len()
	}
	b, _ := s.Usage()
	row.BytesPerToken = float64(b) / float64(rows)
	if err := s.Close(); err != nil {
		return fmt.Errorf("bench kv: %s: %w", c, err)
	}
	if row.Store { // rates measured in DIR/kv; now the bytes are known
		row.Cold.GBs = row.BytesPerToken * row.Cold.TokS / 1e9
		row.Warm.GBs = row.BytesPerToken * row.Warm.TokS / 1e9
		return nil
	}
	res.dropCaches()
	if s, err = kvstore.Open(dir, opts); err != nil {
		return fmt.Errorf("bench kv: %s: %w", c, err)
	}
	defer s.Close()
	row.Cold, row.Warm, err = streamRates(ctx, s, keys, rounds, row.BytesPerToken)
	return err
}

// streamRates streams every layer of keys from s once (cold) and rounds
// more times (warm, averaged). GB/s counts bytesPerToken per row streamed;
// with bytesPerToken 0 it is filled in later by the caller.
func streamRates(ctx context.Context, s *kvstore.Store, keys []kvstore.Key, rounds int, bytesPerToken float64) (cold, warm kvLoadRate, err error) {
	rate := func() (kvLoadRate, error) {
		start := time.Now()
		rows, err := streamAll(ctx, s, keys)
		if err != nil {
			return kvLoadRate{}, err
		}
		sec := time.Since(start).Seconds()
		return kvLoadRate{Seconds: sec, GBs: bytesPerToken * float64(rows) / sec / 1e9, TokS: float64(rows) / sec}, nil
	}
	if cold, err = rate(); err != nil {
		return cold, warm, err
	}
	for range rounds {
		r, err := rate()
		if err != nil {
			return cold, warm, err
		}
		warm.Seconds += r.Seconds / float64(rounds)
	}
	rows := cold.TokS * cold.Seconds
	warm.TokS = rows / warm.Seconds
	warm.GBs = bytesPerToken * rows / warm.Seconds / 1e9
	return cold, warm, nil
}

// streamAll reads every layer of keys through a Loader and returns the
// rows (tokens) streamed.
func streamAll(ctx context.Context, s *kvstore.Store, keys []kvstore.Key) (int, error) {
	ld, err := s.Load(ctx, keys)
	if err != nil {
		return 0, fmt.Errorf("bench kv: %w", err)
	}
	defer ld.Close()
	rows := 0
	for i := range keys {
		rows += ld.Meta(i).Rows
	}
	for l := range ld.Layers() {
		k, v, err := ld.LoadLayer(l)
		if err != nil {
			return 0, fmt.Errorf("bench kv: layer %d: %w", l, err)
		}
		if len(k) != len(keys) || len(v) != len(keys) {
			return 0, fmt.Errorf("bench kv: layer %d holds %d chunks, want %d", l, len(k), len(keys))
		}
	}
	return rows, nil
}

// dropCaches drops the OS page cache (after sync) when res.DropCaches is
// set; on failure it clears DropCaches and records why in ColdNote.
func (res *kvDataResult) dropCaches() {
	if !res.DropCaches {
		return
	}
	_ = exec.Command("sync").Run() // dirty pages are not dropped
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0); err != nil {
		res.DropCaches = false
		res.ColdNote = fmt.Sprintf("OS page cache not dropped (%v): cold is a freshly opened store only", err)
	}
}
