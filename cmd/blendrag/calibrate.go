package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/blendrag/blendrag/server"
)

// addCalibrateCommand registers calibrate (the fidelity gate).
func addCalibrateCommand(root *cobra.Command) {
	var df dataFlags
	var opt server.CalibrateOptions
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "calibrate --data DIR [--samples 8] [--threshold 0.05]",
		Short: "Measure which CacheBlend ratio and APE (T, S) stay within a fidelity threshold of full prefill",
		Long: "calibrate draws --samples contexts from the store's own chunks (--chunks chunks from different\n" +
			"documents, a question about the first one's title), prefills each in full and in every tried\n" +
			"CacheBlend ratio and APE (T, S), and measures the first-token KL against full. The smallest\n" +
			"ratio and the best (T, S) whose mean KL is within --threshold are saved in DIR/calibration.json;\n" +
			"from then on ask (and the server) use them, and answer a mode that met no setting with full.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			svc, err := df.open(cmd)
			if err != nil {
				return err
			}
			defer svc.Close()
			errw := cmd.ErrOrStderr()
			c, err := svc.Calibrate(cmd.Context(), opt, func(p server.CalibrateProgress) {
				fmt.Fprintf(errw, "\rcalibrate: %d/%d samples", p.Done, p.Total)
			})
			fmt.Fprintln(errw)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(c)
			}
			fmt.Fprintf(out, "%d samples (mean %.0f context tokens), KL threshold %.3g, %.0f s\n", c.Samples, c.Tokens, c.Threshold, c.Took)
			fmt.Fprintf(out, "%-11s %6s %5s %5s %9s %9s %6s %8s\n", "mode", "r", "T", "S", "mean KL", "max KL", "top-1", "speedup")
			for _, t := range c.Trials {
				fmt.Fprintf(out, "%-11s %6.3g %5.3g %5.3g %9.4f %9.4f %6.2f %7.1f×\n", t.Mode, t.Ratio, t.T, t.S, t.MeanKL, t.MaxKL, t.Top1, t.Speedup)
			}
			if c.CacheBlendOK {
				fmt.Fprintf(out, "cacheblend: r = %.3g\n", c.CacheBlendRatio)
			} else {
				fmt.Fprintln(out, "cacheblend: no ratio met the threshold; requests fall back to full")
			}
			if c.APEOK {
				fmt.Fprintf(out, "ape: T = %.3g, S = %.3g\n", c.APET, c.APES)
			} else {
				fmt.Fprintln(out, "ape: no (T, S) met the threshold; requests fall back to full")
			}
			return nil
		},
	}
	df.register(cmd)
	f := cmd.Flags()
	f.IntVar(&opt.Samples, "samples", 8, "contexts to try")
	f.IntVar(&opt.Chunks, "chunks", 3, "chunks per context (from different documents)")
	f.Float64Var(&opt.Threshold, "threshold", server.DefaultFidelityKL, "largest acceptable mean first-token KL against full (nats)")
	f.Float64SliceVar(&opt.Ratios, "ratios", nil, "CacheBlend ratios to try (default 0.05,0.1,0.15,0.2,0.3,0.5)")
	f.Uint64Var(&opt.Seed, "seed", 1, "seed of the sample")
	f.BoolVar(&asJSON, "json", false, "print the calibration as JSON")
	root.AddCommand(cmd)
}
