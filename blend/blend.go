package blend

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/blendrag/blendrag/kernels"
	"github.com/blendrag/blendrag/model"
)

// Mode is how Prefill builds the context from the segments.
type Mode string

// The fusion modes (see the package documentation and DESIGN.md "Fusing").
const (
	ModeFull       Mode = "full"
	ModePrefix     Mode = "prefix"
	ModeReuse      Mode = "reuse"
	ModeCacheBlend Mode = "cacheblend"
	ModeAPE        Mode = "ape"
)

// Modes lists every mode, reference first.
var Modes = []Mode{ModeFull, ModePrefix, ModeReuse, ModeCacheBlend, ModeAPE}

// ParseMode returns the mode named s, or an error naming the valid ones.
func ParseMode(s string) (Mode, error) {
	if slices.Contains(Modes, Mode(s)) {
		return Mode(s), nil
	}
	return "", fmt.Errorf("blend: unknown mode %q (want one of %v)", s, Modes)
}

// The defaults of Options.
const (
	DefaultRatio = 0.15 // CacheBlend recompute ratio
	DefaultT     = 0.9  // APE attention temperature
	DefaultS     = 0.9  // APE LSE scale
)

// Options choose the mode and its parameters.
type Options struct {
	Mode Mode
	// Ratio is CacheBlend's recompute ratio r, 0 ≤ r ≤ 1, used as given
	// (r = 0 is reuse); DefaultOptions sets DefaultRatio.
	Ratio float64
	// Gradual turns on CacheBlend's gradual filtering: layer 1 selects
	// min(1, 2r) of the chunk rows, layer 2 narrows them to r by its own
	// deviation.
	Gradual bool
	// CheckLayer is the layer at which CacheBlend selects its rows (0 means
	// 1, DESIGN.md's check layer): layers 1 … CheckLayer−1 recompute every
	// row, as full does, before the selection. A CheckLayer set must be
	// below the model's layer count.
	CheckLayer int
	// T and S are APE's temperature and LSE scale; 0 means the default 0.9.
	T, S float64
	// Backend is the device Prefill computes on (model.Model.OpenBackend;
	// it must run Prefill's model); nil means the model's own CPU forward
	// pass. The Result keeps it, and Generate, Result.Extend and Rapid
	// decode on it.
	Backend model.Backend
	// ChunkIDs, when set, names each chunk of the Segments (one id per
	// chunk, in prompt order) by what determines its cached KV — the same
	// id must always mean the same KV for the Backend's model. A Backend
	// with a device tier of chunk KV (model.ChunkTier) then assembles the
	// fused context's chunk rows from it instead of uploading them.
	ChunkIDs []string
}

// DefaultOptions returns the options of mode with the default parameters.
func DefaultOptions(mode Mode) Options {
	return Options{Mode: mode, Ratio: DefaultRatio, T: DefaultT, S: DefaultS}
}

func (o *Options) normalize() error {
	if _, err := ParseMode(string(o.Mode)); err != nil {
		return err
	}
	if !(o.Ratio >= 0 && o.Ratio <= 1) {
		return fmt.Errorf("blend: recompute ratio %v outside [0, 1]", o.Ratio)
	}
	if o.CheckLayer < 0 {
		return fmt.Errorf("blend: CacheBlend check layer %d is negative", o.CheckLayer)
	}
	if o.T == 0 {
		o.T = DefaultT
	}
	if o.S == 0 {
		o.S = DefaultS
	}
	if !(o.T > 0) || math.IsInf(o.T, 0) || !(o.S > 0) || math.IsInf(o.S, 0) {
		return fmt.Errorf("blend: APE temperature %v and scale %v must be finite and > 0", o.T, o.S)
	}
	return nil
}

// Segments is a prompt as segments (DESIGN.md "The prompt as segments"),
// each tokenized on its own: the shared prefix P, the chunk segments
// ("\n\n" + chunk text) in prompt order, and the question Q.
type Segments struct {
	Prefix   []int32
	Chunks   [][]int32
	Question []int32
}

// Tokens returns the concatenated token ids of every segment — what full
// prefills.
func (s Segments) Tokens() []int32 {
	out := slices.Clone(s.Prefix)
	for _, c := range s.Chunks {
		out = append(out, c...)
	}
	return append(out, s.Question...)
}

func (s Segments) validate() error {
	if len(s.Question) == 0 {
		return fmt.Errorf("blend: the question segment is empty")
	}
	for i, c := range s.Chunks {
		if len(c) == 0 {
			return fmt.Errorf("blend: chunk segment %d is empty", i)
		}
	}
	return nil
}

