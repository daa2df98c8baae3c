package kernels

import (
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
	"unsafe"
)

// TestExpTileWithin2ULP checks the vector exp against math.Exp on [−87, 88]
// and its clamping outside.
func TestExpTileWithin2ULP(t *testing.T) {
	if !haveAVX2() {
		t.Skip("no AVX2")
	}
	rng := rand.New(rand.NewPCG(31, 32))
	x := make([]float32, 4096)
	for i := range x {
		x[i] = float32(rng.Float64()*175 - 87)
	}
	x[0], x[1], x[2], x[3] = 0, -87, 88, -1e-30
	y := append([]float32(nil), x...)
	expTile(&y[0], len(y)/8)
	for i, v := range x {
		want := float32(math.Exp(float64(v)))
		ulp := math.Abs(float64(math.Float32bits(y[i])) - float64(math.Float32bits(want)))
		if ulp > 2 {
			t.Fatalf("exp(%v) = %v, want %v (%v ulp)", v, y[i], want, ulp)
		}
	}
	z := []float32{float32(math.Inf(-1)), -88, -1000, float32(math.NaN()), 89, 1e30, float32(math.Inf(1)), 5}
	expTile(&z[0], 1)
	want := []float32{0, 0, 0, 0, float32(math.Exp(88)), float32(math.Exp(88)), float32(math.Exp(88)), float32(math.Exp(5))}
	for i := range z {
		if d := math.Abs(float64(z[i]-want[i])) / math.Max(float64(want[i]), 1e-30); d > 3e-7 {
			t.Errorf("clamped input %d: got %v, want %v", i, z[i], want[i])
		}
	}
}

// fma32 returns a·b + c rounded once to float32 (round to nearest even),
// computed exactly with math/big: the reference for the FMA kernels.
func fma32(a, b, c float32) float32 {
	x := new(big.Float).SetPrec(200).SetFloat64(float64(a))
	x.Mul(x, new(big.Float).SetPrec(200).SetFloat64(float64(b)))
	x.Add(x, new(big.Float).SetPrec(200).SetFloat64(float64(c)))
	f, _ := new(big.Float).SetPrec(24).SetMode(big.ToNearestEven).Set(x).Float32()
	return f
}

// hsum8 sums eight lanes in the kernels' order: lanes i and i+4, then
// adjacent pairs, then the two pair sums.
func hsum8(l [8]float32) float32 {
	return ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]))
}

// TestAxpyRowsIsOneFMAPerElementInKeyOrder checks the multi-row assembly
// AXPY against acc[i] = fma(p[j], v_j[i], acc[i]) for j in order, each FMA
// rounded once (computed exactly with math/big).
func TestAxpyRowsIsOneFMAPerElementInKeyOrder(t *testing.T) {
	if !haveAVX2() {
		t.Skip("no AVX2")
	}
	rng := rand.New(rand.NewPCG(33, 34))
	for _, d := range []int{8, 24, 32, 64, 72, 128} {
		for _, n := range []int{0, 1, 3, 32} {
			const stride = 200
			vals := randomActs(rng, n+1, stride)
			p := randomActs(rng, 1, n+8)
			acc := randomActs(rng, 1, d)
			want := append([]float32(nil), acc...)
			for j := 0; j < n; j++ {
				for i := range want {
					want[i] = fma32(p[j], vals[j*stride+3+i], want[i])
				}
			}
			axpyRows(&acc[0], d, &p[0], &vals[3], 4*stride, n)
			for i := range acc {
				if !sameBits(acc[i], want[i]) {
					t.Fatalf("d=%d n=%d: element %d %v, want %v", d, n, i, acc[i], want[i])
				}
			}
		}
	}
}

