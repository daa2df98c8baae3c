package blend

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/blendrag/blendrag/kernels"
	"github.com/blendrag/blendrag/model"
)

// RAPID's parameters (DESIGN.md "Fusing", RAPID).
const (
	DefaultGamma = 6   // draft tokens per round at the start
	MinGamma     = 2   // the adaptive draft length's range
	MaxGamma     = 10  //
	DefaultAlpha = 0.1 // knowledge-transfer mask threshold: q(x) ≥ α·max q
)

// RapidOptions configure Rapid.
type RapidOptions struct {
	// Gamma is the number of draft tokens per round (0: DefaultGamma).
	// Unless FixedGamma, rounds after the first pick it in [MinGamma,
	// MaxGamma] from the running acceptance rate and the measured costs, and
	// a self-disabling decode (KeepDrafting false) starts at MinGamma.
	Gamma      int
	FixedGamma bool
	// Eta is the knowledge-transfer strength η ≥ 0. With η = 0 RAPID is
	// standard speculative sampling: the output distribution is the
	// target's, and greedy output is the target's greedy output.
	Eta float64
	// Alpha is the mask threshold α in (0, 1] (0: DefaultAlpha).
	Alpha float64
	// KeepDrafting turns off self-disabling: RAPID keeps drafting even when
	// its measured drafting cost exceeds its gain (for measurements and
	// tests). Otherwise the first tokens are decoded by the target alone to
	// time its decode step, and RAPID switches itself off for the rest of the
	// request when the best draft length it can choose would not beat that
	// step.
	KeepDrafting bool
	// Costs, when set, receives the costs this decode measured
	// (RapidCosts.Observe), for later requests to decide with
	// RapidCosts.ShouldDraft whether to draft at all.
	Costs *RapidCosts
}

func (o *RapidOptions) normalize() error {
	if o.Gamma == 0 {
		o.Gamma = DefaultGamma
	}
	if o.Alpha == 0 {
		o.Alpha = DefaultAlpha
	}
	switch {
	case o.Gamma < 1 || o.Gamma > 64:
		return fmt.Errorf("blend: RAPID draft length %d outside 1..64", o.Gamma)
	case !(o.Eta >= 0) || math.IsInf(o.Eta, 0):
		return fmt.Errorf("blend: RAPID η %v must be finite and ≥ 0", o.Eta)
	case !(o.Alpha > 0 && o.Alpha <= 1):
		return fmt.Errorf("blend: RAPID α %v outside (0, 1]", o.Alpha)
	}
	if !o.FixedGamma {
		o.Gamma = min(max(o.Gamma, MinGamma), MaxGamma)
	}
	return nil
}

// RapidStats describe one Rapid decode.
type RapidStats struct {
	Rounds   int // draft-and-verify rounds
	Drafted  int // draft tokens proposed
	Accepted int // draft tokens accepted
	// GammaMean is the mean draft length over the rounds; GammaLast the
	// draft length the last round chose.
	GammaMean float64
	GammaLast int
	// TargetSteps counts the target's plain decode steps (the timing probe
	// and every step after a switch-off).
	TargetSteps int
	// Disabled says RAPID switched itself off for the rest of the request,
	// DisabledReason why (the measured costs and acceptance).
	Disabled       bool
	DisabledReason string
	// Measured costs: the drafter's decode step, the target's plain decode
	// step, and the target's verify forward as VerifyFixed + VerifyPerRow·rows
	// (a least-squares line through every target forward, plain steps as
	// one-row verifies). Zero when not measured.
	DraftStep, TargetStep       time.Duration
	VerifyFixed, VerifyPerRow   time.Duration
	DraftTime, VerifyTime       time.Duration // totals
	TargetStepTime, ControlTime time.Duration // totals (control: sampling, acceptance, transfer)
}

// AcceptRate is the share of draft tokens accepted (0 when none was drafted).
func (s RapidStats) AcceptRate() float64 {
	if s.Drafted == 0 {
		return 0
	}
	return float64(s.Accepted) / float64(s.Drafted)
}