// Stats describe one Prefill.
type Stats struct {
	// Rows is the number of rows of the fused context (P, chunks and Q).
	Rows int
	// Computed is, per layer, the number of rows whose attention and MLP
	// were computed.
	Computed []int
	// Selected holds, for CacheBlend, the context rows (indices into
	// Result.KV) of the chunk rows recomputed at the last layer.
	Selected []int
	// Load is the time spent waiting on the Source; Compute the time spent
	// computing, Place included.
	Load, Compute time.Duration
	// Place is the part of Compute spent writing the loaded chunks' KV
	// into the context: copying, rotating keys to the chunks' places, and
	// placing them in a device tier.
	Place time.Duration
	// DeviceHits is the number of chunks whose KV the backend's device
	// tier held (Options.ChunkIDs, model.ChunkTier): copied within the
	// device rather than from host memory.
	DeviceHits int
}

// LoadPerLayer is the mean time waited on the source per layer — the
// loadPerLayer estimate AutoRatio takes.
func (s Stats) LoadPerLayer() time.Duration {
	if len(s.Computed) == 0 {
		return 0
	}
	return s.Load / time.Duration(len(s.Computed))
}

// ComputePerRow is the compute time per row-layer (one row through one
// layer) — the recomputePerRow estimate AutoRatio takes. It is 0 when no
// row was computed.
func (s Stats) ComputePerRow() time.Duration {
	n := 0
	for _, c := range s.Computed {
		n += c
	}
	if n == 0 {
		return 0
	}
	return s.Compute / time.Duration(n)
}

// Result is a fused context ready for decoding.
type Result struct {
	KV     *model.KV          // the fused context (P, chunks, Q)
	Logits []float32          // next-token logits after the last question row
	Groups *kernels.KeyGroups // APE's key grouping, covering KV's rows (nil for other modes)
	// Backend is the device that computed the context and that Generate,
	// Extend and Rapid continue on (Options.Backend); nil: the CPU.
	Backend model.Backend
	Stats   Stats
}

// Prefill builds the fused context for seg in opt.Mode and returns it with
// the logits of the last question row. prefix is P's KV (EncodePrefix; it is
// not modified and must hold seg.Prefix). src supplies the chunks' cached KV
// for reuse, cacheblend and ape and is ignored by full and prefix, which
// compute the chunks. Layer l's chunk KV is requested from src right before
// layer l is computed, so a streaming source overlaps reading layer l+1 with
// computing layer l. ctx is checked between layers.
//
// Positions: full, prefix, reuse and cacheblend place the chunks one after
// another after P and Q after them; ape places every chunk at |P|.. (position
// reuse) and Q at |P| + max|C_i|.
func Prefill(ctx context.Context, m *model.Model, seg Segments, prefix *model.KV, src Source, opt Options) (*Result, error) {
	return prefill(ctx, m, seg, prefix, src, opt, nil)
}

// tracer receives "load" right before a layer is requested from the source
// and "compute" right before the layer is computed (tests check the order).
type tracer func(event string, layer int)

func prefill(ctx context.Context, m *model.Model, seg Segments, prefix *model.KV, src Source, opt Options, trace tracer) (*Result, error) {
	if err := opt.normalize(); err != nil {
		return nil, err
	}
	if err := seg.validate(); err != nil {
		return nil, err
	}
	if err := checkPrefixKV(m, prefix, seg.Prefix); err != nil {
		return nil, err
	}
	if trace == nil {
		trace = func(string, int) {}
	}
	b, err := backendFor(m, opt.Backend)
	if err != nil {
		return nil, err
	}
	var res *Result
	switch opt.Mode {
	case ModeFull:
		res, err = prefillAll(ctx, b, model.NewKV(m.Config), seg.Tokens())
	case ModePrefix:
		res, err = prefillAll(ctx, b, prefix.Clone(), seg.Tokens()[len(seg.Prefix):])
	default:
		res, err = fuse(ctx, b, seg, prefix, src, opt, trace)
	}
	if err != nil {
		return nil, err
	}
	res.Backend = opt.Backend
	return res, nil
}

// fuse builds the context of reuse, cacheblend and ape on backend b.
func fuse(ctx context.Context, b model.Backend, seg Segments, prefix *model.KV, src Source, opt Options, trace tracer) (*Result, error) {
	if src == nil {
		return nil, fmt.Errorf("blend: mode %s needs a source of chunk KV", opt.Mode)
	}
	f, err := newFuser(b, seg, prefix, src, opt, trace)
	if err != nil {
		return nil, err
	}
	if opt.Mode == ModeCacheBlend {
		err = f.cacheBlend(ctx)
	} else {
		err = f.questionOnly(ctx)
	}
	if err != nil {
		return nil, err
	}
	f.res.Stats.Rows = f.kv.Len()
	return &f.res, nil
}