// TestExpSumIsSumTileOfExpTile checks that expSum writes expTile's values
// of x − m and returns their sum in sumTile's order, and that sumTile is
// the lane sums in order followed by hsum8.
func TestExpSumIsSumTileOfExpTile(t *testing.T) {
	if !haveAVX2() {
		t.Skip("no AVX2")
	}
	rng := rand.New(rand.NewPCG(35, 36))
	for _, n8 := range []int{0, 1, 2, 4, 9} {
		x := make([]float32, 8*n8+8)
		for i := range x {
			x[i] = float32(rng.Float64()*20 - 18)
		}
		if n8 > 0 {
			x[3] = float32(math.Inf(-1))
		}
		const m = 1.5
		e := append([]float32(nil), x...)
		for i := range e[:8*n8] {
			e[i] -= m
		}
		expTile(&e[0], n8)
		y := append([]float32(nil), x...)
		got := expSum(&y[0], n8, m)
		for i := range y {
			if !sameBits(y[i], e[i]) {
				t.Fatalf("n8=%d: expSum wrote x[%d] = %v, expTile %v", n8, i, y[i], e[i])
			}
		}
		var lanes [8]float32
		for c := 0; c < n8; c++ {
			for i := range lanes {
				lanes[i] += e[8*c+i]
			}
		}
		want := hsum8(lanes)
		if st := sumTile(&e[0], n8); !sameBits(st, want) || !sameBits(got, want) {
			t.Fatalf("n8=%d: expSum %v, sumTile %v, lane sums then hsum8 %v", n8, got, st, want)
		}
	}
}

// TestAttendMatchesFloat64Softmax compares Attend (GQA, causal masks, key
// counts that are not multiples of the tile, one and two key groups) with a
// float64 softmax attention computed directly from the definition.
func TestAttendMatchesFloat64Softmax(t *testing.T) {
	rng := rand.New(rand.NewPCG(35, 36))
	sh := AttnShape{Heads: 6, KVHeads: 2, HeadDim: 64}
	for _, nKeys := range []int{1, 5, 33, 100, 700, 1100} { // 1100: a last block wholly masked
		for _, grouped := range []bool{false, true} {
			kvDim, qDim := sh.KVDim(), sh.QDim()
			keys := randomActs(rng, nKeys, kvDim)
			vals := randomActs(rng, nKeys, kvDim)
			q := randomActs(rng, 1, qDim)
			pos := make([]int32, nKeys)
			for j := range pos {
				pos[j] = int32(j)
			}
			qPos := int32(nKeys - 1 - nKeys/4) // the last quarter is masked
			var groups *KeyGroups
			if grouped {
				groups = &KeyGroups{Of: make([]uint8, nKeys), Temp: []float32{1, 2}, LSEScale: []float32{1, 0.5}}
				for j := range groups.Of {
					groups.Of[j] = uint8(j % 2)
				}
			}
			out := make([]float32, qDim)
			var s AttnScratch
			for kvh := 0; kvh < sh.KVHeads; kvh++ {
				Attend(out, q, keys, vals, pos, qPos, sh, kvh, groups, &s)
			}
			g := sh.Heads / sh.KVHeads
			d := sh.HeadDim
			for h := 0; h < sh.Heads; h++ {
				kvh := h / g
				want := refAttention(q[h*d:(h+1)*d], keys, vals, pos, qPos, kvDim, kvh*d, groups)
				for i := 0; i < d; i++ {
					if diff := math.Abs(float64(out[h*d+i]) - want[i]); diff > 2e-5*(1+math.Abs(want[i])) {
						t.Fatalf("keys=%d grouped=%v head %d [%d]: got %v, want %v", nKeys, grouped, h, i, out[h*d+i], want[i])
					}
				}
			}
		}
	}
}

