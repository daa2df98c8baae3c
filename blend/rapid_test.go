package blend

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"gonum.org/v1/gonum/stat/distuv"

	"github.com/blendrag/blendrag/model"
	"github.com/blendrag/blendrag/model/fetch"
	"github.com/blendrag/blendrag/model/modeltest"
)

// rapidPair prefills the target over every chunk of f and the drafter over
// the chunks keep (in their order) by mode.
func (f *fixture) rapidPair(t *testing.T, mode Mode, keep ...int) (target, drafter *Result) {
	t.Helper()
	target = f.prefill(t, DefaultOptions(mode))
	seg := Segments{Prefix: f.seg.Prefix, Question: f.seg.Question}
	var kvs []*model.KV
	for _, i := range keep {
		seg.Chunks = append(seg.Chunks, f.seg.Chunks[i])
		kvs = append(kvs, f.chunks[i])
	}
	drafter, err := Prefill(context.Background(), f.m, seg, f.prefix, MemorySource(kvs), DefaultOptions(mode))
	if err != nil {
		t.Fatal(err)
	}
	return target, drafter
}

// stepRef decodes tokens one by one after res's context (which it extends)
// and returns the cache — what a decoder that never saw a rejected draft
// holds.
func stepRef(t *testing.T, m *model.Model, res *Result, tokens []int32) *model.KV {
	t.Helper()
	c := &decodeCtx{m: m, kv: res.KV, groups: res.Groups, logits: res.Logits}
	for _, tok := range tokens {
		if _, err := c.forward([]int32{tok}, false); err != nil {
			t.Fatal(err)
		}
	}
	return c.kv
}

// sameKV reports the first difference between two caches, bitwise.
func sameKV(a, b *model.KV) error {
	if a.Len() != b.Len() || !slices.Equal(a.Tokens, b.Tokens) || !slices.Equal(a.Pos, b.Pos) {
		return fmt.Errorf("rows %d vs %d, tokens %v vs %v", a.Len(), b.Len(), a.Tokens, b.Tokens)
	}
	for l := range a.K {
		for i := range a.K[l] {
			if math.Float32bits(a.K[l][i]) != math.Float32bits(b.K[l][i]) || math.Float32bits(a.V[l][i]) != math.Float32bits(b.V[l][i]) {
				return fmt.Errorf("layer %d row %d differs", l, i/a.KVDim)
			}
		}
	}
	return nil
}

// rapidTally counts drafts over a test's runs.
type rapidTally struct{ drafted, accepted, rounds int }

func (c *rapidTally) add(s RapidStats) {
	c.drafted += s.Drafted
	c.accepted += s.Accepted
	c.rounds += s.Rounds
}

