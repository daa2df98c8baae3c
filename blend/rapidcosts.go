package blend

import (
	"fmt"
	"sync"
	"time"
)

// RapidCosts remembers, across the requests of one process, what RAPID's
// steps cost, so that a request whose drafting cannot pay skips it from the
// start — without the drafter's prefill and the first round that a request
// needs to measure the costs itself. Safe for concurrent use; the zero value
// is ready (it knows nothing and lets every request draft).
//
// The model behind the prediction: a decode step over a context of R rows
// costs w + c·R (the weights, then attention per context row), fitted
// through the last measured target step (R_T rows) and drafter step (R_D
// rows); the target's verify line scales with its step. For a new request
// with contexts R_T′ and R_D′ the predicted costs go into RapidStats.Bound
// at the acceptance rate the earlier requests measured (a running mean over
// requests; 1 while no draft was judged yet): if drafting at that
// acceptance would not beat the target alone, the request should not draft.
//
// Every RapidRefresh-th request that is told to skip is told to draft
// instead, so that a machine whose load or hardware changed is measured
// again.
type RapidCosts struct {
	mu      sync.Mutex
	ok      bool
	tRows   int
	dRows   int
	st      RapidStats // the costs of the last measured request
	accept  float64    // running mean of the requests' acceptance rates
	judged  int        // requests that drafted (and so measured acceptance)
	skipped int        // requests told to skip since the last measurement
}

// RapidRefresh is how often (in skipped requests) RapidCosts lets a request
// draft anyway to measure the costs again.
const RapidRefresh = 16

// Observe records the costs a RAPID decode measured (st from Rapid) over a
// target context of targetRows rows and a drafter context of draftRows.
// Decodes that measured no drafter step are ignored.
func (c *RapidCosts) Observe(targetRows, draftRows int, st RapidStats) {
	if c == nil || st.DraftStep <= 0 || st.TargetStep <= 0 || st.VerifyFixed+st.VerifyPerRow <= 0 || targetRows <= 0 || draftRows <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ok, c.tRows, c.dRows, c.skipped = true, targetRows, draftRows, 0
	c.st = RapidStats{DraftStep: st.DraftStep, TargetStep: st.TargetStep, VerifyFixed: st.VerifyFixed, VerifyPerRow: st.VerifyPerRow}
	if st.Drafted > 0 {
		// A running mean that weighs the last requests most (1/4 each
		// after the first few).
		c.judged++
		c.accept += (st.AcceptRate() - c.accept) / float64(min(c.judged, 4))
	}
}

// acceptance is the acceptance rate to judge by: the running mean, or 1
// before any request drafted.
func (c *RapidCosts) acceptance() float64 {
	if c.judged == 0 {
		return 1
	}
	return c.accept
}

// Predict returns the costs expected for a decode over contexts of
// targetRows and draftRows rows, with ok false when nothing was measured.
// targetStep, when positive, is the current request's own measured target
// step and replaces the predicted one (the other costs are scaled to it).
func (c *RapidCosts) Predict(targetRows, draftRows int, targetStep time.Duration) (RapidStats, bool) {
	if c == nil {
		return RapidStats{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.ok {
		return RapidStats{}, false
	}
	return c.predict(targetRows, draftRows, targetStep), true
}

func (c *RapidCosts) predict(targetRows, draftRows int, targetStep time.Duration) RapidStats {
	tT, tD := float64(c.st.TargetStep), float64(c.st.DraftStep)
	// w + c·R through (R_T, t_T) and (R_D, t_D); a flat line when the
	// contexts were the same size or the fit would go negative.
	per, w := 0.0, tT
	if c.tRows != c.dRows {
		per = (tT - tD) / float64(c.tRows-c.dRows)
		w = tT - per*float64(c.tRows)
	}
	if per < 0 || w < 0 {
		per, w = 0, tT
	}
	step := func(rows int) float64 { return w + per*float64(rows) }
	nT, nD := step(targetRows), step(draftRows)
	if targetStep > 0 {
		// The request's own step calibrates the line's scale (machine load).
		k := float64(targetStep) / nT
		nT, nD = float64(targetStep), nD*k
	}
	scale := nT / tT
	return RapidStats{
		TargetStep:   time.Duration(nT),
		DraftStep:    time.Duration(nD),
		VerifyFixed:  time.Duration(float64(c.st.VerifyFixed) * scale),
		VerifyPerRow: time.Duration(float64(c.st.VerifyPerRow) * scale),
	}
}

// ShouldDraft reports whether a decode over contexts of targetRows and
// draftRows rows should draft at all, and when not, why. targetStep is the
// request's measured target step if known (else 0). Each "no" counts
// towards the periodic re-measurement (RapidRefresh).
func (c *RapidCosts) ShouldDraft(targetRows, draftRows int, targetStep time.Duration) (bool, string) {
	if c == nil {
		return true, ""
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.ok {
		return true, ""
	}
	p := c.predict(targetRows, draftRows, targetStep)
	a := c.acceptance()
	best, g := p.Bound(a, MinGamma, MaxGamma)
	if best <= 0 || best >= 1 {
		return true, ""
	}
	if c.skipped++; c.skipped >= RapidRefresh {
		c.skipped = 0
		return true, ""
	}
	return false, fmt.Sprintf(
		"drafting would not pay (costs measured by an earlier request over %d/%d rows): at best %.2f× (γ=%d) at acceptance %.2f; predicted draft step %v, target step %v, verify %v + %v/row",
		c.tRows, c.dRows, best, g, a, p.DraftStep.Round(time.Microsecond), p.TargetStep.Round(time.Microsecond),
		p.VerifyFixed.Round(time.Microsecond), p.VerifyPerRow.Round(time.Microsecond))
}