// refAttention is softmax attention for one head in float64: per group,
// O_g = Σ softmax(q·k/(T_g√d))·v and LSE_g, merged with
// w = softmax(LSEScale·LSE).
func refAttention(q, keys, vals []float32, pos []int32, qPos int32, kvDim, off int, groups *KeyGroups) []float64 {
	d := len(q)
	nGroups := 1
	if groups != nil {
		nGroups = len(groups.Temp)
	}
	out := make([]float64, d)
	o := make([][]float64, nGroups)
	lse := make([]float64, nGroups)
	for grp := range o {
		temp := 1.0
		if groups != nil {
			temp = float64(groups.Temp[grp])
		}
		var sc []float64
		var idx []int
		for j := range pos {
			if pos[j] > qPos || (groups != nil && int(groups.Of[j]) != grp) {
				continue
			}
			var s float64
			for i := 0; i < d; i++ {
				s += float64(q[i]) * float64(keys[j*kvDim+off+i])
			}
			sc = append(sc, s/(temp*math.Sqrt(float64(d))))
			idx = append(idx, j)
		}
		o[grp] = make([]float64, d)
		if len(sc) == 0 {
			lse[grp] = math.Inf(-1)
			continue
		}
		m := math.Inf(-1)
		for _, s := range sc {
			m = math.Max(m, s)
		}
		var z float64
		for k, s := range sc {
			p := math.Exp(s - m)
			z += p
			for i := 0; i < d; i++ {
				o[grp][i] += p * float64(vals[idx[k]*kvDim+off+i])
			}
		}
		for i := range o[grp] {
			o[grp][i] /= z
		}
		lse[grp] = m + math.Log(z)
	}
	if nGroups == 1 {
		return o[0]
	}
	var w []float64
	zmax := math.Inf(-1)
	for grp := range lse {
		w = append(w, float64(groups.LSEScale[grp])*lse[grp])
		zmax = math.Max(zmax, w[grp])
	}
	var zs float64
	for grp := range w {
		w[grp] = math.Exp(w[grp] - zmax)
		zs += w[grp]
	}
	for grp := range w {
		for i := range out {
			out[i] += w[grp] / zs * o[grp][i]
		}
	}
	return out
}

func TestAttendHeadsSplitEqualsAttendBitwise(t *testing.T) {
	rng := rand.New(rand.NewPCG(37, 38))
	sh := AttnShape{Heads: 9, KVHeads: 3, HeadDim: 64}
	for _, nKeys := range []int{1, 31, 70, 600} {
		for _, grouped := range []bool{false, true} {
			keys := randomActs(rng, nKeys, sh.KVDim())
			vals := randomActs(rng, nKeys, sh.KVDim())
			q := randomActs(rng, 1, sh.QDim())
			pos := make([]int32, nKeys)
			for j := range pos {
				pos[j] = int32(j)
			}
			qPos := int32(nKeys - 1 - nKeys/5)
			var groups *KeyGroups
			if grouped {
				groups = &KeyGroups{Of: make([]uint8, nKeys), Temp: []float32{1, 1.5}, LSEScale: []float32{1, 0.7}}
				for j := range groups.Of {
					groups.Of[j] = uint8(j / 3 % 2)
				}
			}
			want := make([]float32, sh.QDim())
			var s AttnScratch
			for kvh := 0; kvh < sh.KVHeads; kvh++ {
				Attend(want, q, keys, vals, pos, qPos, sh, kvh, groups, &s)
			}
			// Every split of each KV head's three query heads.
			for _, cut := range [][2]int{{0, 1}, {1, 3}, {0, 2}, {2, 3}, {1, 2}} {
				got := make([]float32, sh.QDim())
				for kvh := 0; kvh < sh.KVHeads; kvh++ {
					AttendHeads(got, q, keys, vals, pos, qPos, sh, kvh, 0, cut[0], groups, &s)
					AttendHeads(got, q, keys, vals, pos, qPos, sh, kvh, cut[0], cut[1], groups, &s)
					AttendHeads(got, q, keys, vals, pos, qPos, sh, kvh, cut[1], 3, groups, &s)
				}
				for i := range want {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("keys=%d grouped=%v split %v: out[%d] = %v, Attend gives %v", nKeys, grouped, cut, i, got[i], want[i])
					}
				}
			}
		}
	}
}