// checkRapidGreedy decodes greedily from a target/drafter pair with RAPID
// and from a copy of the target alone, and checks the tokens, the text and
// that both RAPID caches equal caches that decoded only the committed
// tokens.
func checkRapidGreedy(t *testing.T, m *model.Model, tr, dr *Result, maxTokens int, ropt RapidOptions, stop []string) RapidStats {
	t.Helper()
	nT, nD := tr.KV.Len(), dr.KV.Len()
	ref, trClean, drClean := tr.Clone(), tr.Clone(), dr.Clone()
	opt := model.GenerateOptions{MaxTokens: maxTokens, IgnoreEOS: true, Stop: stop}
	want, err := Generate(context.Background(), m, ref, opt, nil)
	if err != nil {
		t.Fatal(err)
	}
	var streamed strings.Builder
	got, st, err := Rapid(context.Background(), m, tr, m, dr, opt, ropt, func(s string) error { streamed.WriteString(s); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Tokens, want.Tokens) || got.Text != want.Text || got.Reason != want.Reason || streamed.String() != got.Text {
		t.Fatalf("RAPID %v %q (%s), target alone %v %q (%s)", got.Tokens, got.Text, got.Reason, want.Tokens, want.Text, want.Reason)
	}
	if st.Accepted > st.Drafted || st.Rounds == 0 && st.Drafted > 0 {
		t.Fatalf("stats %+v", st)
	}
	// Rollback: each cache holds its context and a prefix of the output,
	// bitwise as if only those tokens had ever been fed.
	gotT := tr.KV.Tokens[nT:]
	gotD := dr.KV.Tokens[nD:]
	if !slices.Equal(gotT, got.Tokens[:len(gotT)]) || !slices.Equal(gotD, got.Tokens[:len(gotD)]) {
		t.Fatalf("caches hold %v and %v, output %v", gotT, gotD, got.Tokens)
	}
	if err := sameKV(tr.KV, stepRef(t, m, trClean, gotT)); err != nil {
		t.Fatalf("target cache after RAPID: %v", err)
	}
	if err := sameKV(dr.KV, stepRef(t, m, drClean, gotD)); err != nil {
		t.Fatalf("drafter cache after RAPID: %v", err)
	}
	if tr.Groups != nil && len(tr.Groups.Of) != tr.KV.Len() {
		t.Fatalf("target groups cover %d of %d rows", len(tr.Groups.Of), tr.KV.Len())
	}
	return st
}

// With η = 0 and greedy decoding, RAPID's output is the target's greedy
// output token for token, for every fusion mode on both sides, with drafts
// both accepted and rejected; after every run both caches equal caches that
// never saw a rejected draft.
func TestRapidGreedyEqualsTargetGreedyAndRollsBackExactly(t *testing.T) {
	modes := []Mode{ModeCacheBlend, ModeFull, ModeReuse, ModeAPE}
	forSpecs(t, func(t *testing.T, m *model.Model) {
		var tally rapidTally
		for seed := uint64(1); seed <= 12; seed++ {
			mode := modes[int(seed)%len(modes)]
			f := newFixture(t, m, 100+seed, 7, 12, 9, 5)
			tr, dr := f.rapidPair(t, mode, 1, 3)
			ropt := RapidOptions{KeepDrafting: true, Gamma: 2 + int(seed)%5, FixedGamma: seed%2 == 0}
			st := checkRapidGreedy(t, m, tr, dr, 20+int(seed), ropt, nil)
			tally.add(st)
		}
		t.Logf("greedy: %d rounds, %d drafted, %d accepted, %d rejected", tally.rounds, tally.drafted, tally.accepted, tally.drafted-tally.accepted)
		if tally.accepted == 0 || tally.accepted == tally.drafted {
			t.Errorf("drafts accepted %d of %d: the test needs both acceptances and rejections", tally.accepted, tally.drafted)
		}
	})
}

// Stop strings, the token limit and the self-disabling probe keep the
// decode loop's semantics.
func TestRapidKeepsStopRulesOfTheDecodeLoop(t *testing.T) {
	m := modeltest.New(t, specs()[0])
	for i, ropt := range []RapidOptions{{}, {KeepDrafting: true, Gamma: 3}} {
		f := newFixture(t, m, 300+uint64(i), 7, 12, 9)
		// A stop string made of the target's own output, so it does occur.
		tr0, _ := f.rapidPair(t, ModeCacheBlend, 0)
		g, err := Generate(context.Background(), m, tr0, model.GenerateOptions{MaxTokens: 12, IgnoreEOS: true}, nil)
		if err != nil {
			t.Fatal(err)
		}
		stop := string(m.Tok.Piece(g.Tokens[8]))
		tr, dr := f.rapidPair(t, ModeCacheBlend, 0)
		checkRapidGreedy(t, m, tr, dr, 12, ropt, []string{stop})
		tr, dr = f.rapidPair(t, ModeCacheBlend, 0)
		checkRapidGreedy(t, m, tr, dr, 1, ropt, nil)
	}
	// The context length: a model of 48 positions fills up mid-round.
	sp := specs()[0]
	sp.Context = 48
	small := modeltest.New(t, sp)
	for _, gamma := range []int{3, 7} {
		f := newFixture(t, small, 310, 7, 12, 9)
		tr, dr := f.rapidPair(t, ModeCacheBlend, 0)
		st := checkRapidGreedy(t, small, tr, dr, 40, RapidOptions{KeepDrafting: true, Gamma: gamma, FixedGamma: true}, nil)
		if st.Drafted == 0 {
			t.Errorf("γ=%d: nothing drafted before the context filled", gamma)
		}
	}
}

// A drafter identical to the target (same context) has q = p exactly, so
// every draft is accepted, with or without knowledge transfer (p − q = 0).
func TestRapidDrafterEqualToTargetAcceptsEveryDraft(t *testing.T) {
	m := modeltest.New(t, specs()[1])
	f := newFixture(t, m, 400, 7, 12)
	for _, eta := range []float64{0, 0.5} {
		for _, temp := range []float32{0, 1} {
			tr, dr := f.rapidPair(t, ModeCacheBlend, 0, 1)
			opt := model.GenerateOptions{MaxTokens: 17, IgnoreEOS: true, Sampler: model.SamplerConfig{Temperature: temp, Seed: 3}}
			_, st, err := Rapid(context.Background(), m, tr, m, dr, opt, RapidOptions{KeepDrafting: true, Eta: eta, Gamma: 4, FixedGamma: true}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if st.Drafted == 0 || st.Accepted != st.Drafted {
				t.Errorf("η=%v T=%v: accepted %d of %d drafts", eta, temp, st.Accepted, st.Drafted)
			}
		}
	}
}

// chiSquare returns the p-value of Pearson's goodness-of-fit test of counts
// against probabilities want. Bins are merged, least expected first, into
// groups expected at least 5 counts each (a last short group joins the one
// before it).
func chiSquare(counts []int, want []float64) (p float64, df int) {
	n := 0
	for _, c := range counts {
		n += c
	}
	idx := make([]int, len(counts))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return cmp.Compare(want[a], want[b]) })
	type group struct{ o, e float64 }
	var groups []group
	var cur group
	for _, i := range idx {
		cur.o += float64(counts[i])
		cur.e += want[i] * float64(n)
		if cur.e >= 5 {
			groups = append(groups, cur)
			cur = group{}
		}
	}
	if cur.e > 0 || cur.o > 0 {
		if len(groups) == 0 {
			return 1, 0
		}
		groups[len(groups)-1].o += cur.o
		groups[len(groups)-1].e += cur.e
	}
	var stat float64
	for _, g := range groups {
		stat += (g.o - g.e) * (g.o - g.e) / g.e
	}
	df = len(groups) - 1
	if df < 1 {
		return 1, df
	}
	return distuv.ChiSquared{K: float64(df)}.Survival(stat), df
}