// MeanAccepted is the mean number of draft tokens accepted per round.
func (s RapidStats) MeanAccepted() float64 {
	if s.Rounds == 0 {
		return 0
	}
	return float64(s.Accepted) / float64(s.Rounds)
}

// ExpectedTokens is the expected number of tokens one round of γ drafts
// commits when each draft is accepted with probability a independently:
// 1 + a + … + a^γ (the accepted drafts plus the resampled or bonus token).
func ExpectedTokens(a float64, gamma int) float64 {
	if a >= 1 {
		return float64(gamma + 1)
	}
	return (1 - math.Pow(a, float64(gamma+1))) / (1 - a)
}

// Bound returns the best decode speedup over target-only decoding that
// RAPID can reach with these measured costs at per-token acceptance rate a,
// and the draft length γ in [lo, hi] that reaches it:
//
//	max over γ of  ExpectedTokens(a, γ)·TargetStep / (γ·DraftStep + VerifyFixed + VerifyPerRow·(γ+1))
//
// (a round drafts γ tokens — the drafter's γ steps take in the previous
// round's last token and γ−1 drafts — and verifies γ+1 rows: that token and
// the drafts). It returns 0, 0 when the costs were not measured. The bound
// ignores the per-round control cost (sampling and acceptance), which is
// small against a forward.
func (s RapidStats) Bound(a float64, lo, hi int) (speedup float64, gamma int) {
	if s.TargetStep <= 0 || s.DraftStep <= 0 || s.VerifyFixed+s.VerifyPerRow <= 0 {
		return 0, 0
	}
	for g := lo; g <= hi; g++ {
		cost := float64(g)*float64(s.DraftStep) + float64(s.VerifyFixed) + float64(s.VerifyPerRow)*float64(g+1)
		if cost <= 0 {
			continue
		}
		if v := ExpectedTokens(a, g) * float64(s.TargetStep) / cost; v > speedup {
			speedup, gamma = v, g
		}
	}
	return speedup, gamma
}

// Rapid decodes with RAPID speculative decoding (DESIGN.md "Fusing"):
// drafter (over the short context dr) proposes γ tokens, target (over the
// long context tr) scores them in one forward, and each draft x_i is
// accepted iff u < p̂_i(x_i)/q_i(x_i), where q_i is the drafter's sampling
// distribution and p̂_i the target's, after knowledge transfer
// ẑ = z − η·M⊙(p − q) with M = {x : q(x) ≥ α·max q}. At the first rejection
// the token is drawn from norm(max(0, p̂_i − q_i)); when every draft is
// accepted a bonus token comes from the target's next distribution.
//
// Both models must share the vocabulary; drafter may be target itself.
// Sampling follows opt.Sampler (temperature, top-k, top-p and seed apply to
// both distributions; temperature 0 is greedy) and the stopping and
// streaming rules of model.Model.Generate, so with η = 0 and greedy decoding
// the tokens and text equal Generate's over tr, token for token (the
// kernels are batch-invariant). Results with key groups (APE) keep them:
// new rows join the plain group. Each side decodes on its Result's Backend.
//
// tr.KV and dr.KV are extended and rolled back in place: when Rapid
// returns, each holds its context followed by rows of a prefix of the
// generated tokens, bitwise what decoding those tokens one by one would
// have written — rejected drafts leave no trace.
func Rapid(ctx context.Context, target *model.Model, tr *Result, drafter *model.Model, dr *Result, opt model.GenerateOptions, ropt RapidOptions, emit func(string) error) (model.Generation, RapidStats, error) {
	var g model.Generation
	if err := ropt.normalize(); err != nil {
		return g, RapidStats{}, err
	}
	if opt.MaxTokens <= 0 {
		return g, RapidStats{}, fmt.Errorf("blend: max tokens %d must be > 0", opt.MaxTokens)
	}
	if err := opt.Sampler.Validate(); err != nil {
		return g, RapidStats{}, fmt.Errorf("blend: %w", err)
	}
	if target.Config.Vocab != drafter.Config.Vocab {
		return g, RapidStats{}, fmt.Errorf("blend: RAPID drafter has %d tokens, target %d", drafter.Config.Vocab, target.Config.Vocab)
	}
	t, err := newDecodeCtx(target, tr, "target")
	if err != nil {
		return g, RapidStats{}, err
	}
	d, err := newDecodeCtx(drafter, dr, "drafter")
	if err != nil {
		return g, RapidStats{}, err
	}
	r := &rapid{
		ctx: ctx, opt: opt, ropt: ropt, t: t, d: d,
		s:     model.NewSampler(opt.Sampler),
		out:   textOut{stops: opt.Stop, emit: emit},
		gamma: firstGamma(ropt),
		pos0:  int(model.NextPos(tr.KV)),
		vocab: target.Config.Vocab,
	}
	tRows, dRows := tr.KV.Len(), dr.KV.Len()
	start := time.Now()
	err = r.run()
	if ferr := r.out.flush(true); err == nil {
		err = ferr
	}
	g = r.g
	g.Decode = time.Since(start)
	g.Text = r.out.text.String()
	r.finishStats()
	ropt.Costs.Observe(tRows, dRows, r.st)
	return g, r.st, err
}

