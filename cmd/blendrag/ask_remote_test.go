package main

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blendrag/blendrag/kernels"
	"github.com/blendrag/blendrag/model/fetch"
	"github.com/blendrag/blendrag/model/modeltest"
	"github.com/blendrag/blendrag/server"
)

// remoteTestServer serves the HTTP API over a Service with a small
// generated generator (random weights: gibberish answers, real code paths)
// and two documents, requiring apiKey when it is not empty.
func remoteTestServer(t *testing.T, apiKey string) (*httptest.Server, *server.Service) {
	t.Helper()
	if _, err := os.Stat(fetch.EmbedderDir(fetch.Dir())); err != nil {
		t.Skip("default embedder not present: run `make models`")
	}
	gen := filepath.Join(t.TempDir(), "gen.gguf")
	spec := modeltest.Spec{Name: "remote", Layers: 2, Dim: 64, Heads: 4, KVHeads: 2, FFN: 128, Weights: kernels.F32, Seed: 3}
	if err := modeltest.Write(gen, spec); err != nil {
		t.Fatal(err)
	}
	svc, err := server.Open(server.Config{DataDir: t.TempDir(), GeneratorPath: gen, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	for title, text := range map[string]string{
		"Bridge": "The Old Stone Bridge of Marlow was built in 1742 by the mason Edwin Clay.",
		"Tea":    "Green tea from the Kessel hills is picked in May and dried on bamboo trays.",
	} {
		if _, err := svc.IngestText(context.Background(), title, text, nil); err != nil {
			t.Fatal(err)
		}
	}
	cfg := server.HTTPConfig{}
	if apiKey != "" {
		cfg.APIKeys = []string{apiKey}
	}
	h, err := server.NewHTTP(svc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h.Handler())
	t.Cleanup(func() {
		srv.Close()
		h.Close()
		svc.Close()
	})
	return srv, svc
}

func TestAskRemoteStreamsTheLocalAnswer(t *testing.T) {
	srv, svc := remoteTestServer(t, "secret")
	req := server.AskRequest{Question: "Who built the Old Stone Bridge?", K: 2, MaxTokens: 10}
	local, err := svc.Ask(context.Background(), req, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, asJSON := range []bool{false, true} {
		var out strings.Builder
		ans, err := askRemote(context.Background(), &out, srv.URL+"/", "secret", req, asJSON)
		if err != nil {
			t.Fatalf("json=%v: %v", asJSON, err)
		}
		// Greedy decoding: the server's answer is the local one.
		if ans.Text != local.Text || ans.Mode != local.Mode || ans.Stop != local.Stop || ans.Timings.Tokens != local.Timings.Tokens {
			t.Errorf("json=%v: remote %q (%s, %s), local %q (%s, %s)", asJSON, ans.Text, ans.Mode, ans.Stop, local.Text, local.Mode, local.Stop)
		}
		if len(ans.Citations) != len(local.Citations) || ans.Citations[0].Chunk.ID != local.Citations[0].Chunk.ID {
			t.Errorf("json=%v: citations %+v, want %+v", asJSON, ans.Citations, local.Citations)
		}
		// The stream is printed as it arrives; the JSON answer is not printed.
		if want := map[bool]string{false: local.Text, true: ""}[asJSON]; out.String() != want {
			t.Errorf("json=%v: printed %q, want %q", asJSON, out.String(), want)
		}
	}
}

func TestAskRemoteReportsServerProblems(t *testing.T) {
	srv, _ := remoteTestServer(t, "secret")
	for _, tc := range []struct {
		name, key string
		req       server.AskRequest
		status    int
	}{
		{"wrong key", "nope", server.AskRequest{Question: "x"}, http.StatusUnauthorized},
		{"unknown mode", "secret", server.AskRequest{Question: "x", Mode: "magic"}, http.StatusBadRequest},
		{"empty question", "secret", server.AskRequest{}, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := askRemote(context.Background(), &strings.Builder{}, srv.URL, tc.key, tc.req, false)
			var p *server.Problem
			if !errors.As(err, &p) || p.Status != tc.status || p.Detail == "" {
				t.Fatalf("err = %v, want a %d problem", err, tc.status)
			}
		})
	}
}

func TestReadAnswerStreamNeedsDoneEvent(t *testing.T) {
	for _, tc := range []struct {
		name, stream, wantErr string
	}{
		{"cut short", "event: token\ndata: {\"text\":\"Hel\"}\n\n", "ended before its done event"},
		{"error event", "event: token\ndata: {\"text\":\"Hel\"}\n\nevent: error\ndata: {\"type\":\"about:blank\",\"title\":\"Gateway Timeout\",\"status\":504,\"detail\":\"too slow\"}\n\n", "too slow"},
		{"bad JSON", "event: timings\ndata: {\n\n", "timings event"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			_, err := readAnswerStream(strings.NewReader(tc.stream), &out)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}