// prefillAll prefills tokens after the rows of kv (which it extends) on b.
func prefillAll(ctx context.Context, b model.Backend, kv *model.KV, tokens []int32) (*Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	start := time.Now()
	logits, err := b.Forward(kv, tokens, model.Positions(kv.Len(), len(tokens)), false)
	if err != nil {
		return nil, fmt.Errorf("blend: prefill of %d tokens: %w", len(tokens), err)
	}
	st := Stats{Rows: kv.Len(), Compute: time.Since(start), Computed: make([]int, b.Model().Config.Layers)}
	for l := range st.Computed {
		st.Computed[l] = len(tokens)
	}
	return &Result{KV: kv, Logits: logits, Stats: st}, nil
}

// fuser holds the fused context under construction for reuse, cacheblend
// and ape: P's rows, then each chunk's rows (tokens and positions set, K/V
// filled layer by layer from the source), then Q's rows.
type fuser struct {
	m     *model.Model
	b     model.Backend // computes m's layers
	src   Source
	opt   Options
	trace tracer
	kv    *model.KV
	res   Result

	chunkStart []int // first context row of each chunk; chunkStart[n] = first Q row
	shifts     []shift
	rope       *kernels.RoPETable
	tier       model.ChunkTier // the backend's device tier, when ChunkIDs name the chunks
}

// shift is the RoPE rotation that moves a chunk from its cached positions
// to its place by delta positions (nil cos when the chunk does not move).
type shift struct {
	cos, sin []float32
	delta    int
}

func newFuser(b model.Backend, seg Segments, prefix *model.KV, src Source, opt Options, trace tracer) (*fuser, error) {
	m := b.Model()
	c := m.Config
	rope, err := kernels.NewRoPETable(c.HeadDim, c.RopeBase, c.RopeNeox, nil)
	if err != nil {
		return nil, fmt.Errorf("blend: %w", err)
	}
	if opt.ChunkIDs != nil && len(opt.ChunkIDs) != len(seg.Chunks) {
		return nil, fmt.Errorf("blend: %d chunk ids for %d chunks", len(opt.ChunkIDs), len(seg.Chunks))
	}
	f := &fuser{m: m, b: b, src: src, opt: opt, trace: trace, kv: prefix.Clone(), rope: rope}
	if t, ok := b.(model.ChunkTier); ok && opt.ChunkIDs != nil {
		f.tier = t
	}
	np := prefix.Len()
	next, longest := np, 0
	for _, ch := range seg.Chunks {
		at := next
		if opt.Mode == ModeAPE {
			at = np
		}
		var sh shift
		if at != np {
			sh = shift{make([]float32, c.HeadDim/2), make([]float32, c.HeadDim/2), at - np}
			rope.CosSin(at-np, sh.cos, sh.sin)
		}
		f.shifts = append(f.shifts, sh)
		f.chunkStart = append(f.chunkStart, f.kv.Grow(ch, model.Positions(at, len(ch))))
		next += len(ch)
		longest = max(longest, len(ch))
	}
	qAt := next
	if opt.Mode == ModeAPE {
		qAt = np + longest
	}
	if qAt+len(seg.Question) > c.Context {
		return nil, fmt.Errorf("blend: the fused prompt needs %d positions, the model has %d", qAt+len(seg.Question), c.Context)
	}
	f.chunkStart = append(f.chunkStart, f.kv.Grow(seg.Question, model.Positions(qAt, len(seg.Question))))
	if opt.Mode == ModeAPE {
		g := apeGroups(f.kv.Len(), f.chunkStart[0], f.qStart(), opt.T, opt.S)
		f.res.Groups = g
	}
	f.res.KV = f.kv
	f.res.Stats.Computed = make([]int, c.Layers)
	return f, nil
}

// apeGroups returns APE's key grouping of a context of n rows whose chunk
// rows are [lo, hi): chunk rows form the context group, with temperature T
// and LSE scale S·T; P, Q and generated rows form group 0 (temperature 1,
// LSE scale 1). Attention then merges the groups with weights
// softmax([S·T·LSE_c, LSE_o]) as DESIGN.md states.
func apeGroups(n, lo, hi int, t, s float64) *kernels.KeyGroups {
	g := &kernels.KeyGroups{
		Of:       make([]uint8, n),
		Temp:     []float32{1, float32(t)},
		LSEScale: []float32{1, float32(s * t)},
	}
	for r := lo; r < hi; r++ {
		g.Of[r] = 1
	}
	return g
}