// Clone returns a deep copy of the fused context, its logits and grouping
// (Stats are shared), so that a decode can extend the copy.
func (r *Result) Clone() *Result {
	out := &Result{KV: r.KV.Clone(), Logits: slices.Clone(r.Logits), Backend: r.Backend, Stats: r.Stats}
	if r.Groups != nil {
		g := *r.Groups
		g.Of = slices.Clone(r.Groups.Of)
		out.Groups = &g
	}
	return out
}

// firstGamma is the first round's draft length: ropt.Gamma, except that a
// self-disabling adaptive decode starts at MinGamma — its first round
// measures whether drafting can pay, and costs least when short.
func firstGamma(ropt RapidOptions) int {
	if !ropt.KeepDrafting && !ropt.FixedGamma {
		return min(ropt.Gamma, MinGamma)
	}
	return ropt.Gamma
}

// decodeCtx is one side of RAPID: a model over its context, with the
// committed tokens its cache has not seen yet (pending) and, when none is
// pending, the logits after its last row.
type decodeCtx struct {
	m       *model.Model
	be      model.Backend // computes m's rows (the Result's; nil: the CPU)
	kv      *model.KV
	groups  *kernels.KeyGroups
	logits  []float32
	pending []int32
}

func newDecodeCtx(m *model.Model, res *Result, name string) (*decodeCtx, error) {
	if res == nil || res.KV == nil {
		return nil, fmt.Errorf("blend: RAPID %s from an empty result", name)
	}
	if len(res.Logits) != m.Config.Vocab {
		return nil, fmt.Errorf("blend: RAPID %s needs %d logits, got %d", name, m.Config.Vocab, len(res.Logits))
	}
	if res.Groups != nil {
		if err := res.Groups.Validate(res.KV.Len()); err != nil {
			return nil, fmt.Errorf("blend: RAPID %s: %w", name, err)
		}
	}
	if _, err := backendFor(m, res.Backend); err != nil {
		return nil, fmt.Errorf("blend: RAPID %s: %w", name, err)
	}
	return &decodeCtx{m: m, be: res.Backend, kv: res.KV, groups: res.Groups, logits: res.Logits}, nil
}

// forward appends tokens after the cache's last row and computes them (see
// Result.Extend).
func (c *decodeCtx) forward(tokens []int32, all bool) ([]float32, error) {
	b, err := backendFor(c.m, c.be)
	if err != nil {
		return nil, err
	}
	return extend(b, c.kv, c.groups, tokens, all)
}