// With η = 0 and sampling, the first and second tokens RAPID emits follow
// the target's distributions — p(x1) and Σ_x1 p(x1)·p(x2 | x1), computed
// from the target alone — although the drafter (over other chunks)
// proposes from a different distribution and drafts are rejected.
func TestRapidSamplingMatchesTargetDistribution(t *testing.T) {
	m := modeltest.New(t, specs()[0])
	f := newFixture(t, m, 500, 7, 12, 9)
	tr, dr := f.rapidPair(t, ModeFull, 2)
	cfg := model.SamplerConfig{Temperature: 4}
	v := m.Config.Vocab
	// Expected distributions from the target alone.
	s := model.NewSampler(cfg)
	p1 := make([]float32, v)
	s.Distribution(p1, tr.Logits)
	want1, want2 := make([]float64, v), make([]float64, v)
	p2 := make([]float32, v)
	for x1, w := range p1 {
		want1[x1] = float64(w)
		if w == 0 {
			continue
		}
		kv := tr.KV.Clone()
		logits, err := m.Step(kv, int32(x1))
		if err != nil {
			t.Fatal(err)
		}
		s.Distribution(p2, logits)
		for x2, w2 := range p2 {
			want2[x2] += float64(w) * float64(w2)
		}
	}
	const runs = 3000
	c1, c2 := make([]int, v), make([]int, v)
	var tally rapidTally
	for seed := range uint64(runs) {
		trc := &Result{KV: tr.KV.Clone(), Logits: tr.Logits}
		drc := &Result{KV: dr.KV.Clone(), Logits: dr.Logits}
		cfg.Seed = seed
		opt := model.GenerateOptions{MaxTokens: 4, IgnoreEOS: true, Sampler: cfg}
		g, st, err := Rapid(context.Background(), m, trc, m, drc, opt, RapidOptions{KeepDrafting: true, Gamma: 3, FixedGamma: true}, nil)
		if err != nil {
			t.Fatal(err)
		}
		tally.add(st)
		c1[g.Tokens[0]]++
		c2[g.Tokens[1]]++
	}
	t.Logf("sampling: %d rounds, %d drafted, %d accepted, %d rejected", tally.rounds, tally.drafted, tally.accepted, tally.drafted-tally.accepted)
	if tally.accepted == 0 || tally.accepted == tally.drafted {
		t.Fatalf("drafts accepted %d of %d: the test needs both", tally.accepted, tally.drafted)
	}
	for i, c := range []struct {
		counts []int
		want   []float64
	}{{c1, want1}, {c2, want2}} {
		p, df := chiSquare(c.counts, c.want)
		t.Logf("token %d: chi-square p = %.3f (%d df)", i+1, p, df)
		if p < 0.001 {
			t.Errorf("token %d: RAPID's distribution differs from the target's (chi-square p = %g, %d df)", i+1, p, df)
		}
	}
	// The test has power: the drafter's own distribution is rejected.
	q1 := make([]float32, v)
	s.Distribution(q1, dr.Logits)
	wantQ := make([]float64, v)
	for i, w := range q1 {
		wantQ[i] = float64(w)
	}
	if p, _ := chiSquare(c1, wantQ); p > 0.001 {
		t.Errorf("the first token also fits the drafter's distribution (p = %g): the test cannot tell them apart", p)
	}
}

