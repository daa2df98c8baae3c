// Command blendrag is the blendrag command-line interface: it fetches the
// models, runs the engine locally, and serves the HTTP API.
//
// Each group of subcommands lives in its own file and registers itself
// through an add…Commands(root) function called from newRootCommand.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/blendrag/blendrag/model/fetch"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCommand().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "blendrag:", err)
		os.Exit(1)
	}
}

// newRootCommand builds the blendrag command tree.
func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "blendrag",
		Short: "Retrieval-augmented generation with precomputed, fused chunk KV caches",
		Long: "blendrag answers questions over your documents with a small local LLM. It precomputes each\n" +
			"chunk's KV cache at ingest and fuses the retrieved caches (CacheBlend, APE) at query time\n" +
			"instead of re-encoding them, so time-to-first-token stays low.",
		SilenceUsage:  true, // runtime errors are not usage errors
		SilenceErrors: true, // main prints the error once
	}
	root.PersistentFlags().String("models", fetch.Dir(),
		"directory holding the model files ($"+fetch.EnvModels+" sets the default)")
	addModelCommands(root)
	addGenerateCommands(root)
	addBenchCommands(root)
	addServiceCommands(root)
	addEvalCommands(root)
	addAskCommand(root)
	addServeCommand(root)
	addCalibrateCommand(root)
	return root
}

// modelsDir returns the value of the persistent --models flag as seen by cmd.
func modelsDir(cmd *cobra.Command) string {
	if f := cmd.Flag("models"); f != nil {
		return f.Value.String()
	}
	return fetch.Dir()
}