// truncate rolls the cache (and its grouping) back to n rows.
func (c *decodeCtx) truncate(n int) { truncate(c.kv, c.groups, n) }

// Extend appends tokens at the positions after the context's last row (in
// the plain key group when the context has groups, as Generate's rows),
// computes them through every layer and returns the logits of every new row
// ([len(tokens) × Vocab], all) or of the last. It is one decode step for one
// token and a speculative verify for several. It computes on r.Backend (the
// CPU when nil), which must run m. On error the context is left as it was.
func (r *Result) Extend(m *model.Model, tokens []int32, all bool) ([]float32, error) {
	if len(tokens) == 0 {
		return nil, fmt.Errorf("blend: Extend with no tokens")
	}
	b, err := backendFor(m, r.Backend)
	if err != nil {
		return nil, err
	}
	return extend(b, r.KV, r.Groups, tokens, all)
}

// Truncate rolls the context (and its grouping) back to its first n rows.
func (r *Result) Truncate(n int) { truncate(r.KV, r.Groups, n) }

// extend is Result.Extend over kv and groups on backend b.
func extend(b model.Backend, kv *model.KV, groups *kernels.KeyGroups, tokens []int32, all bool) ([]float32, error) {
	m := b.Model()
	n := kv.Len()
	pos := model.Positions(int(model.NextPos(kv)), len(tokens))
	if last := int(pos[len(pos)-1]); last >= m.Config.Context {
		return nil, fmt.Errorf("blend: position %d exceeds the context length %d", last, m.Config.Context)
	}
	first := kv.Grow(tokens, pos)
	if groups != nil {
		groups.Of = append(groups.Of, make([]uint8, len(tokens))...)
	}
	sel := []int{len(tokens) - 1}
	if all {
		sel = rowRange(0, len(tokens))
	}
	logits := make([]float32, len(sel)*m.Config.Vocab)
	p, err := b.NewPass(kv, rowRange(first, kv.Len()))
	if err == nil {
		p.SetGroups(groups)
		for l := range m.Config.Layers {
			if err = p.Layer(l); err != nil {
				break
			}
		}
	}
	if err == nil {
		err = p.Logits(logits, sel)
	}
	if err != nil {
		truncate(kv, groups, n)
		return nil, fmt.Errorf("blend: forward of %d tokens: %w", len(tokens), err)
	}
	return logits, nil
}

func truncate(kv *model.KV, groups *kernels.KeyGroups, n int) {
	kv.Truncate(n)
	if groups != nil {
		groups.Of = groups.Of[:n]
	}
}

// flushPending feeds the pending tokens and keeps the logits after them.
func (c *decodeCtx) flushPending() error {
	if len(c.pending) == 0 {
		return nil
	}
	logits, err := c.forward(c.pending, false)
	if err != nil {
		return err
	}
	c.logits, c.pending = logits, c.pending[:0]
	return nil
}

// rapid is the state of one Rapid decode.
type rapid struct {
	ctx   context.Context
	opt   model.GenerateOptions
	ropt  RapidOptions
	t, d  *decodeCtx
	s     *model.Sampler
	out   textOut
	g     model.Generation
	st    RapidStats
	gamma int
	pos0  int // the target's position after its context
	vocab int

	// running acceptance: decayed counts of accepted drafts and rejections
	accW, rejW float64
	// target forward timings for the verify-cost line: Σk, Σk², Σt, Σkt, n
	sk, skk, stt, skt, sn float64
	gammaSum              int
	roundTime             time.Duration // wall time of the rounds
	roundTokens           int           // tokens the rounds committed

	// scratch: draft distributions and logits, [γ × V] each
	qbuf, zdbuf  []float32
	pbuf, wbuf   []float32
	qtbuf        []float32
	drafts, rows []int32
}

