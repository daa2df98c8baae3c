package main

import "github.com/spf13/cobra"

// addServeCommand registers serve (the HTTP API and the web UI).
func addServeCommand(root *cobra.Command) {}