// Knowledge transfer follows ẑ = z/τ − η·M⊙(p − q): the first token (drawn
// from the drafter, accepted or resampled) follows softmax(ẑ), computed here
// independently in float64.
func TestRapidKnowledgeTransferSamplesTheAdjustedDistribution(t *testing.T) {
	m := modeltest.New(t, specs()[0])
	f := newFixture(t, m, 600, 7, 12, 9)
	tr, dr := f.rapidPair(t, ModeFull, 0)
	const eta, tau = 2.0, 4.0
	v := m.Config.Vocab
	soft := func(z []float32) []float64 {
		out := make([]float64, len(z))
		mx := math.Inf(-1)
		for _, x := range z {
			mx = max(mx, float64(x)/tau)
		}
		var sum float64
		for i, x := range z {
			out[i] = math.Exp(float64(x)/tau - mx)
			sum += out[i]
		}
		for i := range out {
			out[i] /= sum
		}
		return out
	}
	p, q := soft(tr.Logits), soft(dr.Logits)
	qmax := slices.Max(q)
	zh := make([]float32, v)
	for i := range zh {
		x := float64(tr.Logits[i]) / tau
		if q[i] >= DefaultAlpha*qmax {
			x -= eta * (p[i] - q[i])
		}
		zh[i] = float32(x * tau)
	}
	want := soft(zh)
	counts := make([]int, v)
	for seed := range uint64(3000) {
		trc := &Result{KV: tr.KV.Clone(), Logits: tr.Logits}
		drc := &Result{KV: dr.KV.Clone(), Logits: dr.Logits}
		opt := model.GenerateOptions{MaxTokens: 2, IgnoreEOS: true, Sampler: model.SamplerConfig{Temperature: tau, Seed: seed}}
		g, _, err := Rapid(context.Background(), m, trc, m, drc, opt, RapidOptions{KeepDrafting: true, Eta: eta, Gamma: 1, FixedGamma: true}, nil)
		if err != nil {
			t.Fatal(err)
		}
		counts[g.Tokens[0]]++
	}
	pv, df := chiSquare(counts, want)
	t.Logf("η=%v: chi-square p = %.3f (%d df)", eta, pv, df)
	if pv < 0.001 {
		t.Errorf("first token does not follow softmax(ẑ): p = %g", pv)
	}
	if pu, _ := chiSquare(counts, p); pu > 0.001 {
		t.Errorf("first token also fits the untransferred target (p = %g): η had no visible effect", pu)
	}
}

