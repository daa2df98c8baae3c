package kernels

import (
	"fmt"
	"math"
	"unsafe"
)

// attnTile is the number of keys scored together before the running softmax
// state is rescaled. Tiles always start at key index 0 and advance by
// attnTile, so a query's reduction order depends only on the keys, never on
// which other queries are computed in the same call (batch invariance).
const attnTile = 32

// maxKeyGroups bounds the number of key groups an attention call may use.
const maxKeyGroups = 8

// KeyGroups partitions the keys of an attention call into blocks that are
// normalised separately and then merged, as APE (Adaptive Parallel Encoding)
// does. Each group g has a temperature Temp[g] (scores are scaled by
// 1/(Temp[g]·√d) instead of 1/√d) and an LSE scale LSEScale[g]. With O_g and
// LSE_g the softmax output and log-sum-exp of group g, the result is
// Σ_g w_g·O_g with w = softmax_g(LSEScale[g]·LSE_g).
//
// With every Temp and LSEScale equal to 1 the result is plain softmax
// attention over all keys (up to rounding), however the keys are grouped.
type KeyGroups struct {
	Of       []uint8   // group of each key row; len must equal the number of keys
	Temp     []float32 // per-group temperature T_g > 0
	LSEScale []float32 // per-group LSE scale
}

// Validate checks that g describes nKeys keys and at most maxKeyGroups groups.
func (g *KeyGroups) Validate(nKeys int) error {
	if g == nil {
		return nil
	}
	if len(g.Of) != nKeys {
		return fmt.Errorf("kernels: key groups cover %d keys, attention has %d", len(g.Of), nKeys)
	}
	n := len(g.Temp)
	if n == 0 || n > maxKeyGroups || len(g.LSEScale) != n {
		return fmt.Errorf("kernels: %d temperatures and %d LSE scales (need 1..%d of each, equal counts)", len(g.Temp), len(g.LSEScale), maxKeyGroups)
	}
	for i, t := range g.Temp {
		if !(t > 0) {
			return fmt.Errorf("kernels: key group %d temperature %v must be > 0", i, t)
		}
	}
	for i, gi := range g.Of {
		if int(gi) >= n {
			return fmt.Errorf("kernels: key %d is in group %d, only %d groups defined", i, gi, n)
		}
	}
	return nil
}

// AttnShape describes the head layout of grouped-query attention.
type AttnShape struct {
	Heads   int // query heads
	KVHeads int // key/value heads; Heads must be a multiple of KVHeads
	HeadDim int
}

// KVDim is the width of one key or value row: KVHeads·HeadDim.
func (s AttnShape) KVDim() int { return s.KVHeads * s.HeadDim }

// QDim is the width of one query or output row: Heads·HeadDim.
func (s AttnShape) QDim() int { return s.Heads * s.HeadDim }

// AttnBlockKeys is the number of keys (a multiple of the tile) whose
// softmax state attention computes on its own, from nothing, before merging
// it into the running total, blocks in key order. A query's result thus
// depends only on its keys, and a long context's blocks may be computed by
// different workers (AttendBlock) and merged afterwards (AttendMerge) with
// bitwise the result of one AttendHeads call.
const AttnBlockKeys = 8 * attnTile

// AttnState is the softmax state of the query heads of one KV head: the
// running maximum, sum and unnormalised output per (head, key group). It
// holds one block of keys after AttendBlock. Its zero value is ready to use.
type AttnState struct {
	groups, d int       // key groups per head, head dimension
	m, l      []float64 // [group heads × groups]
	acc       []float32 // [group heads × groups × d]
}

// reset sizes st for g heads of dimension d and groups key groups, and
// empties heads [h0, h1).
func (st *AttnState) reset(g, groups, d, h0, h1 int) {
	st.groups, st.d = groups, d
	n := g * groups
	if cap(st.m) < n {
		st.m = make([]float64, n)
		st.l = make([]float64, n)
	}
	if cap(st.acc) < n*d {
		st.acc = make([]float32, n*d)
	}
	st.m, st.l, st.acc = st.m[:n], st.l[:n], st.acc[:n*d]
	for i := st.at(h0, 0); i < st.at(h1, 0); i++ {
		st.m[i] = math.Inf(-1)
		st.l[i] = 0
	}
	clear(st.acc[st.at(h0, 0)*d : st.at(h1, 0)*d])
}

