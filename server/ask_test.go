package server

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/blendrag/blendrag/blend"
	"github.com/blendrag/blendrag/model/fetch"
)

// waitKV waits until the background precompute has computed every chunk.
func waitKV(t *testing.T, s *Service) KVProgress {
	t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		p := s.KVProgress()
		pending, err := s.pendingKV()
		if err != nil {
			t.Fatal(err)
		}
		if len(pending) == 0 && !p.Running {
			return p
		}
		if p.Err != "" {
			t.Fatalf("precompute: %s", p.Err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("KV precompute did not finish in 5 minutes")
	return KVProgress{}
}

func TestAskAnswersFromPrecomputedKV(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the generator")
	}
	openTest(t, t.TempDir()).Close() // skips without models
	dir := t.TempDir()
	s, err := Open(Config{DataDir: dir, ModelsDir: fetch.Dir(), Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	docs := map[string]string{
		"Herons": "The grey heron of Lake Umber nests in tall reeds. Each spring the herons return from the south.",
		"Bridge": "The Old Stone Bridge of Marlow was built in 1742 by the mason Edwin Clay. It has seven arches.",
		"Tea":    "Green tea from the Kessel hills is picked in May and dried on bamboo trays in the sun.",
	}
	for title, text := range docs {
		if _, err := s.IngestText(ctx, title, text, nil); err != nil {
			t.Fatal(err)
		}
	}
	p := waitKV(t, s)
	// Three chunks' KV, then (with CUR columns in the background) their
	// three columns.
	if p.Done != p.Total || s.KVPending() != 0 || (p.Done != 3 && p.Done != 6) {
		t.Fatalf("progress %+v (KV pending %d), want every step of 3 chunks done", p, s.KVPending())
	}

	var streamed strings.Builder
	ans, err := s.Ask(ctx, AskRequest{Question: "Who built the Old Stone Bridge of Marlow?", K: 3, MaxTokens: 12},
		func(piece string) error { streamed.WriteString(piece); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if ans.Mode != string(blend.ModeCacheBlend) || ans.Text == "" || streamed.String() != ans.Text {
		t.Fatalf("answer %+v, streamed %q", ans, streamed.String())
	}
	if len(ans.Citations) != 3 || ans.Citations[0].Title != "Bridge" {
		t.Errorf("citations: %+v", ans.Citations)
	}
	if ans.Timings.KVMissing != 0 || ans.Timings.FirstToken <= 0 || ans.Timings.Tokens == 0 {
		t.Errorf("timings %+v: want every chunk's KV cached", ans.Timings)
	}
	t.Logf("answer %q, timings %+v", ans.Text, ans.Timings)

	// Asked again, every chunk comes from the hot tier (host RAM), and the
	// answer is the one made from the store's copies.
	hot, err := s.Ask(ctx, AskRequest{Question: "Who built the Old Stone Bridge of Marlow?", K: 3, MaxTokens: 12}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ans.Timings.KVHot != 0 || hot.Timings.KVHot != 3 || hot.Timings.KVMissing != 0 || hot.Text != ans.Text {
		t.Errorf("again: %d hot (first ask %d), %d missing, answer %q; want 3 hot, 0 missing, %q", hot.Timings.KVHot, ans.Timings.KVHot, hot.Timings.KVMissing, hot.Text, ans.Text)
	}
	if n, _ := s.eng.hot.size(); n != 3 {
		t.Errorf("hot tier holds %d chunks, want 3", n)
	}

	// A chunk whose KV is gone (evicted, or dropped as corrupt) is computed
	// on demand and stored again; the question still answers. (The hot
	// tier is emptied so that the store is read.)
	s.eng.hot = newHotKV(DefaultHotKVBytes)
	top := ans.Citations[0].Chunk.ID
	if err := s.eng.store.DeleteChunk(top); err != nil {
		t.Fatal(err)
	}
	again, err := s.Ask(ctx, AskRequest{Question: "Who built the Old Stone Bridge of Marlow?", K: 3, MaxTokens: 12}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if again.Timings.KVMissing != 1 || again.Text != ans.Text {
		t.Errorf("after dropping one chunk's KV: missing %d (want 1), answer %q (want %q)", again.Timings.KVMissing, again.Text, ans.Text)
	}
	if !s.eng.store.Has(s.eng.key(top)) {
		t.Error("recomputed KV was not stored again")
	}

	// Bad requests are refused before any work.
	for _, req := range []AskRequest{
		{Question: ""},
		{Question: "x", Mode: "magic"},
		{Question: "x", Ratio: 2},
		{Question: "x", MaxTokens: -1},
		{Question: strings.Repeat("x", MaxQuestionBytes+1)},
	} {
		if _, err := s.Ask(ctx, req, nil); !errors.Is(err, ErrBadRequest) {
			t.Errorf("%+v: err = %v, want ErrBadRequest", req, err)
		}
	}
}