// TestAttendBlocksThenMergeEqualsAttendBitwise checks that key blocks
// computed separately (in any order, with different scratch) and merged
// give bitwise Attend's output: with and without key groups, with a block
// whose keys are all masked, and with a single block.
func TestAttendBlocksThenMergeEqualsAttendBitwise(t *testing.T) {
	rng := rand.New(rand.NewPCG(43, 44))
	sh := AttnShape{Heads: 9, KVHeads: 3, HeadDim: 64}
	for _, nKeys := range []int{200, 256, 257, 1000} {
		for _, grouped := range []bool{false, true} {
			keys := randomActs(rng, nKeys, sh.KVDim())
			vals := randomActs(rng, nKeys, sh.KVDim())
			q := randomActs(rng, 1, sh.QDim())
			pos := make([]int32, nKeys)
			for j := range pos {
				pos[j] = int32(j)
				if j >= AttnBlockKeys && j < 2*AttnBlockKeys {
					pos[j] += int32(nKeys) // the second block is masked
				}
			}
			qPos := int32(nKeys - 1 - nKeys/7)
			var groups *KeyGroups
			if grouped {
				groups = &KeyGroups{Of: make([]uint8, nKeys), Temp: []float32{1, 1.3, 0.8}, LSEScale: []float32{1, 0.6, 0.9}}
				for j := range groups.Of {
					groups.Of[j] = uint8(j / 50 % 3)
				}
			}
			want := make([]float32, sh.QDim())
			var s AttnScratch
			for kvh := 0; kvh < sh.KVHeads; kvh++ {
				Attend(want, q, keys, vals, pos, qPos, sh, kvh, groups, &s)
			}
			nb := AttnBlocks(nKeys)
			got := make([]float32, sh.QDim())
			for kvh := 0; kvh < sh.KVHeads; kvh++ {
				for _, heads := range [][2]int{{0, 3}, {1, 2}} {
					blocks := make([]AttnState, nb)
					scratch := make([]AttnScratch, 2)
					for _, b := range rng.Perm(nb) {
						AttendBlock(&blocks[b], q, keys, vals, pos, qPos, sh, kvh, heads[0], heads[1], b, groups, &scratch[b%2])
					}
					AttendMerge(got, blocks, sh, kvh, heads[0], heads[1], groups, &scratch[1])
				}
			}
			for i := range want {
				if !sameBits(got[i], want[i]) {
					t.Fatalf("keys=%d grouped=%v: out[%d] = %v from merged blocks, Attend gives %v", nKeys, grouped, i, got[i], want[i])
				}
			}
		}
	}
}

// TestScaleMaxMasksScalesAndFindsTheMax checks scaleMax against its
// definition, with masks that hide no key, some keys and every key.
func TestScaleMaxMasksScalesAndFindsTheMax(t *testing.T) {
	if !haveAVX2() {
		t.Skip("no AVX2")
	}
	rng := rand.New(rand.NewPCG(37, 38))
	for _, n8 := range []int{1, 2, 4} {
		for _, qPos := range []int32{-1, 10, 1000} {
			sc := randomActs(rng, 1, 8*n8)
			kp := make([]int32, 8*n8)
			for i := range kp {
				kp[i] = int32(rng.IntN(20))
			}
			want := append([]float32(nil), sc...)
			wantMax := float32(math.Inf(-1))
			for i := range want {
				if kp[i] > qPos {
					want[i] = float32(math.Inf(-1))
					continue
				}
				want[i] *= 0.125
				wantMax = max(wantMax, want[i])
			}
			got := scaleMax(&sc[0], &kp[0], n8, qPos, 0.125)
			if !sameBits(got, wantMax) {
				t.Fatalf("n8=%d qPos=%d: max %v, want %v", n8, qPos, got, wantMax)
			}
			for i := range sc {
				if !sameBits(sc[i], want[i]) {
					t.Fatalf("n8=%d qPos=%d: sc[%d] = %v, want %v", n8, qPos, i, sc[i], want[i])
				}
			}
		}
	}
}