// at is the index of (head h, key group grp) in m and l.
func (st *AttnState) at(h, grp int) int { return h*st.groups + grp }

// out is the unnormalised output of state i.
func (st *AttnState) out(i int) []float32 { return st.acc[i*st.d : (i+1)*st.d] }

// merge adds block state b into the running total st for heads [h0, h1)
// (both reset with the same groups and dimension): both move to the larger
// maximum M, so l = l_st·e^(m_st−M) + l_b·e^(m_b−M), and likewise the
// outputs. A state that saw no key (l = 0) changes nothing, and merging
// into an empty state copies b exactly.
func (st *AttnState) merge(b *AttnState, h0, h1 int) {
	for i := st.at(h0, 0); i < st.at(h1, 0); i++ {
		if b.l[i] == 0 {
			continue
		}
		acc, bacc := st.out(i), b.out(i)
		if st.l[i] == 0 {
			st.m[i], st.l[i] = b.m[i], b.l[i]
			copy(acc, bacc)
			continue
		}
		mNew := max(st.m[i], b.m[i])
		fs, fb := math.Exp(st.m[i]-mNew), math.Exp(b.m[i]-mNew)
		st.m[i], st.l[i] = mNew, st.l[i]*fs+b.l[i]*fb
		ffs, ffb := float32(fs), float32(fb)
		for j := range acc {
			acc[j] = acc[j]*ffs + bacc[j]*ffb
		}
	}
}

// AttnScratch is the per-worker scratch space of Attend. Its zero value is
// ready to use; buffers grow on first use and are then reused.
type AttnScratch struct {
	scores []float32 // [group heads × attnTile]
	p      []float32 // [attnTile] softmax numerators (assembly path)
	pg     []float32 // [attnTile] one key group's numerators (assembly path)
	block  AttnState // the block being computed
	total  AttnState // the merged blocks
}

func (s *AttnScratch) reserve(g int) {
	if cap(s.scores) < g*attnTile {
		s.scores = make([]float32, g*attnTile)
	}
	if cap(s.p) < attnTile {
		s.p = make([]float32, attnTile)
		s.pg = make([]float32, attnTile)
	}
	s.scores = s.scores[:g*attnTile]
}

// Attend computes causal attention for one query row and one KV head: the
// Heads/KVHeads query heads that share KV head kvh.
//
//	q      [QDim]            the query row (post-RoPE)
//	out    [QDim]            written only at the heads that share kvh
//	keys   [nKeys × KVDim]   post-RoPE keys; vals the same shape
//	keyPos [nKeys]           absolute position of each key
//
// A key is visible when keyPos[j] ≤ qPos. Keys are scanned in tiles with an
// online softmax, so memory does not grow with the context. groups may be nil
// (one group, temperature 1). A head that sees no key gets a zero output.
func Attend(out, q, keys, vals []float32, keyPos []int32, qPos int32, sh AttnShape, kvh int, groups *KeyGroups, s *AttnScratch) {
	AttendHeads(out, q, keys, vals, keyPos, qPos, sh, kvh, 0, sh.Heads/sh.KVHeads, groups, s)
}

// AttendHeads is Attend for query heads [h0, h1) of the Heads/KVHeads heads
// that share KV head kvh (head kvh·Heads/KVHeads + h of q for h0 ≤ h < h1):
// each head's output is bitwise what Attend writes for it, so the heads of
// one KV head may be split over several calls (and workers) freely. Only
// those heads of out are written; 0 ≤ h0 ≤ h1 ≤ Heads/KVHeads.
func AttendHeads(out, q, keys, vals []float32, keyPos []int32, qPos int32, sh AttnShape, kvh, h0, h1 int, groups *KeyGroups, s *AttnScratch) {
	g, d := sh.Heads/sh.KVHeads, sh.HeadDim
	s.total.reset(g, numGroups(groups), d, h0, h1)
	for b := 0; b*AttnBlockKeys < len(keyPos); b++ {
		AttendBlock(&s.block, q, keys, vals, keyPos, qPos, sh, kvh, h0, h1, b, groups, s)
		s.total.merge(&s.block, h0, h1)
	}
	s.total.write(out, sh, kvh, h0, h1, groups)
}

// AttnBlocks returns the number of key blocks of nKeys keys.
func AttnBlocks(nKeys int) int { return (nKeys + AttnBlockKeys - 1) / AttnBlockKeys }

