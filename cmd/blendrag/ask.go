package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/blendrag/blendrag/blend"
	"github.com/blendrag/blendrag/server"
)

// addAskCommand registers ask.
func addAskCommand(root *cobra.Command) {
	var df dataFlags
	var req server.AskRequest
	var ratio, serverURL, apiKey string
	var asJSON bool
	ask := &cobra.Command{
		Use:   "ask (--data DIR | --server URL) [--k 6] [--mode cacheblend] [--ratio R|auto] QUESTION",
		Short: "Answer a question from the store's chunks, fusing their cached KV",
		Long: "ask retrieves the top chunks, loads their precomputed KV (computing what is missing),\n" +
			"fuses it by --mode (full, prefix, reuse, cacheblend, ape) and streams the answer, then\n" +
			"prints the chunks used as citations and a timing breakdown. With --server it asks a running\n" +
			"`blendrag serve` instead of opening --data (same flags, same output).",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch ratio {
			case "", "default":
			case "auto":
				req.RatioAuto = true
			default:
				r, err := strconv.ParseFloat(ratio, 64)
				if err != nil || r <= 0 || r > 1 {
					return fmt.Errorf("--ratio %q: want a number in (0, 1]", ratio)
				}
				req.Ratio = r
			}
			req.Question = strings.Join(args, " ")
			out := cmd.OutOrStdout()
			var ans server.Answer
			if serverURL != "" {
				if cmd.Flags().Changed("data") {
					return fmt.Errorf("give --data or --server, not both")
				}
				if apiKey == "" {
					apiKey = os.Getenv("BLENDRAG_API_KEY")
				}
				var err error
				if ans, err = askRemote(cmd.Context(), out, serverURL, apiKey, req, asJSON); err != nil {
					return err
				}
			} else {
				svc, err := df.open(cmd)
				if err != nil {
					return err
				}
				defer svc.Close()
				var emit func(string) error
				if !asJSON {
					emit = func(s string) error { _, err := io.WriteString(out, s); return err }
				}
				if ans, err = svc.Ask(cmd.Context(), req, emit); err != nil {
					return err
				}
			}
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(ans)
			}
			fmt.Fprintln(out)
			fmt.Fprintln(out, "\nSources:")
			for _, c := range ans.Citations {
				page := ""
				if c.Chunk.Page > 0 {
					page = fmt.Sprintf(", p. %d", c.Chunk.Page)
				}
				fmt.Fprintf(out, "[%d] %s%s (bytes %d–%d): %s\n", c.Index, c.Title, page, c.Chunk.Start, c.Chunk.End, snippet(c.Chunk.Text, 100))
			}
			t := ans.Timings
			if ans.Note != "" {
				fmt.Fprintf(out, "\nnote: %s", ans.Note)
			}
			fmt.Fprintf(out, "\n%s: retrieve %v, KV load %v (%d chunks computed now), recompute %v, first token %v, decode %d tokens at %.1f tok/s\n",
				ans.Mode, t.Retrieve.Round(time.Millisecond), t.KVLoad.Round(time.Millisecond), t.KVMissing,
				t.Recompute.Round(time.Millisecond), t.FirstToken.Round(time.Millisecond), t.Tokens, t.TokensPerS)
			if r := t.Rapid; r != nil {
				fmt.Fprintf(out, "RAPID: drafter over %d chunks (%d rows, fused in %v), %d of %d drafts accepted (%.2f per round, γ %.1f)",
					r.DraftChunks, r.DraftRows, r.DraftPrefill.Round(time.Millisecond), r.Accepted, r.Drafted, r.MeanAccepted, r.GammaMean)
				if r.Off {
					fmt.Fprintf(out, "; off: %s", r.OffReason)
				}
				fmt.Fprintln(out)
			}
			return nil
		},
	}
	df.register(ask)
	ask.Flags().IntVar(&req.K, "k", server.DefaultAskK, "chunks to retrieve (as many as fit the context are used)")
	ask.Flags().StringVar(&req.Retriever, "retriever", server.RetrieverHybrid, "bm25, dense, cur or hybrid")
	ask.Flags().BoolVar(&req.Rerank, "rerank", false, "rerank with the exact cross-encoder")
	ask.Flags().StringVar(&req.Mode, "mode", "cacheblend", "full, prefix, reuse, cacheblend or ape")
	ask.Flags().StringVar(&ratio, "ratio", "", "CacheBlend recompute ratio in (0, 1], or auto for the loading controller (default: the calibrated ratio, else 0.15)")
	ask.Flags().StringVar(&serverURL, "server", "", "ask a running blendrag serve at this URL instead of opening --data")
	ask.Flags().StringVar(&apiKey, "api-key", "", "API key for --server (default $BLENDRAG_API_KEY)")
	ask.Flags().IntVar(&req.MaxTokens, "max-tokens", server.DefaultMaxTokens, "maximum answer tokens")
	ask.Flags().Float64Var(&req.Temperature, "temperature", 0, "sampling temperature (0: greedy)")
	ask.Flags().Uint64Var(&req.Seed, "seed", 0, "sampling seed")
	ask.Flags().BoolVar(&asJSON, "json", false, "print the answer, citations and timings as JSON")
	ask.Flags().BoolVar(&req.Rapid, "rapid", false, "decode with RAPID: a drafter over the top --draft-chunks chunks proposes, the long context verifies")
	ask.Flags().IntVar(&req.DraftChunks, "draft-chunks", server.DefaultDraftChunks, "RAPID: chunks in the drafter's context (the top ones, in document order)")
	ask.Flags().IntVar(&req.Gamma, "gamma", blend.DefaultGamma, "RAPID: draft tokens per round at the start (adapted between 2 and 10)")
	ask.Flags().Float64Var(&req.Eta, "eta", 0, "RAPID: knowledge-transfer strength η (0: output is the target's)")
	root.AddCommand(ask)
}