// commit appends tok to the output and reports whether decoding stops
// there, by model.Model.Generate's rules.
func (r *rapid) commit(tok int32) (bool, error) {
	r.g.Tokens = append(r.g.Tokens, tok)
	m := r.t.m
	if m.Tok.IsEOG(tok) && !r.opt.IgnoreEOS {
		r.g.Reason = model.StopEOS
		return true, nil
	}
	if r.out.add(m.Tok.Piece(tok)) {
		r.g.Reason = model.StopString
		return true, nil
	}
	if err := r.out.flush(false); err != nil {
		return true, err
	}
	if len(r.g.Tokens) >= r.opt.MaxTokens {
		r.g.Reason = model.StopMaxTokens
		return true, nil
	}
	// The token would be fed at the target position pos0 + n − 1.
	if r.pos0+len(r.g.Tokens)-1 >= m.Config.Context {
		r.g.Reason = model.StopContext
		return true, nil
	}
	return false, nil
}

// probing reports whether the next token is decoded by the target alone to
// time its step: until two steps are timed when self-disabling is on.
func (r *rapid) probing() bool {
	return !r.ropt.KeepDrafting && r.st.TargetSteps < 2
}

func (r *rapid) run() error {
	for {
		if err := r.ctx.Err(); err != nil {
			return err
		}
		var stop bool
		var err error
		if gamma := r.roundGamma(); r.st.Disabled || r.probing() || gamma < 1 {
			stop, err = r.plainStep()
		} else {
			stop, err = r.round(gamma)
		}
		if err != nil || stop {
			return err
		}
	}
}

// roundGamma is the draft length of the next round: the adaptive γ, cut so
// that no draft goes past MaxTokens (the round's last token is the
// resampled or bonus one) or past either model's context.
func (r *rapid) roundGamma() int {
	g := min(r.gamma, r.opt.MaxTokens-len(r.g.Tokens)-1)
	g = min(g, r.t.m.Config.Context-int(model.NextPos(r.t.kv))-len(r.t.pending))
	// The drafter feeds its pending tokens and γ−1 drafts.
	g = min(g, r.d.m.Config.Context-int(model.NextPos(r.d.kv))-len(r.d.pending)+1)
	return g
}

// plainStep decodes one token with the target alone, timing its step.
func (r *rapid) plainStep() (bool, error) {
	if n := len(r.t.pending); n > 0 {
		t0 := time.Now()
		if err := r.t.flushPending(); err != nil {
			return true, err
		}
		dt := time.Since(t0)
		r.observeVerify(n, dt)
		if n == 1 {
			r.st.TargetSteps++
			r.st.TargetStepTime += dt
		}
	}
	tok := r.s.Sample(r.t.logits)
	stop, err := r.commit(tok)
	if stop || err != nil {
		return stop, err
	}
	r.t.pending = append(r.t.pending, tok)
	if !r.st.Disabled {
		r.d.pending = append(r.d.pending, tok)
	}
	return false, nil
}