// AttendMerge merges the block states blocks (block b of the keys at index
// b, as AttendBlock left them for heads [h0, h1)) and writes those heads'
// outputs: bitwise what AttendHeads writes for the same keys.
func AttendMerge(out []float32, blocks []AttnState, sh AttnShape, kvh, h0, h1 int, groups *KeyGroups, s *AttnScratch) {
	g, d := sh.Heads/sh.KVHeads, sh.HeadDim
	s.total.reset(g, numGroups(groups), d, h0, h1)
	for b := range blocks {
		s.total.merge(&blocks[b], h0, h1)
	}
	s.total.write(out, sh, kvh, h0, h1, groups)
}

func numGroups(groups *KeyGroups) int {
	if groups == nil {
		return 1
	}
	return len(groups.Temp)
}

// AttendBlock computes the softmax state st of query heads [h0, h1) of KV
// head kvh (as AttendHeads) over key block b alone: keys
// [b·AttnBlockKeys, (b+1)·AttnBlockKeys) ∩ [0, len(keyPos)).
func AttendBlock(st *AttnState, q, keys, vals []float32, keyPos []int32, qPos int32, sh AttnShape, kvh, h0, h1, b int, groups *KeyGroups, s *AttnScratch) {
	d := sh.HeadDim
	kvDim := sh.KVDim()
	g := sh.Heads / sh.KVHeads
	nGroups := numGroups(groups)
	s.reserve(g)
	st.reset(g, nGroups, d, h0, h1)
	scale := 1 / math.Sqrt(float64(d))
	var gscale [maxKeyGroups]float32
	for i := 0; i < nGroups; i++ {
		t := float32(1)
		if groups != nil {
			t = groups.Temp[i]
		}
		gscale[i] = float32(scale / float64(t))
	}
	nKeys := min(len(keyPos), (b+1)*AttnBlockKeys)
	koff := kvh * d
	// fast selects the AVX2 kernels (amd64): FMA scores, a float32
	// polynomial exp and assembly value sums. Both paths are
	// batch-invariant; they differ from each other in rounding.
	fast := haveAVX2() && d%8 == 0
	for t0 := b * AttnBlockKeys; t0 < nKeys; t0 += attnTile {
		t1 := min(t0+attnTile, nKeys)
		if fast && groups == nil {
			for h := h0; h < h1; h++ {
				s.plainTile(st, h, q[(kvh*g+h)*d:(kvh*g+h+1)*d], keys, vals, keyPos[t0:t1], qPos, t0, kvDim, koff, d, gscale[0])
			}
			continue
		}
		// Scores of the tile; masked keys are marked with -Inf and skipped.
		for h := h0; h < h1; h++ {
			qh := q[(kvh*g+h)*d : (kvh*g+h+1)*d]
			sc := s.scores[h*attnTile : (h+1)*attnTile]
			if fast {
				scoreTile(sc, qh, keys, t0, t1, kvDim, koff)
				for j := t0; j < t1; j++ {
					if keyPos[j] > qPos {
						sc[j-t0] = float32(math.Inf(-1))
						continue
					}
					grp := 0
					if groups != nil {
						grp = int(groups.Of[j])
					}
					sc[j-t0] *= gscale[grp]
				}
				continue
			}
			for j := t0; j < t1; j++ {
				if keyPos[j] > qPos {
					sc[j-t0] = float32(math.Inf(-1))
					continue
				}
				grp := 0
				if groups != nil {
					grp = int(groups.Of[j])
				}
				sc[j-t0] = dotF32(qh, keys[j*kvDim+koff:j*kvDim+koff+d]) * gscale[grp]
			}
		}
		// Per (head, group): rescale the running state to the tile's new max.
		for h := h0; h < h1; h++ {
			sc := s.scores[h*attnTile : (h+1)*attnTile]
			for grp := 0; grp < nGroups; grp++ {
				mOld := st.m[st.at(h, grp)]
				mNew := mOld
				for j := t0; j < t1; j++ {
					if groups != nil && int(groups.Of[j]) != grp {
						continue
					}
					if v := float64(sc[j-t0]); v > mNew {
						mNew = v
					}
				}
				if mNew == mOld || math.IsInf(mNew, -1) {
					continue
				}
				st.raiseMax(st.at(h, grp), mNew)
			}
			// Accumulate the tile's weighted values.
			if fast {
				s.accumulateTile(st, h, sc, vals, t0, t1, kvDim, koff, d, groups)
				continue
			}
			for j := t0; j < t1; j++ {
				v := float64(sc[j-t0])
				if math.IsInf(v, -1) {
					continue
				}
				grp := 0
				if groups != nil {
					grp = int(groups.Of[j])
				}
				p := math.Exp(v - st.m[st.at(h, grp)])
				st.l[st.at(h, grp)] += p
				axpyF32(st.out(st.at(h, grp)), float32(p), vals[j*kvDim+koff:j*kvDim+koff+d])
			}
		}
	}
}

