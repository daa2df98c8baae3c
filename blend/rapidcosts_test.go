package blend

import (
	"strings"
	"testing"
	"time"

	"github.com/blendrag/blendrag/model"
	"github.com/blendrag/blendrag/model/modeltest"
)

func TestRapidCostsZeroValueLetsEveryRequestDraft(t *testing.T) {
	var c RapidCosts
	if ok, why := c.ShouldDraft(2000, 600, 0); !ok || why != "" {
		t.Errorf("empty memory: ShouldDraft = %v, %q; want true", ok, why)
	}
	if _, ok := c.Predict(2000, 600, 0); ok {
		t.Error("empty memory predicted costs")
	}
	var nilCosts *RapidCosts
	nilCosts.Observe(1, 1, RapidStats{}) // no-op, no panic
	if ok, _ := nilCosts.ShouldDraft(1, 1, 0); !ok {
		t.Error("nil memory: ShouldDraft = false")
	}
	// A decode that never drafted teaches nothing.
	c.Observe(2000, 600, RapidStats{TargetStep: time.Millisecond})
	if _, ok := c.Predict(2000, 600, 0); ok {
		t.Error("a decode without a drafter step was recorded")
	}
}

// TestRapidCostsPredictsStepCostsLinearInContextRows: through the measured
// target step (2,000 rows, 46 ms) and drafter step (600 rows, 26 ms) the
// line is 17.43 ms + 14.29 µs/row (by hand: 20 ms / 1,400 rows), so a
// 4,000-row target step is predicted at 74.57 ms, the verify line scaled by
// 74.57/46; a measured step of the new request replaces the target's and
// rescales the drafter's.
func TestRapidCostsPredictsStepCostsLinearInContextRows(t *testing.T) {
	ms := time.Millisecond
	var c RapidCosts
	c.Observe(2000, 600, RapidStats{TargetStep: 46 * ms, DraftStep: 26 * ms, VerifyFixed: 8 * ms, VerifyPerRow: 30 * ms})
	near := func(what string, got time.Duration, want float64) {
		t.Helper()
		if g := float64(got) / float64(ms); g < want-0.01 || g > want+0.01 {
			t.Errorf("%s = %.3f ms, want %.3f ms", what, g, want)
		}
	}
	p, ok := c.Predict(4000, 600, 0)
	if !ok {
		t.Fatal("no prediction after Observe")
	}
	near("target step", p.TargetStep, 74.571)
	near("drafter step", p.DraftStep, 26)
	near("verify fixed", p.VerifyFixed, 8*74.571/46)
	near("verify per row", p.VerifyPerRow, 30*74.571/46)
	// The request's own step (twice the line's at 2,000 rows: a loaded
	// machine) scales everything by 2.
	p, _ = c.Predict(2000, 600, 92*ms)
	near("measured target step", p.TargetStep, 92)
	near("drafter step on a loaded machine", p.DraftStep, 52)
	near("verify per row on a loaded machine", p.VerifyPerRow, 60)
}