// round drafts gamma tokens, verifies them in one target forward and
// commits the accepted ones and one more.
func (r *rapid) round(gamma int) (bool, error) {
	v := r.vocab
	roundStart := time.Now()
	committed0 := len(r.g.Tokens)
	if cap(r.qbuf) < gamma*v {
		r.qbuf = make([]float32, gamma*v)
		r.zdbuf = make([]float32, gamma*v)
	}
	q, zd := r.qbuf[:gamma*v], r.zdbuf[:gamma*v]
	if len(r.pbuf) < v {
		r.pbuf, r.wbuf = make([]float32, v), make([]float32, v)
	}

	// Draft.
	t0 := time.Now()
	steps := 0
	if len(r.d.pending) > 0 {
		if err := r.d.flushPending(); err != nil {
			return true, err
		}
		steps++
	}
	baseD := r.d.kv.Len()
	r.drafts = slices.Grow(r.drafts[:0], gamma)[:gamma]
	drafts := r.drafts
	dl := r.d.logits
	var ctl time.Duration
	for i := range gamma {
		c0 := time.Now()
		copy(zd[i*v:(i+1)*v], dl)
		r.s.Distribution(q[i*v:(i+1)*v], dl)
		drafts[i] = r.draw(q[i*v : (i+1)*v])
		ctl += time.Since(c0)
		if i == gamma-1 {
			break
		}
		var err error
		if dl, err = r.d.forward(drafts[i:i+1], false); err != nil {
			return true, err
		}
		steps++
	}
	draftTime := time.Since(t0) - ctl
	r.st.DraftTime += draftTime
	if steps > 0 {
		r.st.DraftStep = ewma(r.st.DraftStep, draftTime/time.Duration(steps), r.st.Rounds)
	}

	// Verify: the target's pending token and the drafts in one forward.
	t1 := time.Now()
	baseT := r.t.kv.Len()
	np := len(r.t.pending)
	r.rows = append(append(r.rows[:0], r.t.pending...), drafts...)
	rows := r.rows
	zt, err := r.t.forward(rows, true)
	if err != nil {
		return true, err
	}
	dt := time.Since(t1)
	r.st.VerifyTime += dt
	r.observeVerify(len(rows), dt)
	r.t.pending = r.t.pending[:0]
	// p(i) is the target's logits before draft i (i = gamma: after the last).
	p := func(i int) []float32 {
		if i == 0 && np == 0 {
			return r.t.logits
		}
		j := np - 1 + i
		return zt[j*v : (j+1)*v]
	}

	// Accept.
	c0 := time.Now()
	defer func() { r.st.ControlTime += ctl + time.Since(c0) }()
	accepted := 0
	var next int32
	rejected := false
	for i := range gamma {
		qi := q[i*v : (i+1)*v]
		ph := r.pbuf
		r.targetDist(ph, p(i), zd[i*v:(i+1)*v])
		x := drafts[i]
		ratio := float64(ph[x]) / float64(qi[x])
		if ratio >= 1 || (ratio > 0 && r.s.Uniform() < ratio) {
			accepted++
			continue
		}
		// Rejected: draw from norm(max(0, p̂ − q)).
		res := r.wbuf
		var sum float64
		for k := range res {
			res[k] = max(0, ph[k]-qi[k])
			sum += float64(res[k])
		}
		if sum > 0 {
			for k := range res {
				res[k] = float32(float64(res[k]) / sum)
			}
			next = r.draw(res)
		} else {
			next = r.draw(ph)
		}
		rejected = true
		break
	}
	if !rejected {
		ph := r.pbuf
		r.s.Distribution(ph, p(gamma))
		next = r.draw(ph)
	}
	r.st.Rounds++
	r.st.Drafted += gamma
	r.st.Accepted += accepted
	r.gammaSum += gamma
	r.st.GammaLast = gamma
	r.accW = 0.8*r.accW + float64(accepted)
	if rejected {
		r.rejW = 0.8*r.rejW + 1
	} else {
		r.rejW *= 0.8
	}

	// Commit the accepted drafts and the next token; roll both caches back
	// to the committed tokens they were fed.
	for i := range accepted {
		stop, err := r.commit(drafts[i])
		if stop || err != nil {
			r.t.truncate(baseT + np + i + 1)
			r.d.truncate(baseD + min(i+1, gamma-1))
			return true, err
		}
	}
	r.t.truncate(baseT + np + accepted)
	r.d.truncate(baseD + min(accepted, gamma-1))
	stop, err := r.commit(next)
	if stop || err != nil {
		return true, err
	}
	r.t.pending = append(r.t.pending, next)
	if accepted == gamma {
		r.d.pending = append(r.d.pending, drafts[gamma-1])
	}
	r.d.pending = append(r.d.pending, next)
	r.roundTime += time.Since(roundStart)
	r.roundTokens += len(r.g.Tokens) - committed0
	r.adapt()
	return false, nil
}