// TestScoreKernelsAreOneFMAChainPerLaneThenLaneSum checks scoreKey1 against
// its definition (per lane, one rounded FMA per eight-float chunk in order,
// then hsum8) and scoreKeys8 against scoreKey1 bitwise for every row.
func TestScoreKernelsAreOneFMAChainPerLaneThenLaneSum(t *testing.T) {
	if !haveAVX2() {
		t.Skip("no AVX2")
	}
	rng := rand.New(rand.NewPCG(39, 40))
	for _, n8 := range []int{0, 1, 3, 8, 17} {
		stride := 8*n8 + 24 // rows of a wider matrix, as K-cache heads are
		w := randomActs(rng, 8, stride)
		a := randomActs(rng, 1, 8*n8+1)
		var out [8]float32
		scoreKeys8((*byte)(unsafe.Pointer(&w[0])), 4*stride, &a[0], n8, &out[0])
		for j := 0; j < 8; j++ {
			var lanes [8]float32
			for c := 0; c < n8; c++ {
				for i := range lanes {
					lanes[i] = fma32(a[8*c+i], w[j*stride+8*c+i], lanes[i])
				}
			}
			want := hsum8(lanes)
			one := scoreKey1((*byte)(unsafe.Pointer(&w[j*stride])), &a[0], n8)
			if !sameBits(one, want) || !sameBits(out[j], want) {
				t.Fatalf("n8=%d row %d: scoreKeys8 %v, scoreKey1 %v, definition %v", n8, j, out[j], one, want)
			}
		}
	}
}

// TestAttendWithoutGroupsIsBitwiseTheOneGroupPath pins plainTile (the
// assembly path without key groups) to the general per-key path, which a
// single group of temperature 1 takes, over masks that leave whole tiles,
// parts of tiles and single keys visible, with positions out of order as
// APE's position reuse makes them.
func TestAttendWithoutGroupsIsBitwiseTheOneGroupPath(t *testing.T) {
	if !haveAVX2() {
		t.Skip("no assembly path")
	}
	rng := rand.New(rand.NewPCG(41, 42))
	sh := AttnShape{Heads: 9, KVHeads: 3, HeadDim: 64}
	for _, nKeys := range []int{1, 7, 32, 33, 100, 300} {
		keys := randomActs(rng, nKeys, sh.KVDim())
		vals := randomActs(rng, nKeys, sh.KVDim())
		q := randomActs(rng, 1, sh.QDim())
		for name, pos := range map[string][]int32{
			"in order": func() []int32 {
				p := make([]int32, nKeys)
				for j := range p {
					p[j] = int32(j)
				}
				return p
			}(),
			"shuffled": func() []int32 {
				p := make([]int32, nKeys)
				for j := range p {
					p[j] = int32(rng.IntN(nKeys))
				}
				return p
			}(),
		} {
			for _, qPos := range []int32{0, int32(nKeys / 3), int32(nKeys - 1)} {
				one := &KeyGroups{Of: make([]uint8, nKeys), Temp: []float32{1}, LSEScale: []float32{1}}
				want := make([]float32, sh.QDim())
				got := make([]float32, sh.QDim())
				var s AttnScratch
				for kvh := 0; kvh < sh.KVHeads; kvh++ {
					Attend(want, q, keys, vals, pos, qPos, sh, kvh, one, &s)
					Attend(got, q, keys, vals, pos, qPos, sh, kvh, nil, &s)
				}
				for i := range want {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("keys=%d %s qPos=%d: out[%d] = %v without groups, %v with one group", nKeys, name, qPos, i, got[i], want[i])
					}
				}
			}
		}
	}
}
