package server

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blendrag/blendrag/blend"
	"github.com/blendrag/blendrag/kernels"
	"github.com/blendrag/blendrag/model/fetch"
	"github.com/blendrag/blendrag/model/modeltest"
)

// With η = 0 and greedy decoding, an answer decoded with RAPID (drafter over
// the top chunks) is the answer decoded by the long-context target alone,
// and the timings describe the drafts.
func TestAskRapidGreedyEqualsPlainAnswer(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the generator")
	}
	openTest(t, t.TempDir()).Close() // skips without models
	s, err := Open(Config{DataDir: t.TempDir(), ModelsDir: fetch.Dir(), Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	ingestMarlow(t, s)
	req := AskRequest{Question: "Who built the Old Stone Bridge of Marlow?", K: 5, MaxTokens: 24}
	plainText := map[string]string{}
	for _, mode := range []string{"cacheblend", "reuse"} {
		req.Mode = mode
		plain, err := s.Ask(ctx, AskRequest{Question: req.Question, K: 5, MaxTokens: 24, Mode: mode}, nil)
		if err != nil {
			t.Fatal(err)
		}
		plainText[mode] = plain.Text
		rq := req
		rq.Rapid, rq.DraftChunks, rq.Gamma = true, 2, 4
		fast, err := s.Ask(ctx, rq, nil)
		if err != nil {
			t.Fatal(err)
		}
		rt := fast.Timings.Rapid
		if rt == nil {
			t.Fatalf("%s: no RAPID timings", mode)
		}
		t.Logf("%s: %q; RAPID %+v", mode, fast.Text, *rt)
		if fast.Text != plain.Text || fast.Stop != plain.Stop {
			t.Errorf("%s: RAPID answered %q (%s), the target alone %q (%s)", mode, fast.Text, fast.Stop, plain.Text, plain.Stop)
		}
		if rt.DraftChunks != 2 || rt.DraftRows >= rt.TargetRows || rt.Accepted > rt.Drafted {
			t.Errorf("%s: RAPID timings %+v", mode, *rt)
		}
		if !rt.Off && rt.Drafted == 0 {
			t.Errorf("%s: RAPID neither drafted nor switched off: %+v", mode, *rt)
		}
	}

	// A drafter as long as the target is pointless: RAPID stays off.
	rq := req
	rq.Mode, rq.K, rq.Rapid, rq.DraftChunks = "cacheblend", 2, true, 3
	ans, err := s.Ask(ctx, rq, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rt := ans.Timings.Rapid; rt == nil || !rt.Off || rt.OffReason == "" || rt.Drafted != 0 {
		t.Errorf("drafter as long as the target: %+v", rt)
	}
	// Costs measured by an earlier request that say drafting cannot pay on
	// this machine (a verified row almost a target step): the next request
	// skips the drafter — no drafter prefill, no round — and says why.
	s.eng.rapid.Observe(1000, 300, blend.RapidStats{TargetStep: 46 * time.Millisecond, DraftStep: 26 * time.Millisecond,
		VerifyFixed: 8 * time.Millisecond, VerifyPerRow: 30 * time.Millisecond})
	rq = req
	rq.Mode, rq.Rapid, rq.DraftChunks = "cacheblend", true, 2
	ans, err = s.Ask(ctx, rq, nil)
	if err != nil {
		t.Fatal(err)
	}
	rt := ans.Timings.Rapid
	if rt == nil || !rt.Off || !strings.Contains(rt.OffReason, "earlier request") || rt.DraftPrefill != 0 || rt.Rounds != 0 ||
		rt.DraftChunks != 2 || rt.DraftRows <= 0 || rt.DraftRows >= rt.TargetRows {
		t.Errorf("after costs that cannot pay: %+v", rt)
	}
	if ans.Text != plainText["cacheblend"] {
		t.Errorf("skipped RAPID answered %q, the target alone %q", ans.Text, plainText["cacheblend"])
	}
	for _, bad := range []AskRequest{
		{Question: "x", Rapid: true, Gamma: -1},
		{Question: "x", Rapid: true, Gamma: MaxRapidGamma + 1},
		{Question: "x", Rapid: true, Eta: -1},
		{Question: "x", Rapid: true, DraftChunks: -2},
	} {
		if _, err := s.Ask(ctx, bad, nil); !errors.Is(err, ErrBadRequest) {
			t.Errorf("%+v: err = %v, want ErrBadRequest", bad, err)
		}
	}
}

// ingestMarlow ingests five one-chunk documents about Marlow and waits for
// their KV.
func ingestMarlow(t *testing.T, s *Service) {
	t.Helper()
	docs := map[string]string{
		"Herons": "The grey heron of Lake Umber nests in tall reeds. Each spring the herons return from the south.",
		"Bridge": "The Old Stone Bridge of Marlow was built in 1742 by the mason Edwin Clay. It has seven arches.",
		"Tea":    "Green tea from the Kessel hills is picked in May and dried on bamboo trays in the sun.",
		"Mill":   "The water mill at Marlow ground wheat until 1901, when the river changed its course.",
		"Clock":  "The town clock of Marlow was a gift of the mason guild in 1760 and still strikes every hour.",
	}
	for title, text := range docs {
		if _, err := s.IngestText(context.Background(), title, text, nil); err != nil {
			t.Fatal(err)
		}
	}
	waitKV(t, s)
}

// TestAskRapidWithADraftModelEqualsPlainAnswer: with Config.DraftModelPath
// a separately loaded model drafts (here another instance of the default
// GGUF: the tokenizer check passes, and the draft path — its own P, chunk KV
// computed per request, its own backend — is exercised); with η = 0 the
// answer is the target's own, the timings name the draft model, and a
// drafter with another tokenizer is refused at Open.
func TestAskRapidWithADraftModelEqualsPlainAnswer(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the generator")
	}
	openTest(t, t.TempDir()).Close() // skips without models
	s, err := Open(Config{DataDir: t.TempDir(), ModelsDir: fetch.Dir(), Threads: 2, DraftModelPath: fetch.GeneratorPath(fetch.Dir())})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ingestMarlow(t, s)
	ctx := context.Background()
	req := AskRequest{Question: "Who built the Old Stone Bridge of Marlow?", K: 5, MaxTokens: 16, Mode: "cacheblend"}
	plain, err := s.Ask(ctx, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Rapid, req.DraftChunks, req.Gamma = true, 2, 3
	fast, err := s.Ask(ctx, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	rt := fast.Timings.Rapid
	if rt == nil || rt.DraftModel == "" || rt.DraftPrefill <= 0 || rt.DraftRows >= rt.TargetRows {
		t.Fatalf("RAPID timings with a draft model: %+v", rt)
	}
	t.Logf("%q; RAPID %+v", fast.Text, *rt)
	if fast.Text != plain.Text {
		t.Errorf("RAPID with the draft model answered %q, the target alone %q", fast.Text, plain.Text)
	}
	if !rt.Off && rt.Drafted == 0 {
		t.Errorf("neither drafted nor switched off: %+v", *rt)
	}

	// A model of another tokenizer cannot draft: Open refuses it.
	other := filepath.Join(t.TempDir(), "other.gguf")
	if err := modeltest.Write(other, modeltest.Spec{Layers: 1, Dim: 32, Heads: 2, KVHeads: 1, FFN: 64, Weights: kernels.F32, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	if bad, err := Open(Config{DataDir: t.TempDir(), ModelsDir: fetch.Dir(), Threads: 2, DraftModelPath: other}); err == nil {
		bad.Close()
		t.Error("Open accepted a draft model with another tokenizer")
	} else if !strings.Contains(err.Error(), "draft model") || !strings.Contains(err.Error(), "tokenizer") {
		t.Errorf("Open with another tokenizer's draft model: %v", err)
	}
}