// draw samples from distribution p (sums to ~1), taking the argmax when
// greedy.
func (r *rapid) draw(p []float32) int32 {
	if r.s.Greedy() {
		return model.Argmax(p)
	}
	return r.s.Draw(p)
}

// targetDist writes into dst the target's sampling distribution p̂ for one
// position from its logits z, after knowledge transfer from the drafter
// (logits zd) when η > 0:
//
//	ẑ = z/τ − η·M⊙(p − q_τ),  p = softmax(z/τ), q_τ = softmax(zd/τ), M = {x : q_τ(x) ≥ α·max q_τ}
//
// with τ the temperature (1 when greedy); p̂ is the sampler's distribution
// over ẑ·τ (so top-k and top-p apply to the transferred logits).
func (r *rapid) targetDist(dst, z, zd []float32) {
	if r.ropt.Eta == 0 {
		r.s.Distribution(dst, z)
		return
	}
	tau := float64(r.opt.Sampler.Temperature)
	if tau <= 0 {
		tau = 1
	}
	adj := r.wbuf
	p := softmaxTo(adj, z, tau) // adj holds p for now
	if len(r.qtbuf) < len(zd) {
		r.qtbuf = make([]float32, len(zd))
	}
	qt := softmaxTo(r.qtbuf[:len(zd)], zd, tau)
	qmax := float32(0)
	for _, x := range qt {
		qmax = max(qmax, x)
	}
	thr := float32(r.ropt.Alpha) * qmax
	scale := float32(tau * r.ropt.Eta)
	for k := range adj {
		delta := float32(0)
		if qt[k] >= thr {
			delta = scale * (p[k] - qt[k])
		}
		adj[k] = z[k] - delta
	}
	r.s.Distribution(dst, adj)
}

// softmaxTo writes softmax(z/tau) into dst and returns dst.
func softmaxTo(dst, z []float32, tau float64) []float32 {
	mx := float64(z[model.Argmax(z)])
	var sum float64
	for i, x := range z {
		e := math.Exp((float64(x) - mx) / tau)
		dst[i] = float32(e)
		sum += e
	}
	for i := range dst {
		dst[i] = float32(float64(dst[i]) / sum)
	}
	return dst
}

// ewma blends a new observation into a running mean (the first observation
// sets it).
func ewma(old, obs time.Duration, n int) time.Duration {
	if n == 0 || old == 0 {
		return obs
	}
	return (old*3 + obs) / 4
}

// observeVerify adds a target forward of k rows taking dt to the verify
// cost fit.
func (r *rapid) observeVerify(k int, dt time.Duration) {
	x, y := float64(k), float64(dt)
	r.sk += x
	r.skk += x * x
	r.stt += y
	r.skt += x * y
	r.sn++
}

// verifyLine fits VerifyFixed + VerifyPerRow·rows to the observed target
// forwards; with a single row count observed it assumes no fixed cost.
func (r *rapid) verifyLine() (fixed, perRow float64) {
	if r.sn == 0 {
		return 0, 0
	}
	den := r.sn*r.skk - r.sk*r.sk
	if den <= 1e-9*r.sn*r.skk {
		return 0, r.stt / r.sk
	}
	perRow = (r.sn*r.skt - r.sk*r.stt) / den
	fixed = (r.stt - perRow*r.sk) / r.sn
	if perRow < 0 {
		return 0, r.stt / r.sk
	}
	if fixed < 0 {
		return 0, r.skt / r.skk
	}
	return fixed, perRow
}

// acceptEstimate is the running per-token acceptance rate: decayed accepted
// drafts over decayed accepted drafts and rejections (a round is a run of
// acceptances ended by a rejection or by γ), with a uniform prior.
func (r *rapid) acceptEstimate() float64 {
	return (r.accW + 1) / (r.accW + r.rejW + 2)
}

