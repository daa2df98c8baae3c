package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/blendrag/blendrag/blend"
	"github.com/blendrag/blendrag/model"
)

// addGenerateCommands registers `blendrag generate` and `blendrag logits`.
func addGenerateCommands(root *cobra.Command) {
	var ef engineFlags
	var pf promptFlags
	var opt model.GenerateOptions
	var stats bool
	gen := &cobra.Command{
		Use:   "generate",
		Short: "Stream a completion of a prompt from the generator",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, b, err := ef.open(cmd)
			if err != nil {
				return err
			}
			defer m.Close()
			defer b.Close()
			ids, err := pf.tokens(m)
			if err != nil {
				return err
			}
			start := time.Now()
			kv := model.NewKV(m.Config)
			logits, err := b.Forward(kv, ids, model.Positions(0, len(ids)), false)
			if err != nil {
				return err
			}
			prefill := time.Since(start)
			out := cmd.OutOrStdout()
			res := &blend.Result{KV: kv, Logits: logits, Backend: b} // decodes on b (m.Generate on the CPU)
			g, err := blend.Generate(cmd.Context(), m, res, opt, func(s string) error {
				_, err := fmt.Fprint(out, s)
				return err
			})
			fmt.Fprintln(out)
			if stats {
				fmt.Fprintf(cmd.ErrOrStderr(), "prompt %d tokens in %.2fs (%.1f tok/s); generated %d tokens in %.2fs (%.1f tok/s); stop: %s\n",
					len(ids), prefill.Seconds(), float64(len(ids))/prefill.Seconds(),
					len(g.Tokens), g.Decode.Seconds(), float64(len(g.Tokens))/g.Decode.Seconds(), g.Reason)
			}
			return err
		},
	}
	ef.register(gen)
	pf.register(gen, true)
	gen.Flags().IntVar(&opt.MaxTokens, "max-tokens", 256, "maximum tokens to generate")
	gen.Flags().Float32Var(&opt.Sampler.Temperature, "temperature", 0, "sampling temperature (0 = greedy)")
	gen.Flags().IntVar(&opt.Sampler.TopK, "top-k", 40, "sample from the k most likely tokens (0 = all)")
	gen.Flags().Float32Var(&opt.Sampler.TopP, "top-p", 0.95, "nucleus sampling mass (1 = off)")
	gen.Flags().Uint64Var(&opt.Sampler.Seed, "seed", 0, "random seed for sampling")
	gen.Flags().StringArrayVar(&opt.Stop, "stop", nil, "stop when this text appears (repeatable)")
	gen.Flags().BoolVar(&stats, "stats", false, "print timing to stderr")

	var lf engineFlags
	var lp promptFlags
	var top int
	var asJSON bool
	logits := &cobra.Command{
		Use:   "logits",
		Short: "Print, for every prompt position, the token and the top-K next-token logits",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if top < 1 {
				return fmt.Errorf("--top %d must be ≥ 1", top)
			}
			m, b, err := lf.open(cmd)
			if err != nil {
				return err
			}
			defer m.Close()
			defer b.Close()
			ids, err := lp.tokens(m)
			if err != nil {
				return err
			}
			kv := model.NewKV(m.Config)
			all, err := b.Forward(kv, ids, model.Positions(0, len(ids)), true)
			if err != nil {
				return err
			}
			type pair struct {
				ID    int32   `json:"id"`
				Logit float32 `json:"logit"`
			}
			type position struct {
				Token int32  `json:"token"`
				Piece string `json:"piece"`
				Top   []pair `json:"top"`
			}
			V := m.Config.Vocab
			k := min(top, V)
			out := make([]position, len(ids))
			for i, id := range ids {
				row := all[i*V : (i+1)*V]
				out[i] = position{Token: id, Piece: string(m.Tok.Piece(id))}
				for _, j := range model.TopK(row, k) {
					out[i].Top = append(out[i].Top, pair{j, row[j]})
				}
			}
			w := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(w)
				return enc.Encode(map[string]any{"model": m.Config.Name, "positions": out})
			}
			for i, p := range out {
				fmt.Fprintf(w, "%5d %6d %-14q", i, p.Token, p.Piece)
				for _, t := range p.Top {
					fmt.Fprintf(w, " %d:%.3f", t.ID, t.Logit)
				}
				fmt.Fprintln(w)
			}
			return nil
		},
	}
	lf.register(logits)
	lp.register(logits, true)
	logits.Flags().IntVar(&top, "top", 5, "how many of the highest logits to print per position")
	logits.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	root.AddCommand(gen, logits)
}
