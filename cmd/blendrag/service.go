package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/blendrag/blendrag/model"
	"github.com/blendrag/blendrag/retrieval"
	"github.com/blendrag/blendrag/server"
)

// dataFlags are the flags of commands that open a local store (--data DIR).
type dataFlags struct {
	dir          string
	threads      int
	chunkTokens  int
	chunkOverlap int
	verbose      bool
	noGenerator  bool   // retrieval-only commands
	noCURColumns bool   // skip the background CUR columns (benchmarks that must not compete with them)
	device       string // the generator's compute device
	hotKVMB      int    // the hot tier's host RAM, MiB (0: default, < 0: off)
	deviceKVMB   int    // the GPU chunk tier's memory, MiB (0: default, < 0: off)
	draftModel   string // RAPID's draft model GGUF ("": the generator)
}

func (f *dataFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.dir, "data", "./data", "data directory (catalog, indexes, KV store)")
	cmd.Flags().IntVar(&f.threads, "threads", 0, "worker threads (default: all cores)")
	cmd.Flags().IntVar(&f.chunkTokens, "chunk-tokens", 0, "chunk size in generator tokens, 128–1024 (default 384; fixed per data directory)")
	cmd.Flags().IntVar(&f.chunkOverlap, "chunk-overlap", 0, "tokens of overlap between consecutive chunks (fixed per data directory)")
	cmd.Flags().BoolVarP(&f.verbose, "verbose", "v", false, "log what the service does to stderr")
	cmd.Flags().StringVar(&f.device, "device", "cpu", "generator compute device: cpu, cuda or cuda:N, optionally cuda…+blas for cuBLAS prefill (cuda needs a binary built with -tags cuda)")
	cmd.Flags().StringVar(&f.draftModel, "draft-model", "", "GGUF of a smaller model with the generator's tokenizer to draft for RAPID (default: the generator drafts)")
	cmd.Flags().IntVar(&f.hotKVMB, "hot-kv-mb", 0, fmt.Sprintf("host RAM for recently used chunks' decoded KV, MiB (default %d; negative: off)", server.DefaultHotKVBytes>>20))
	cmd.Flags().IntVar(&f.deviceKVMB, "gpu-kv-mb", 0, fmt.Sprintf("GPU memory for recently used chunks' KV with a cuda --device, MiB (default %d; negative: off)", model.DefaultChunkTierBytes>>20))
}

// config is the server.Config the flags describe.
func (f *dataFlags) config(cmd *cobra.Command) server.Config {
	level := slog.LevelWarn
	if f.verbose {
		level = slog.LevelInfo
	}
	return server.Config{
		DataDir:        f.dir,
		ModelsDir:      modelsDir(cmd),
		Threads:        f.threads,
		Chunking:       retrieval.ChunkOptions{Tokens: f.chunkTokens, Overlap: f.chunkOverlap},
		Logger:         slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
		NoGenerator:    f.noGenerator,
		NoCURColumns:   f.noCURColumns,
		Device:         f.device,
		HotKVBytes:     int64(f.hotKVMB) << 20,
		DeviceKVBytes:  int64(f.deviceKVMB) << 20,
		DraftModelPath: f.draftModel,
	}
}

// open opens the Service on --data.
func (f *dataFlags) open(cmd *cobra.Command) (*server.Service, error) {
	return server.Open(f.config(cmd))
}

// addServiceCommands registers ingest and search.
func addServiceCommands(root *cobra.Command) {
	var df dataFlags
	var asJSON, noKV bool
	ingest := &cobra.Command{
		Use:   "ingest --data DIR FILE...",
		Short: "Parse, chunk and index documents (txt, md, html, pdf) into a local store",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			df.noGenerator = noKV
			svc, err := df.open(cmd)
			if err != nil {
				return err
			}
			defer svc.Close()
			if err := ingestFiles(cmd, svc, args, asJSON); err != nil || noKV {
				return err
			}
			return waitKV(cmd, svc)
		},
	}
	df.register(ingest)
	ingest.Flags().BoolVar(&asJSON, "json", false, "print one JSON result per file instead of a progress bar")
	ingest.Flags().BoolVar(&noKV, "no-kv", false, "do not precompute chunk KV now (ask and serve compute it later)")
	root.AddCommand(ingest)

	var sf dataFlags
	var req server.SearchRequest
	var searchJSON bool
	search := &cobra.Command{
		Use:   "search --data DIR [--k 5] [--retriever hybrid] QUERY",
		Short: "Search the indexed chunks (bm25, dense, cur or hybrid)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// The cross-encoder (CUR, hybrid's CUR leg, rerank) runs on the
			// generator; BM25 and dense search do not need it.
			sf.noGenerator = (req.Retriever == server.RetrieverBM25 || req.Retriever == server.RetrieverDense) && !req.Rerank
			svc, err := sf.open(cmd)
			if err != nil {
				return err
			}
			defer svc.Close()
			req.Query = strings.Join(args, " ")
			start := time.Now()
			res, err := svc.Search(cmd.Context(), req)
			if err != nil {
				return err
			}
			took := time.Since(start)
			out := cmd.OutOrStdout()
			if searchJSON {
				return json.NewEncoder(out).Encode(map[string]any{"results": res, "took_ms": ms(took)})
			}
			for i, r := range res {
				fmt.Fprintf(out, "%d. %s  [%s]  score %.4f  %s\n", i+1, r.Title, r.Chunk.ID[:12], r.Score, ranksString(r.Ranks))
				fmt.Fprintf(out, "   %s\n", snippet(r.Chunk.Text, 240))
			}
			fmt.Fprintf(out, "(%d results in %v)\n", len(res), took.Round(time.Millisecond))
			return nil
		},
	}
	sf.register(search)
	search.Flags().IntVar(&req.K, "k", server.DefaultK, "results to return")
	search.Flags().StringVar(&req.Retriever, "retriever", server.RetrieverHybrid, "bm25, dense, cur or hybrid")
	search.Flags().BoolVar(&req.Rerank, "rerank", false, "rerank the fused top with the exact cross-encoder")
	search.Flags().BoolVar(&searchJSON, "json", false, "print JSON")
	root.AddCommand(search)

	docs := &cobra.Command{Use: "docs", Short: "List or delete documents in a local store"}
	var lf dataFlags
	list := &cobra.Command{
		Use:   "list --data DIR",
		Short: "List the committed documents",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			lf.noGenerator = true // retrieval only
			svc, err := lf.open(cmd)
			if err != nil {
				return err
			}
			defer svc.Close()
			all, _, err := svc.Documents(0, 0)
			if err != nil {
				return err
			}
			for _, d := range all {
				fmt.Fprintf(cmd.OutOrStdout(), "%s  %-8s %4d chunks  %s\n", d.ID[:16], d.Kind, d.Chunks, d.Title)
			}
			return nil
		},
	}
	lf.register(list)
	var rf dataFlags
	del := &cobra.Command{
		Use:   "delete --data DIR ID...",
		Short: "Delete documents (their chunks leave every index unless shared)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rf.noGenerator = true // retrieval only
			svc, err := rf.open(cmd)
			if err != nil {
				return err
			}
			defer svc.Close()
			for _, id := range args {
				if err := svc.Delete(cmd.Context(), id); err != nil {
					return err
				}
			}
			return nil
		},
	}
	rf.register(del)
	docs.AddCommand(list, del)
	root.AddCommand(docs)
}