// qStart is the context row of the first question row.
func (f *fuser) qStart() int { return f.chunkStart[len(f.chunkStart)-1] }

// load requests layer l from the source and writes every chunk's cached keys
// (rotated to the chunk's place) and values into the context.
func (f *fuser) load(l int) error {
	f.trace("load", l)
	t0 := time.Now()
	k, v, err := f.src.LoadLayer(l)
	f.res.Stats.Load += time.Since(t0)
	if err != nil {
		return fmt.Errorf("blend: loading layer %d of chunk KV: %w", l, err)
	}
	n := len(f.chunkStart) - 1
	if len(k) != n || len(v) != n {
		return fmt.Errorf("blend: source gave %d keys and %d values at layer %d for %d chunks", len(k), len(v), l, n)
	}
	t1 := time.Now()
	d := f.kv.KVDim
	for i := 0; i < n; i++ {
		lo, hi := f.chunkStart[i]*d, f.chunkStart[i+1]*d
		if len(k[i]) != hi-lo || len(v[i]) != hi-lo {
			return fmt.Errorf("blend: chunk %d at layer %d has %d keys and %d values, want %d rows × %d", i, l, len(k[i]), len(v[i]), (hi-lo)/d, d)
		}
	}
	f.place(l, k, v)
	for i := 0; i < n; i++ {
		f.kv.ChangedLayer(l, f.chunkStart[i], f.chunkStart[i+1])
		if f.tier != nil {
			hit, err := f.tier.PlaceChunk(f.kv, l, f.chunkStart[i], f.opt.ChunkIDs[i], k[i], v[i], f.shifts[i].delta)
			if err != nil {
				return fmt.Errorf("blend: placing chunk %d on the device: %w", i, err)
			}
			if hit && l == 0 {
				f.res.Stats.DeviceHits++
			}
		}
	}
	f.res.Stats.Place += time.Since(t1)
	f.res.Stats.Compute += time.Since(t1)
	return nil
}

// place copies every chunk's layer-l keys and values (k[i], v[i]: whole
// rows, checked by load) into the context's rows of that chunk and rotates
// the keys of moved chunks to their place, in parallel over blocks of rows
// on the model's worker pool (which is idle between layers).
func (f *fuser) place(l int, k, v [][]float32) {
	d, heads := f.kv.KVDim, f.m.Config.KVHeads
	first, end := f.chunkStart[0], f.chunkStart[len(f.chunkStart)-1]
	const block = 64 // rows per piece of work
	f.m.Pool().Run((end-first+block-1)/block, func(b0, b1 int) {
		lo, hi := first+b0*block, min(first+b1*block, end)
		for i := range k {
			cs, ce := f.chunkStart[i], f.chunkStart[i+1]
			a, b := max(lo, cs), min(hi, ce)
			if a >= b {
				continue
			}
			dstK := f.kv.K[l][a*d : b*d]
			copy(dstK, k[i][(a-cs)*d:(b-cs)*d])
			copy(f.kv.V[l][a*d:b*d], v[i][(a-cs)*d:(b-cs)*d])
			if sh := f.shifts[i]; sh.cos != nil {
				for r := 0; r < len(dstK); r += d {
					f.rope.Rotate(dstK[r:r+d], heads, sh.cos, sh.sin)
				}
			}
		}
	})
}

// questionOnly computes only the question rows over the loaded chunk KV
// (reuse and ape).
func (f *fuser) questionOnly(ctx context.Context) error {
	p, err := f.b.NewPass(f.kv, rowRange(f.qStart(), f.kv.Len()))
	if err != nil {
		return fmt.Errorf("blend: %w", err)
	}
	p.SetGroups(f.res.Groups)
	return f.run(ctx, p, p.Layer)
}

// run computes every layer of p with layer, each right after loading that
// layer's chunk KV, then the logits of p's last row.
func (f *fuser) run(ctx context.Context, p model.LayerPass, layer func(l int) error) error {
	for l := range f.m.Config.Layers {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := f.load(l); err != nil {
			return err
		}
		f.trace("compute", l)
		t0 := time.Now()
		if err := layer(l); err != nil {
			return fmt.Errorf("blend: layer %d: %w", l, err)
		}
		f.res.Stats.Computed[l] = p.N()
		f.res.Stats.Compute += time.Since(t0)
	}
	return f.logits(p)
}

