package server

import (
	"context"
	"errors"
	"testing"

	"github.com/blendrag/blendrag/model/fetch"
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
	docs := map[string]string{
		"Herons": "The grey heron of Lake Umber nests in tall reeds. Each spring the herons return from the south.",
		"Bridge": "The Old Stone Bridge of Marlow was built in 1742 by the mason Edwin Clay. It has seven arches.",
		"Tea":    "Green tea from the Kessel hills is picked in May and dried on bamboo trays in the sun.",
		"Mill":   "The water mill at Marlow ground wheat until 1901, when the river changed its course.",
		"Clock":  "The town clock of Marlow was a gift of the mason guild in 1760 and still strikes every hour.",
	}
	for title, text := range docs {
		if _, err := s.IngestText(ctx, title, text, nil); err != nil {
			t.Fatal(err)
		}
	}
	waitKV(t, s)
	req := AskRequest{Question: "Who built the Old Stone Bridge of Marlow?", K: 5, MaxTokens: 24}
	for _, mode := range []string{"cacheblend", "reuse"} {
		req.Mode = mode
		plain, err := s.Ask(ctx, AskRequest{Question: req.Question, K: 5, MaxTokens: 24, Mode: mode}, nil)
		if err != nil {
			t.Fatal(err)
		}
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