// measured fills the stats' cost fields from the running measurements.
func (r *rapid) measured() {
	fixed, perRow := r.verifyLine()
	r.st.VerifyFixed, r.st.VerifyPerRow = time.Duration(fixed), time.Duration(perRow)
	if r.st.TargetSteps > 0 {
		r.st.TargetStep = r.st.TargetStepTime / time.Duration(r.st.TargetSteps)
	} else {
		r.st.TargetStep = time.Duration(fixed + perRow)
	}
}

// adapt picks the next round's γ from the running acceptance and the
// measured costs, and switches RAPID off when no γ would pay.
func (r *rapid) adapt() {
	r.measured()
	a := r.acceptEstimate()
	if !r.ropt.FixedGamma {
		if _, g := r.st.Bound(a, MinGamma, MaxGamma); g > 0 {
			r.gamma = g
		}
	}
	if r.ropt.KeepDrafting || r.st.Disabled {
		return
	}
	// From the first round on the costs are known: judge at the running
	// acceptance (with its uniform prior, 0.75 after one round of two
	// accepted drafts) whether any γ would pay; the rounds so far must also
	// have been slower than the target alone. (Judging the first rounds at
	// acceptance 1 instead kept an 8K-context decode drafting for seven
	// rounds at 0.78× of the target alone; docs/RAPID.md.)
	best, g := r.st.Bound(a, MinGamma, MaxGamma)
	measured := 0.0
	if r.roundTime > 0 {
		measured = float64(r.roundTokens) * float64(r.st.TargetStep) / float64(r.roundTime)
	}
	if best > 0 && best < 1 && measured < 1 {
		r.st.Disabled = true
		r.st.DisabledReason = fmt.Sprintf(
			"drafting does not pay: measured %.2f× and at best %.2f× (γ=%d) with acceptance %.2f, draft step %v, target step %v, verify %v + %v/row",
			measured, best, g, a, r.st.DraftStep.Round(time.Microsecond), r.st.TargetStep.Round(time.Microsecond),
			r.st.VerifyFixed.Round(time.Microsecond), r.st.VerifyPerRow.Round(time.Microsecond))
		// The target decodes alone from here; the drafter is dropped.
		r.d.pending = r.d.pending[:0]
	}
}

func (r *rapid) finishStats() {
	r.measured()
	if r.st.Rounds > 0 {
		r.st.GammaMean = float64(r.gammaSum) / float64(r.st.Rounds)
	}
}

// CheckDrafter reports whether drafter can draft for target in Rapid: the
// same vocabulary and the same token ids for text (Rapid feeds the drafter
// the target's tokens, and the prompt's segments are tokenized once, by the
// target's tokenizer).
func CheckDrafter(target, drafter *model.Model) error {
	if drafter.Config.Vocab != target.Config.Vocab {
		return fmt.Errorf("blend: the drafter has %d tokens, the target %d: it must share the target's tokenizer", drafter.Config.Vocab, target.Config.Vocab)
	}
	const probe = "Question: Where does the river rise? Answer in a few words.\n\n<|im_end|>"
	if !slices.Equal(drafter.Tok.Encode(probe, true), target.Tok.Encode(probe, true)) {
		return fmt.Errorf("blend: the drafter tokenizes text differently from the target: it must share the target's tokenizer")
	}
	return nil
}

// OpenDrafter loads the GGUF at path as a RAPID drafter for target: it must
// share the target's tokenizer (CheckDrafter), it computes on device
// (model.Model.OpenBackend), and on the CPU it shares the target's worker
// pool (the two take turns). The caller closes the backend, then the model.
func OpenDrafter(target *model.Model, path, device string) (*model.Model, model.Backend, error) {
	dm, err := model.Load(path, model.Options{Pool: target.Pool()})
	if err != nil {
		return nil, nil, err
	}
	if err := CheckDrafter(target, dm); err != nil {
		dm.Close()
		return nil, nil, err
	}
	dbe, err := dm.OpenBackend(device)
	if err != nil {
		dm.Close()
		return nil, nil, fmt.Errorf("blend: drafter on %s: %w", device, err)
	}
	return dm, dbe, nil
}
