package main

import (
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/blendrag/blendrag/server"
)

// envAPIKeys names the environment variable holding API keys (comma
// separated), an alternative to --api-key that keeps keys out of ps.
const envAPIKeys = "BLENDRAG_API_KEYS"

// addServeCommand registers serve (the HTTP API and the web UI).
func addServeCommand(root *cobra.Command) {
	var df dataFlags
	var addr, keyFile string
	var keys []string
	def := server.DefaultHTTPConfig()
	cfg := def
	serve := &cobra.Command{
		Use:   "serve --data DIR [--addr 127.0.0.1:8080]",
		Short: "Serve the HTTP API and the web UI over a local store",
		Long: "serve opens the store in --data (loading the generator and the embedder), precomputes\n" +
			"missing chunk KV in the background, and serves the REST API under /v1 (see docs/API.md),\n" +
			"/healthz, /readyz, /metrics, /openapi.json and the web UI at /. SIGINT or SIGTERM stop it\n" +
			"gracefully: no new connections, in-flight requests and the running ingest job get\n" +
			"--shutdown-timeout to finish, queued ingest jobs are dropped (jobs live in memory only).\n\n" +
			"API keys (--api-key, --api-key-file or $" + envAPIKeys + ") turn on bearer authentication for\n" +
			"everything but /healthz, /readyz and the UI's files; the UI asks for the key.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			all, err := apiKeys(keys, keyFile, os.Getenv(envAPIKeys))
			if err != nil {
				return err
			}
			cfg.APIKeys = all
			svc, err := df.open(cmd)
			if err != nil {
				return err
			}
			defer svc.Close()
			h, err := server.NewHTTP(svc, cfg)
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				h.Close()
				return fmt.Errorf("serve: %w", err)
			}
			auth := "no API key needed"
			if len(all) > 0 {
				auth = fmt.Sprintf("%d API key(s) accepted", len(all))
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "blendrag: serving http://%s (web UI at /, API under /v1; %s); Ctrl-C stops\n", ln.Addr(), auth)
			if err := h.Serve(cmd.Context(), ln); err != nil {
				return err
			}
			fmt.Fprintln(cmd.ErrOrStderr(), "blendrag: stopped")
			return nil
		},
	}
	df.register(serve)
	f := serve.Flags()
	f.StringVar(&addr, "addr", "127.0.0.1:8080", "address to listen on (host:port)")
	f.Int64Var(&cfg.MaxUploadBytes, "max-upload-bytes", def.MaxUploadBytes, "largest upload (all files of one request together); larger: 413")
	f.IntVar(&cfg.MaxFiles, "max-files", def.MaxFiles, "most files in one upload; more: 413")
	f.Int64Var(&cfg.MaxJSONBytes, "max-json-bytes", def.MaxJSONBytes, "largest JSON request body; larger: 413")
	f.IntVar(&cfg.MaxQuestionBytes, "max-question-bytes", def.MaxQuestionBytes, "longest question in bytes (at most the default); longer: 413")
	f.IntVar(&cfg.MaxTokens, "max-tokens", def.MaxTokens, "largest max_tokens a request may ask for (at most the default); larger: 400")
	f.IntVar(&cfg.MaxConcurrentQueries, "max-concurrent-queries", def.MaxConcurrentQueries, "questions answered or waiting for the model at once; more: 429")
	f.IntVar(&cfg.QueueLength, "queue-length", def.QueueLength, "ingest jobs that may wait behind the running one; more: 429")
	f.DurationVar(&cfg.RequestTimeout, "request-timeout", def.RequestTimeout, "time limit of one request (streams included); over it: 504 or an error event")
	f.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", def.ShutdownTimeout, "how long in-flight work may finish after SIGINT/SIGTERM")
	f.StringArrayVar(&keys, "api-key", nil, "accept this bearer token (repeatable; visible in ps: prefer --api-key-file or $"+envAPIKeys+")")
	f.StringVar(&keyFile, "api-key-file", "", "file with one accepted bearer token per line (# starts a comment)")
	f.StringSliceVar(&cfg.CORSOrigins, "cors-origin", nil, "allow browser calls from this origin (repeatable; * for any; default: no CORS)")
	root.AddCommand(serve)
}

// apiKeys gathers the API keys from the flags, a key file and the
// environment variable's comma-separated list.
func apiKeys(flags []string, file, env string) ([]string, error) {
	keys := append([]string(nil), flags...)
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("--api-key-file: %w", err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
				keys = append(keys, line)
			}
		}
		if len(keys) == len(flags) {
			return nil, fmt.Errorf("--api-key-file %s holds no key", file)
		}
	}
	for _, k := range strings.Split(env, ",") {
		if k = strings.TrimSpace(k); k != "" {
			keys = append(keys, k)
		}
	}
	return keys, nil
}