func TestExpectedTokensAndBound(t *testing.T) {
	if got := ExpectedTokens(0.5, 2); math.Abs(got-1.75) > 1e-12 {
		t.Errorf("ExpectedTokens(0.5, 2) = %v, want 1 + 0.5 + 0.25", got)
	}
	if got := ExpectedTokens(1, 4); got != 5 {
		t.Errorf("ExpectedTokens(1, 4) = %v, want 5", got)
	}
	// Draft step 2 ms, target step 10 ms, verify 8 ms + 2 ms/row: at a = 1,
	// γ drafts cost 2γ + 8 + 2(γ+1) = 4γ + 10 ms for γ+1 tokens (10 ms each
	// alone): (γ+1)·10/(4γ+10) grows with γ, so γ = 10 gives 110/50 = 2.2.
	st := RapidStats{DraftStep: 2 * time.Millisecond, TargetStep: 10 * time.Millisecond, VerifyFixed: 8 * time.Millisecond, VerifyPerRow: 2 * time.Millisecond}
	if s, g := st.Bound(1, MinGamma, MaxGamma); g != 10 || math.Abs(s-2.2) > 1e-9 {
		t.Errorf("Bound(1) = %v at γ=%d, want 2.2 at γ=10", s, g)
	}
	// At a = 0 a round yields one token for at least 4·2+10 ms: no γ pays.
	if s, _ := st.Bound(0, MinGamma, MaxGamma); s >= 1 {
		t.Errorf("Bound(0) = %v, want < 1", s)
	}
	if s, g := (RapidStats{}).Bound(1, 2, 10); s != 0 || g != 0 {
		t.Errorf("unmeasured Bound = %v, %d", s, g)
	}
}

// RAPID switches itself off once its measurements say no draft length
// pays, and says why.
func TestRapidSwitchesOffWhenDraftingDoesNotPay(t *testing.T) {
	ms := time.Millisecond
	r := &rapid{ropt: RapidOptions{Gamma: 6}, gamma: 6, d: &decodeCtx{}}
	// Target steps of 10 ms, verifies of 7 rows taking 40 ms, draft steps of
	// 9 ms, half the drafts accepted.
	r.st.TargetSteps, r.st.TargetStepTime = 2, 20*ms
	r.observeVerify(1, 10*ms)
	r.observeVerify(1, 10*ms)
	for range 3 {
		r.observeVerify(7, 40*ms)
		r.st.Rounds++
		r.st.DraftStep = 9 * ms
		r.accW, r.rejW = r.accW*0.8+3, r.rejW*0.8+1
		r.roundTime += 6*9*ms + 40*ms
		r.roundTokens += 4
		r.adapt()
		// Even with every draft accepted no γ pays: off after one round.
		if !r.st.Disabled || !strings.Contains(r.st.DisabledReason, "does not pay") {
			t.Fatalf("round %d: not disabled: %+v", r.st.Rounds, r.st)
		}
	}
	if r.st.VerifyFixed != 5*ms || r.st.VerifyPerRow != 5*ms {
		t.Errorf("verify line %v + %v/row, want 5ms + 5ms/row", r.st.VerifyFixed, r.st.VerifyPerRow)
	}
	// Cheap drafts and verifies keep it on.
	r2 := &rapid{ropt: RapidOptions{Gamma: 6}, gamma: 6, d: &decodeCtx{}}
	r2.st.TargetSteps, r2.st.TargetStepTime = 2, 20*ms
	for range 3 {
		r2.observeVerify(1, 10*ms)
		r2.observeVerify(7, 13*ms)
		r2.st.Rounds++
		r2.st.DraftStep = 1 * ms
		r2.accW = r2.accW*0.8 + 6
		r2.roundTime += 6*ms + 13*ms
		r2.roundTokens += 7
		r2.adapt()
	}
	if r2.st.Disabled {
		t.Errorf("disabled although drafting pays: %s", r2.st.DisabledReason)
	}
	if r2.gamma <= DefaultGamma {
		t.Errorf("γ = %d with every draft accepted and cheap drafts, want it above %d", r2.gamma, DefaultGamma)
	}
}

