package main

import "github.com/spf13/cobra"

// addEvalCurCommand registers eval cur (CUR against retrieve-then-rerank at
// equal cross-encoder budgets).
func addEvalCurCommand(eval *cobra.Command) {}