// write writes the outputs of heads [h0, h1) from the merged state st.
// Groups are merged: w_g ∝ exp(λ_g·LSE_g), LSE_g = m_g + ln l_g.
func (st *AttnState) write(out []float32, sh AttnShape, kvh, h0, h1 int, groups *KeyGroups) {
	g, d := sh.Heads/sh.KVHeads, sh.HeadDim
	nGroups := numGroups(groups)
	// Merge the groups: w_g ∝ exp(λ_g·LSE_g), LSE_g = m_g + ln l_g.
	for h := h0; h < h1; h++ {
		o := out[(kvh*g+h)*d : (kvh*g+h+1)*d]
		for i := range o {
			o[i] = 0
		}
		if nGroups == 1 {
			l := st.l[st.at(h, 0)]
			if l == 0 {
				continue
			}
			inv := float32(1 / l)
			acc := st.out(st.at(h, 0))
			for i := range o {
				o[i] = acc[i] * inv
			}
			continue
		}
		var z [maxKeyGroups]float64
		zmax := math.Inf(-1)
		for grp := 0; grp < nGroups; grp++ {
			l := st.l[st.at(h, grp)]
			if l == 0 {
				z[grp] = math.Inf(-1)
				continue
			}
			z[grp] = float64(groups.LSEScale[grp]) * (st.m[st.at(h, grp)] + math.Log(l))
			zmax = max(zmax, z[grp])
		}
		if math.IsInf(zmax, -1) {
			continue
		}
		var zsum float64
		for grp := 0; grp < nGroups; grp++ {
			if !math.IsInf(z[grp], -1) {
				z[grp] = math.Exp(z[grp] - zmax)
				zsum += z[grp]
			} else {
				z[grp] = 0
			}
		}
		for grp := 0; grp < nGroups; grp++ {
			if z[grp] == 0 {
				continue
			}
			// w_g·O_g = w_g·acc_g / l_g
			w := float32(z[grp] / zsum / st.l[st.at(h, grp)])
			axpyF32(o, w, st.out(st.at(h, grp)))
		}
	}
}

// raiseMax moves running state i (a head and key group) to the larger
// maximum mNew: its sum and accumulator are rescaled by exp(m − mNew)
// unless nothing was accumulated yet (m = −Inf).
func (st *AttnState) raiseMax(i int, mNew float64) {
	if mOld := st.m[i]; !math.IsInf(mOld, -1) {
		f := math.Exp(mOld - mNew)
		st.l[i] *= f
		ff := float32(f)
		acc := st.out(i)
		for j := range acc {
			acc[j] *= ff
		}
	}
	st.m[i] = mNew
}

// plainTile is one tile of AttendHeads' assembly path for head h without
// key groups, keys [t0, t0+len(kp)): the general path's arithmetic without
// its per-key tests. A masked key's score is −Inf, so its numerator
// exp(−Inf − m) is exactly 0 (expTile gives 0 below −87), and adding 0 to
// the sum l or a 0·v product to the accumulator (never −0) changes neither:
// one sum and one axpyRows over the whole tile give bitwise what the
// general path's runs between masked keys give.
func (s *AttnScratch) plainTile(st *AttnState, h int, qh, keys, vals []float32, kp []int32, qPos int32, t0, kvDim, koff, d int, scale float32) {
	n := len(kp)
	sc := s.scores[h*attnTile : h*attnTile+n]
	scoreTile(sc, qh, keys, t0, t0+n, kvDim, koff)
	full := n / 8
	mTile := float32(math.Inf(-1))
	if full > 0 {
		mTile = scaleMax(&sc[0], &kp[0], full, qPos, scale)
	}
	for j := 8 * full; j < n; j++ {
		if kp[j] > qPos {
			sc[j] = float32(math.Inf(-1))
			continue
		}
		v := sc[j] * scale
		sc[j] = v
		if v > mTile {
			mTile = v
		}
	}
	if math.IsInf(float64(mTile), -1) {
		return // every key of the tile is masked
	}
	if mNew := float64(mTile); mNew > st.m[st.at(h, 0)] {
		st.raiseMax(st.at(h, 0), mNew)
	}
	acc := st.out(st.at(h, 0))
	p := s.p[:attnTile]
	copy(p, sc)
	n8 := (n + 7) / 8
	for j := n; j < 8*n8; j++ {
		p[j] = float32(math.Inf(-1)) // numerator 0
	}
	st.l[st.at(h, 0)] += float64(expSum(&p[0], n8, float32(st.m[st.at(h, 0)])))
	axpyRows(&acc[0], d, &p[0], &vals[t0*kvDim+koff], 4*kvDim, n)
}