// logits computes the logits of p's last row into the result.
func (f *fuser) logits(p model.LayerPass) error {
	t0 := time.Now()
	f.res.Logits = make([]float32, f.m.Config.Vocab)
	if err := p.Logits(f.res.Logits, []int{p.N() - 1}); err != nil {
		return fmt.Errorf("blend: logits: %w", err)
	}
	f.res.Stats.Compute += time.Since(t0)
	return nil
}

// cacheBlend runs DESIGN.md's CacheBlend variant over the chunk and question
// rows. Layer 0 keeps the cached K/V of chunk rows (they depend on the token
// and position only) and computes every row's hidden state. Layers up to the
// check layer c (Options.CheckLayer, default 1) compute fresh K/V for all
// rows; layer c selects the ⌈r·N⌉ chunk rows whose values deviate most from
// the cache, plus every question row; from then on only selected rows are
// written and computed, each attending by position to the context as it
// stands (fresh K/V for selected rows, cache for the others).
func (f *fuser) cacheBlend(ctx context.Context) error {
	p, err := f.b.NewPass(f.kv, rowRange(f.chunkStart[0], f.kv.Len()))
	if err != nil {
		return fmt.Errorf("blend: %w", err)
	}
	nChunk := f.qStart() - f.chunkStart[0]
	r, c := f.opt.Ratio, max(f.opt.CheckLayer, 1)
	if f.opt.CheckLayer > 0 && c >= f.m.Config.Layers {
		// (The default check layer of a one-layer model selects nothing:
		// that model is reuse plus its question rows.)
		return fmt.Errorf("blend: CacheBlend check layer %d: the model has %d layers", c, f.m.Config.Layers)
	}
	err = f.run(ctx, p, func(l int) error {
		if err := p.QKV(l); err != nil {
			return err
		}
		switch {
		case l == 0:
			err = p.WriteKV(l, f.questionIndices(p))
		case l == c || (l == c+1 && f.opt.Gradual):
			frac := r
			if l == c && f.opt.Gradual {
				frac = min(1, 2*r)
			}
			sel := f.selectRows(p, l, ceilRows(frac, nChunk))
			if err = p.WriteKV(l, sel); err == nil {
				err = p.Keep(sel)
			}
		default:
			err = p.WriteKV(l, nil)
		}
		if err != nil {
			return err
		}
		return p.AttendMLP(l)
	})
	if err != nil {
		return err
	}
	for _, row := range p.Rows() {
		if row < f.qStart() {
			f.res.Stats.Selected = append(f.res.Stats.Selected, row)
		}
	}
	return nil
}

// ceilRows is ⌈frac·n⌉, tolerant of rounding in frac·n.
func ceilRows(frac float64, n int) int {
	return min(n, int(math.Ceil(frac*float64(n)-1e-9)))
}

// questionIndices returns the indices into p.Rows() of the question rows.
func (f *fuser) questionIndices(p model.LayerPass) []int {
	var idx []int
	for i, row := range p.Rows() {
		if row >= f.qStart() {
			idx = append(idx, i)
		}
	}
	return idx
}

// selectRows returns, ascending, the indices into p.Rows() of the k chunk rows
// whose fresh values at layer l deviate most from the context's values
// (d_j = ‖V_new[j] − V_old[j]‖², ties to the earlier row) and of every
// question row.
func (f *fuser) selectRows(p model.LayerPass, l, k int) []int {
	d := f.kv.KVDim
	type dev struct {
		i int
		d float64
	}
	var devs []dev
	freshV := p.FreshV()
	for i, row := range p.Rows() {
		if row >= f.qStart() {
			break
		}
		fresh, old := freshV[i*d:(i+1)*d], f.kv.V[l][row*d:(row+1)*d]
		var s float64
		for j := range fresh {
			x := float64(fresh[j] - old[j])
			s += x * x
		}
		devs = append(devs, dev{i, s})
	}
	slices.SortStableFunc(devs, func(a, b dev) int { return cmp.Compare(b.d, a.d) })
	sel := make([]int, 0, k+p.N()-len(devs))
	for _, x := range devs[:min(k, len(devs))] {
		sel = append(sel, x.i)
	}
	slices.Sort(sel)
	return append(sel, f.questionIndices(p)...)
}

// rowRange returns lo, lo+1, …, hi−1.
func rowRange(lo, hi int) []int {
	rows := make([]int, hi-lo)
	for i := range rows {
		rows[i] = lo + i
	}
	return rows
}
