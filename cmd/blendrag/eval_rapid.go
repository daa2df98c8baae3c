package main

import "github.com/spf13/cobra"

// addEvalRapidCommand registers eval rapid (RAPID speculative decoding
// against target-only decoding).
func addEvalRapidCommand(eval *cobra.Command) {}