// dotF32 returns Σ a[i]·b[i] with four interleaved float32 accumulators
// (a fixed reduction order).
func dotF32(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// axpyF32 computes dst[i] += a·x[i].
func axpyF32(dst []float32, a float32, x []float32) {
	x = x[:len(dst)]
	for i := range dst {
		dst[i] += a * x[i]
	}
}

// scoreTile sets sc[j−t0] = q·key_j for keys [t0, t1) with the assembly
// kernels: eight keys at a time, then one (a key's score is the same
// either way).
func scoreTile(sc, q, keys []float32, t0, t1, kvDim, koff int) {
	n8 := len(q) / 8
	j := t0
	for ; j+8 <= t1; j += 8 {
		scoreKeys8((*byte)(unsafe.Pointer(&keys[j*kvDim+koff])), 4*kvDim, &q[0], n8, &sc[j-t0])
	}
	for ; j < t1; j++ {
		sc[j-t0] = scoreKey1((*byte)(unsafe.Pointer(&keys[j*kvDim+koff])), &q[0], n8)
	}
}

// accumulateTile adds the tile's softmax numerators p_j = exp(score_j − m)
// to the running sums of head h and the weighted value rows to its
// accumulators, with the assembly kernels. Masked keys (score −Inf) get
// p_j = 0. A group's sum is sumTile over the tile with the other groups'
// numerators zeroed, so with one group it is bitwise plainTile's expSum;
// runs of visible keys of one group go to axpyRows together, which adds
// them in key order exactly as one call per key would.
func (s *AttnScratch) accumulateTile(st *AttnState, h int, sc, vals []float32, t0, t1, kvDim, koff, d int, groups *KeyGroups) {
	p := s.p[:attnTile]
	n8 := (t1 - t0 + 7) / 8
	for j := t0; j < t0+8*n8; j++ {
		if j >= t1 {
			p[j-t0] = float32(math.Inf(-1))
			continue
		}
		v := sc[j-t0]
		if math.IsInf(float64(v), -1) {
			p[j-t0] = v
			continue
		}
		grp := 0
		if groups != nil {
			grp = int(groups.Of[j])
		}
		p[j-t0] = v - float32(st.m[st.at(h, grp)])
	}
	expTile(&p[0], n8)
	// The sum of each group seen in the tile.
	var seen [maxKeyGroups]bool
	for j := t0; j < t1; j++ {
		grp := 0
		if groups != nil {
			grp = int(groups.Of[j])
		}
		if seen[grp] || math.IsInf(float64(sc[j-t0]), -1) {
			continue
		}
		seen[grp] = true
		pg := s.pg[:8*n8]
		for k := range pg {
			pg[k] = 0
			if t0+k < t1 && (groups == nil || int(groups.Of[t0+k]) == grp) {
				pg[k] = p[k]
			}
		}
		st.l[st.at(h, grp)] += float64(sumTile(&pg[0], n8))
	}
	for j := t0; j < t1; {
		if math.IsInf(float64(sc[j-t0]), -1) {
			j++
			continue
		}
		grp := 0
		if groups != nil {
			grp = int(groups.Of[j])
		}
		e := j
		for e < t1 && !math.IsInf(float64(sc[e-t0]), -1) && (groups == nil || int(groups.Of[e]) == grp) {
			e++
		}
		acc := st.out(st.at(h, grp))
		axpyRows(&acc[0], d, &p[j-t0], &vals[j*kvDim+koff], 4*kvDim, e-j)
		j = e
	}
}