func TestRapidRejectsBadInput(t *testing.T) {
	m := modeltest.New(t, specs()[0])
	f := newFixture(t, m, 700, 7)
	tr, dr := f.rapidPair(t, ModeFull, 0)
	ok := model.GenerateOptions{MaxTokens: 4}
	for name, tc := range map[string]struct {
		opt  model.GenerateOptions
		ropt RapidOptions
		dr   *Result
	}{
		"negative gamma":  {ok, RapidOptions{Gamma: -1}, dr},
		"negative eta":    {ok, RapidOptions{Eta: -0.1}, dr},
		"nan eta":         {ok, RapidOptions{Eta: math.NaN()}, dr},
		"alpha above one": {ok, RapidOptions{Alpha: 1.5}, dr},
		"no max tokens":   {model.GenerateOptions{}, RapidOptions{}, dr},
		"bad temperature": {model.GenerateOptions{MaxTokens: 4, Sampler: model.SamplerConfig{Temperature: -1}}, RapidOptions{}, dr},
		"nil drafter":     {ok, RapidOptions{}, nil},
		"short logits":    {ok, RapidOptions{}, &Result{KV: dr.KV, Logits: dr.Logits[:3]}},
	} {
		if _, _, err := Rapid(context.Background(), m, tr, m, tc.dr, tc.opt, tc.ropt, nil); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := Rapid(ctx, m, tr, m, dr, ok, RapidOptions{}, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

// On the real generator: RAPID's greedy output over a short-context drafter
// is the long-context target's greedy output, with drafts accepted and
// rejected.
func TestRapidGreedyEqualsTargetGreedyOnTheRealModel(t *testing.T) {
	path := fetch.GeneratorPath(fetch.Dir())
	if _, err := os.Stat(path); err != nil {
		t.Skip("default model not present: run `make models`")
	}
	if testing.Short() {
		t.Skip("real model: skipped with -short")
	}
	m, err := model.Load(path, model.Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	fm, err := NewFormat(m.Tok, "", "")
	if err != nil {
		t.Fatal(err)
	}
	passages := []string{
		"The Amazon River in South America is the largest river by discharge volume of water in the world. It flows through Brazil, Peru and Colombia.",
		"Mount Everest, on the border of Nepal and China, is Earth's highest mountain above sea level, at 8,849 metres.",
		"The Great Barrier Reef lies off the coast of Queensland, Australia. It is the world's largest coral reef system.",
		"Lake Baikal in Siberia is the deepest lake in the world and holds about a fifth of the world's fresh surface water.",
		"The Sahara is the largest hot desert in the world. It covers much of North Africa, from the Atlantic to the Red Sea.",
	}
	questions := []string{
		"Which countries does the Amazon flow through?",
		"How high is Mount Everest?",
		"Where is the Great Barrier Reef?",
		"What is special about Lake Baikal?",
	}
	prefix, err := EncodePrefix(m, fm.Prefix())
	if err != nil {
		t.Fatal(err)
	}
	var chunks []*model.KV
	for _, p := range passages {
		kv, err := EncodeChunk(m, prefix, fm.Chunk(p))
		if err != nil {
			t.Fatal(err)
		}
		chunks = append(chunks, kv)
	}
	var tally rapidTally
	for qi, q := range questions {
		f := &fixture{m: m, seg: fm.Segments(q, passages), prefix: prefix, chunks: chunks}
		mode := []Mode{ModeCacheBlend, ModeReuse}[qi%2]
		tr, dr := f.rapidPair(t, mode, qi)
		st := checkRapidGreedy(t, m, tr, dr, 24, RapidOptions{KeepDrafting: true}, nil)
		tally.add(st)
	}
	t.Logf("real model greedy: %d rounds, %d drafted, %d accepted, %d rejected", tally.rounds, tally.drafted, tally.accepted, tally.drafted-tally.accepted)
	if tally.accepted == 0 || tally.accepted == tally.drafted {
		t.Errorf("drafts accepted %d of %d: the test needs both", tally.accepted, tally.drafted)
	}
}

// Extending a context by several tokens at once gives each row bitwise the
// logits of extending it one token at a time (the verify forward equals
// decode steps), with and without key groups; Truncate undoes it.
func TestExtendManyRowsEqualsOneAtATimeAndTruncateUndoesIt(t *testing.T) {
	forSpecs(t, func(t *testing.T, m *model.Model) {
		f := newFixture(t, m, 800, 7, 12, 9)
		for _, mode := range []Mode{ModeCacheBlend, ModeAPE} {
			res := f.prefill(t, DefaultOptions(mode))
			n := res.KV.Len()
			toks := []int32{5, 17, 3, 42, 8}
			batch, err := res.Extend(m, toks, true)
			if err != nil {
				t.Fatal(err)
			}
			res.Truncate(n)
			if res.KV.Len() != n || (res.Groups != nil && len(res.Groups.Of) != n) {
				t.Fatalf("%s: Truncate left %d rows", mode, res.KV.Len())
			}
			v := m.Config.Vocab
			for i, tok := range toks {
				one, err := res.Extend(m, []int32{tok}, false)
				if err != nil {
					t.Fatal(err)
				}
				if d := maxAbsDiff(one, batch[i*v:(i+1)*v]); d != 0 {
					t.Errorf("%s: row %d differs by %g alone and in the batch", mode, i, d)
				}
			}
		}
	})
}

// TestRapidSwitchesOffAtTheRunningAcceptanceFromTheFirstRound: with the
// 8K-context costs of docs/RAPID.md drafting pays only if nearly every draft
// is accepted (1.30× at acceptance 1), so a first round of γ = 2 that kept
// one draft (running acceptance (1+1)/(2+2) = 0.5 with the uniform prior)
// and ran slower than the target alone (2·96 / 240 ms = 0.8×) switches
// RAPID off at once. The same round with both drafts kept (bound 0.92× at
// 0.75) ran faster than the target alone (3·96 / 240 = 1.2×), so it keeps
// drafting for now; so does cheap drafting.
func TestRapidSwitchesOffAtTheRunningAcceptanceFromTheFirstRound(t *testing.T) {
	us := time.Microsecond
	round := func(draft, fixed, perRow time.Duration, accepted int) *rapid {
		r := &rapid{ropt: RapidOptions{Gamma: 2}, gamma: 2, d: &decodeCtx{}}
		r.st.TargetSteps, r.st.TargetStepTime = 2, 2*96000*us
		r.observeVerify(1, 96000*us)
		r.observeVerify(3, fixed+3*perRow)
		r.st.Rounds, r.st.DraftStep = 1, draft
		r.accW = float64(accepted)
		if accepted < 2 {
			r.rejW = 1
		}
		r.roundTime = 2*draft + fixed + 3*perRow
		r.roundTokens = accepted + 1
		r.adapt()
		return r
	}
	if r := round(20000*us, 45600*us, 51500*us, 1); !r.st.Disabled || !strings.Contains(r.st.DisabledReason, "does not pay") {
		t.Errorf("8K costs, 1 of 2 drafts kept: still drafting (%+v)", r.st)
	}
	if r := round(20000*us, 45600*us, 51500*us, 2); r.st.Disabled {
		t.Errorf("8K costs, both drafts kept (measured 1.2×): switched off: %s", r.st.DisabledReason)
	}
	if r := round(2000*us, 20000*us, 3000*us, 2); r.st.Disabled {
		t.Errorf("cheap drafting switched off: %s", r.st.DisabledReason)
	}
}