// TestRapidCostsSkipsWhenDraftingCannotPayAndRefreshes: with this CPU's
// costs (docs/RAPID.md: a verified row almost a target step) no γ pays even
// at acceptance 1, so requests skip drafting, except every RapidRefresh-th,
// which measures again; with cheap drafts and verifies they draft.
func TestRapidCostsSkipsWhenDraftingCannotPayAndRefreshes(t *testing.T) {
	ms := time.Millisecond
	var c RapidCosts
	cpu := RapidStats{TargetStep: 46 * ms, DraftStep: 26 * ms, VerifyFixed: 8 * ms, VerifyPerRow: 30 * ms}
	if best, _ := cpu.Bound(1, MinGamma, MaxGamma); best >= 1 {
		t.Fatalf("test costs pay (bound %.2f)", best)
	}
	c.Observe(2000, 600, cpu)
	for i := 1; i < RapidRefresh; i++ {
		ok, why := c.ShouldDraft(2000, 600, 0)
		if ok || !strings.Contains(why, "would not pay") {
			t.Fatalf("request %d: ShouldDraft = %v, %q; want a skip with its reason", i, ok, why)
		}
	}
	if ok, _ := c.ShouldDraft(2000, 600, 0); !ok {
		t.Errorf("request %d was not let through to measure again", RapidRefresh)
	}
	if ok, _ := c.ShouldDraft(2000, 600, 0); ok {
		t.Error("the count did not restart after the refresh")
	}
	// A fresh measurement where drafting pays (a small drafter, verified
	// rows sharing the weights) lets requests draft.
	c.Observe(8000, 600, RapidStats{TargetStep: 20 * ms, DraftStep: 2 * ms, VerifyFixed: 18 * ms, VerifyPerRow: 1 * ms})
	if ok, why := c.ShouldDraft(8000, 600, 0); !ok {
		t.Errorf("cheap drafting skipped: %s", why)
	}
}

// TestRapidObservesItsCostsIntoRapidCosts: a real decode (generated model,
// drafting throughout) leaves its measured costs in RapidOptions.Costs.
func TestRapidObservesItsCostsIntoRapidCosts(t *testing.T) {
	m := modeltest.New(t, specs()[0])
	f := newFixture(t, m, 7, 7, 12, 9, 5)
	target, drafter := f.rapidPair(t, ModeCacheBlend, 1, 3)
	var c RapidCosts
	opt := model.GenerateOptions{MaxTokens: 16, IgnoreEOS: true}
	_, st, err := Rapid(t.Context(), m, target, m, drafter, opt, RapidOptions{Gamma: 3, KeepDrafting: true, Costs: &c}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Rounds == 0 {
		t.Fatal("no round drafted")
	}
	p, ok := c.Predict(100, 50, st.TargetStep)
	if !ok || p.DraftStep <= 0 || p.VerifyPerRow+p.VerifyFixed <= 0 {
		t.Errorf("costs not recorded: %+v (ok %v) after %+v", p, ok, st)
	}
}

// TestRapidCostsJudgesAtTheMeasuredAcceptance: with the 8K-context costs of
// docs/RAPID.md (target step 96 ms, draft step 20 ms, verify 45.6 ms +
// 51.5 ms/row) drafting pays only if nearly every draft is accepted (at 1:
// 11·96 / (10·20 + 45.6 + 11·51.5) = 1.30× at γ = 10; at 0.6: 1.96·96 /
// (2·20 + 45.6 + 3·51.5) = 0.78× at γ = 2). So a request skips after
// requests that accepted 60 % of their drafts, and drafts after requests
// that accepted them all.
func TestRapidCostsJudgesAtTheMeasuredAcceptance(t *testing.T) {
	ms := time.Millisecond
	costs := RapidStats{TargetStep: 96 * ms, DraftStep: 20 * ms, VerifyFixed: 45600 * time.Microsecond, VerifyPerRow: 51500 * time.Microsecond}
	if best, _ := costs.Bound(1, MinGamma, MaxGamma); best < 1.29 || best > 1.31 {
		t.Fatalf("bound at acceptance 1 = %.3f, want 1.30", best)
	}
	low := costs
	low.Drafted, low.Accepted = 10, 6
	var c RapidCosts
	c.Observe(8000, 700, low)
	if ok, why := c.ShouldDraft(8000, 700, 0); ok || !strings.Contains(why, "acceptance 0.60") {
		t.Errorf("after 60 %% acceptance: ShouldDraft = %v, %q; want a skip at acceptance 0.60", ok, why)
	}
	all := costs
	all.Drafted, all.Accepted = 10, 10
	var c2 RapidCosts
	c2.Observe(8000, 700, all)
	if ok, why := c2.ShouldDraft(8000, 700, 0); !ok {
		t.Errorf("after every draft accepted: skipped (%s)", why)
	}
}