// ingestFiles ingests each file (directories are walked), reporting
// progress, and fails if any file failed (after trying them all).
func ingestFiles(cmd *cobra.Command, svc *server.Service, args []string, asJSON bool) error {
	var files []string
	for _, a := range args {
		err := filepath.WalkDir(a, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() {
				files = append(files, p)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	var bar *progressbar.ProgressBar
	stderr := cmd.ErrOrStderr()
	if !asJSON {
		visible := false
		if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			visible = true
		}
		bar = progressbar.NewOptions(len(files),
			progressbar.OptionSetWriter(stderr),
			progressbar.OptionSetVisibility(visible),
			progressbar.OptionSetDescription("ingest"),
			progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionClearOnFinish())
	}
	var failed []error
	enc := json.NewEncoder(cmd.OutOrStdout())
	for _, path := range files {
		data, err := readLimited(path, 256<<20)
		var res server.IngestResult
		if err == nil {
			progress := func(p server.Progress) {
				if bar != nil {
					bar.Describe(fmt.Sprintf("%s: %s %d/%d", filepath.Base(path), p.Stage, p.Done, p.Total))
				}
			}
			res, err = svc.Ingest(cmd.Context(), filepath.Base(path), data, progress)
		}
		if bar != nil {
			bar.Add(1)
		}
		switch {
		case err != nil:
			failed = append(failed, err)
			if asJSON {
				enc.Encode(map[string]string{"file": path, "error": err.Error()})
			} else {
				bar.Clear()
				fmt.Fprintf(stderr, "failed: %v\n", err)
			}
		case asJSON:
			enc.Encode(map[string]any{"file": path, "result": res})
		default:
			bar.Clear()
			what := fmt.Sprintf("%d chunks (%d new)", res.Doc.Chunks, res.NewChunks)
			if res.Existing {
				what = "already ingested"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s  %s  %s\n", res.Doc.ID[:16], path, what)
		}
		if cmd.Context().Err() != nil {
			break
		}
	}
	if bar != nil {
		bar.Finish()
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d files failed: %w", len(failed), len(files), errors.Join(failed...))
	}
	return cmd.Context().Err()
}

// readLimited reads a file, refusing ones larger than limit bytes.
func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, limit)
	}
	return b, nil
}

func ranksString(r map[string]int) string {
	var parts []string
	for _, name := range []string{"bm25", "dense", "cur", "ce"} {
		if v, ok := r[name]; ok {
			parts = append(parts, fmt.Sprintf("%s #%d", name, v))
		}
	}
	return strings.Join(parts, ", ")
}

func snippet(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// waitKV shows the background chunk KV precompute until it has finished
// (or the command is interrupted: it resumes on the next open).
func waitKV(cmd *cobra.Command, svc *server.Service) error {
	stderr := cmd.ErrOrStderr()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	total, last := -1, -1
	for {
		p := svc.KVProgress()
		if p.Err != "" {
			return fmt.Errorf("chunk KV precompute: %s", p.Err)
		}
		left := svc.KVPending()
		if left < 0 {
			return fmt.Errorf("chunk KV precompute: cannot read the catalog")
		}
		total = max(total, left)
		if left == 0 {
			fmt.Fprintf(stderr, "\rchunk KV: every chunk's KV is computed%20s\n", "")
			if n := svc.CURPending(); n > 0 {
				fmt.Fprintf(stderr, "CUR columns: %d chunks left; they are computed in the background whenever the store is open (blendrag serve)\n", n)
			}
			return nil
		}
		if left != last {
			fmt.Fprintf(stderr, "\rchunk KV: %d/%d chunks   ", total-left, total)
			last = left
		}
		select {
		case <-cmd.Context().Done():
			fmt.Fprintln(stderr, "\ninterrupted: the precompute resumes on the next run")
			return cmd.Context().Err()
		case <-tick.C:
		}
	}
}
