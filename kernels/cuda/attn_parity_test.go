//go:build (cuda || cudaemu) && cgo

package cuda

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/blendrag/blendrag/kernels"
)

// attnCase is one attention call: the shape, the keys' positions, the
// queries' positions and optional key groups; the tensors are random.
type attnCase struct {
	name   string
	sh     kernels.AttnShape
	keyPos []int32
	qPos   []int32
	groups *kernels.KeyGroups
	// alone: the test also computes every row alone (by attend_split; the
	// emulation's shuffles are slow, so only where it is affordable).
	alone bool
}

// attnInputs are an attention call's tensors on the host and the device.
type attnInputs struct {
	q, keys, vals     []float32
	dq, dk, dv, dkp   *Buffer
	dqp               *Buffer
	g                 *KeyGroups
	nQ, nKeys         int
	sh                kernels.AttnShape
	qPosHost, keyHost []int32
}

func newAttnInputs(t *testing.T, d *Device, r *rand.Rand, c attnCase) *attnInputs {
	t.Helper()
	in := &attnInputs{nQ: len(c.qPos), nKeys: len(c.keyPos), sh: c.sh, qPosHost: c.qPos, keyHost: c.keyPos}
	in.q = randF32(r, in.nQ*c.sh.QDim(), 1)
	in.keys = randF32(r, in.nKeys*c.sh.KVDim(), 1)
	in.vals = randF32(r, in.nKeys*c.sh.KVDim(), 1)
	in.dq, in.dk, in.dv = devF32s(t, d, in.q), devF32s(t, d, in.keys), devF32s(t, d, in.vals)
	in.dkp, in.dqp = devI32s(t, d, c.keyPos), devI32s(t, d, c.qPos)
	if c.groups != nil {
		g, err := d.UploadKeyGroups(c.groups)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = d.FreeKeyGroups(g) })
		in.g = g
	}
	return in
}

// attend runs Device.Attend over all rows of in and downloads the output.
func (in *attnInputs) attend(t *testing.T, d *Device) []float32 {
	t.Helper()
	out := devZeros(t, d, in.nQ*in.sh.QDim())
	if err := d.Attend(out, in.dq, in.dk, in.dv, in.dkp, in.dqp, in.nQ, in.nKeys, in.sh, in.g); err != nil {
		t.Fatal(err)
	}
	return download(t, d, out, in.nQ*in.sh.QDim())
}

// attendRows runs Device.Attend for the rows rows of in alone (as a batch
// of their own, in that order) and downloads the output.
func (in *attnInputs) attendRows(t *testing.T, d *Device, rows []int) []float32 {
	t.Helper()
	qd := in.sh.QDim()
	q := make([]float32, 0, len(rows)*qd)
	pos := make([]int32, 0, len(rows))
	for _, i := range rows {
		q = append(q, in.q[i*qd:(i+1)*qd]...)
		pos = append(pos, in.qPosHost[i])
	}
	out := devZeros(t, d, len(rows)*qd)
	if err := d.Attend(out, devF32s(t, d, q), in.dk, in.dv, in.dkp, devI32s(t, d, pos), len(rows), in.nKeys, in.sh, in.g); err != nil {
		t.Fatal(err)
	}
	return download(t, d, out, len(rows)*qd)
}

// scratchFor is the size Device.grow gives a scratch buffer of n bytes.
func scratchFor(n int64) int64 {
	size := int64(1) << 16
	for size < n {
		size <<= 1
	}
	return size
}

func seqPos(lo, hi int) []int32 {
	p := make([]int32, hi-lo)
	for i := range p {
		p[i] = int32(lo + i)
	}
	return p
}

// apeLayout is an APE cache: a prefix of p keys (group 0) at 0..p−1,
// nChunks chunks of c keys each (group 1) all at positions p..p+c−1, and q
// query keys (group 2) at p+c.. .
func apeLayout(p, c, nChunks, q int) (pos []int32, of []uint8) {
	for i := range p {
		pos, of = append(pos, int32(i)), append(of, 0)
	}
	for range nChunks {
		for i := range c {
			pos, of = append(pos, int32(p+i)), append(of, 1)
		}
	}
	for i := range q {
		pos, of = append(pos, int32(p+c+i)), append(of, 2)
	}
	return pos, of
}

// groupCases are attention calls with APE key groups that the split path
// (attend_split with (split, group) partials and attend_combine_groups)
// takes, plus one with head dimension 16 that still takes attend.
func groupCases() []attnCase {
	gqa := kernels.AttnShape{Heads: 9, KVHeads: 3, HeadDim: 64} // SmolLM2-135M
	// 540 causal keys (splits [0,256) [256,512) [512,540)) in three
	// contiguous groups: splits end inside groups, groups span splits.
	contig := make([]uint8, 540)
	for j := range contig {
		switch {
		case j >= 450:
			contig[j] = 2
		case j >= 200:
			contig[j] = 1
		}
	}
	// 600 causal keys, four groups interleaved key by key.
	inter := make([]uint8, 600)
	for j := range inter {
		inter[j] = uint8(j % 4)
	}
	// 300 keys in two groups at random.
	rnd := rand.New(rand.NewPCG(31, 32))
	two := make([]uint8, 300)
	for j := range two {
		two[j] = uint8(rnd.IntN(2))
	}
	apePos, apeOf := apeLayout(30, 160, 3, 10) // 520 keys
	return []attnCase{
		{name: "3 contiguous groups GQA 9/3/64 540 keys", sh: gqa, keyPos: seqPos(0, 540),
			// Row 0 and 150: groups 1 and 2 fully masked; −1: sees no key.
			qPos:   []int32{0, 150, 260, 455, 539, -1},
			groups: &kernels.KeyGroups{Of: contig, Temp: []float32{1, 0.8, 1.3}, LSEScale: []float32{1, 0.7, 1.2}}},
		{name: "4 interleaved groups 4/2/32 600 keys", sh: kernels.AttnShape{Heads: 4, KVHeads: 2, HeadDim: 32}, keyPos: seqPos(0, 600),
			qPos:   []int32{0, 1, 3, 256, 599},
			groups: &kernels.KeyGroups{Of: inter, Temp: []float32{0.9, 1.1, 1, 0.6}, LSEScale: []float32{1.2, 0.8, 1, 0.5}},
			alone:  true},
		{name: "APE chunks sharing positions GQA 9/3/64 520 keys", sh: gqa, keyPos: apePos,
			// Query rows (190..199) see all three groups; chunk rows
			// (recomputed) see group 0 and part of group 1, never group
			// 2; −5 sees nothing.
			qPos:   []int32{190, 199, 100, 5, -5},
			groups: &kernels.KeyGroups{Of: apeOf, Temp: []float32{1, 0.5, 1}, LSEScale: []float32{1, 0.5, 1}},
			alone:  true},
		{name: "2 random groups 8/8/128 300 keys", sh: kernels.AttnShape{Heads: 8, KVHeads: 8, HeadDim: 128}, keyPos: seqPos(0, 300),
			qPos:   []int32{0, 10, 257, 299},
			groups: &kernels.KeyGroups{Of: two, Temp: []float32{1.2, 0.7}, LSEScale: []float32{0.9, 1.4}}},
		{name: "one group T=0.7", sh: gqa, keyPos: seqPos(0, 300), qPos: []int32{0, 256, 299},
			groups: &kernels.KeyGroups{Of: make([]uint8, 300), Temp: []float32{0.7}, LSEScale: []float32{1.5}}},
		{name: "two groups T=S=1 (plain attention) GQA 9/3/64", sh: gqa, keyPos: seqPos(0, 300), qPos: []int32{5, 280},
			groups: &kernels.KeyGroups{Of: two, Temp: []float32{1, 1}, LSEScale: []float32{1, 1}}},
		{name: "head dim 16 (attend kernel)", sh: kernels.AttnShape{Heads: 2, KVHeads: 1, HeadDim: 16}, keyPos: apePos, qPos: []int32{191, 100},
			groups: &kernels.KeyGroups{Of: apeOf, Temp: []float32{1, 0.5, 1}, LSEScale: []float32{1, 0.5, 1}}},
	}
}

// TestAttendGroupsMatchesCPU: attention with APE key groups (2–4 groups,
// contiguous, interleaved and random group ids, temperatures and LSE scales
// ≠ 1, causal and APE's repeated positions, groups fully masked for some
// rows, rows that see no key, several 256-key splits with partial ones,
// GQA) agrees with kernels.Attend within 2e-5 absolute (values in [−1, 1];
// the GPU sums in a different order and uses expf); on the split path the
// scratch is the split path's, not nQ·heads·nKeys floats; and a row
// computed alone is bitwise the row computed among the others.
func TestAttendGroupsMatchesCPU(t *testing.T) {
	r := rand.New(rand.NewPCG(41, 42))
	for _, c := range groupCases() {
		t.Run(c.name, func(t *testing.T) {
			d := openDevice(t)
			in := newAttnInputs(t, d, r, c)
			want := cpuAttend(in.q, in.keys, in.vals, c.keyPos, c.qPos, c.sh, c.groups)
			all := in.attend(t, d)
			within(t, c.name, all, want, 2e-5, 0)
			if c.sh.HeadDim%32 == 0 {
				pairs := groupPairs(c.groups.Of, len(c.groups.Temp))
				split := int64(in.nQ*c.sh.Heads*len(pairs)*(c.sh.HeadDim+2)) * 4
				if got := d.scores.Bytes(); got != scratchFor(split) {
					t.Errorf("attention scratch %d bytes, want the split path's %d (%d partials)", got, scratchFor(split), len(pairs))
				}
			}
			if !c.alone {
				return
			}
			qd := c.sh.QDim()
			for i := range in.nQ {
				bitwiseEqual(t, fmt.Sprintf("row %d alone vs among %d", i, in.nQ), in.attendRows(t, d, []int{i}), all[i*qd:(i+1)*qd])
			}
		})
	}
}

// TestGroupPairsListPresentSplitGroupPairs: the (split, group) partials are
// exactly the pairs that hold a key, by group, then split.
func TestGroupPairsListPresentSplitGroupPairs(t *testing.T) {
	of := make([]uint8, 600) // splits [0,256) [256,512) [512,600)
	for j := range of {
		switch {
		case j >= 300 && j < 520:
			of[j] = 2
		case j == 10:
			of[j] = 1
		}
	}
	got := groupPairs(of, 3)
	want := []int32{0<<faGBits | 0, 1<<faGBits | 0, 2<<faGBits | 0, 0<<faGBits | 1, 1<<faGBits | 2, 2<<faGBits | 2}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("groupPairs = %v, want %v", got, want)
	}
}

// tileCases are prefill-sized calls without groups, which Attend gives to
// attend_tile.
func tileCases() []attnCase {
	gqa := kernels.AttnShape{Heads: 9, KVHeads: 3, HeadDim: 64}
	apePos, _ := apeLayout(30, 200, 3, 10) // 640 keys, positions reused
	rnd := rand.New(rand.NewPCG(51, 52))
	subset := make([]int32, 100) // arbitrary positions, some see nothing
	for i := range subset {
		subset[i] = int32(rnd.IntN(260) - 20)
	}
	sparse := make([]int32, 64) // arbitrary positions over 300 causal keys
	for i := range sparse {
		sparse[i] = int32(rnd.IntN(320) - 20)
	}
	return []attnCase{
		// Prefill of 300 rows after 23 cached keys: the first block's rows
		// (42 with G = 3) end at position 64, where a key tile starts, so
		// that tile holds exactly one key the block sees.
		{name: "causal prefill 300 after 23 cached GQA 9/3/64", sh: gqa, keyPos: seqPos(0, 323), qPos: seqPos(23, 323)},
		{name: "causal prefill 600 GQA 9/3/64", sh: gqa, keyPos: seqPos(0, 600), qPos: seqPos(0, 600)},
		{name: "causal prefill 300 4/2/32", sh: kernels.AttnShape{Heads: 4, KVHeads: 2, HeadDim: 32}, keyPos: seqPos(0, 300), qPos: seqPos(0, 300)},
		{name: "100 rows at arbitrary positions over an APE cache GQA 9/3/64", sh: gqa, keyPos: apePos, qPos: subset},
		{name: "70 rows 8/1/32 (G = 8)", sh: kernels.AttnShape{Heads: 8, KVHeads: 1, HeadDim: 32}, keyPos: seqPos(0, 530), qPos: seqPos(460, 530)},
		{name: "64 rows 6/6/64 (G = 1)", sh: kernels.AttnShape{Heads: 6, KVHeads: 6, HeadDim: 64}, keyPos: seqPos(0, 400), qPos: seqPos(336, 400)},
		{name: "64 rows at arbitrary positions 1/1/32, every row also by attend_split", sh: kernels.AttnShape{Heads: 1, KVHeads: 1, HeadDim: 32},
			keyPos: seqPos(0, 300), qPos: sparse, alone: true},
	}
}

// TestAttendTileMatchesCPUAndSplitBitwise: for many query rows Attend takes
// attend_tile; its result agrees with kernels.Attend within 2e-5 absolute;
// a row's result does not depend on the rows that share its tile (bitwise
// the same in another batch: the rows reversed and shifted, so every tile
// holds other rows); and it is bitwise attend_split's (the tile kernel
// reproduces its partial states exactly): rows computed alone take
// attend_split, for a few rows of each case, and one case compares
// attend_split over the whole batch.
func TestAttendTileMatchesCPUAndSplitBitwise(t *testing.T) {
	d := openDevice(t)
	r := rand.New(rand.NewPCG(53, 54))
	for _, c := range tileCases() {
		t.Run(c.name, func(t *testing.T) {
			in := newAttnInputs(t, d, r, c)
			if !useTile(in.nQ, c.sh) {
				t.Fatalf("Attend would not take attend_tile for %d rows of %+v", in.nQ, c.sh)
			}
			want := cpuAttend(in.q, in.keys, in.vals, c.keyPos, c.qPos, c.sh, nil)
			all := in.attend(t, d)
			within(t, c.name, all, want, 2e-5, 0)

			qd := c.sh.QDim()
			other := make([]int, 0, in.nQ)
			for i := in.nQ - 1; i >= 5; i-- {
				other = append(other, i)
			}
			if len(other) < ftMinRows {
				other = append(other, 0, 1, 2, 3, 4)
			}
			got := in.attendRows(t, d, other)
			for k, i := range other {
				bitwiseEqual(t, fmt.Sprintf("row %d in another batch", i), got[k*qd:(k+1)*qd], all[i*qd:(i+1)*qd])
			}
			for _, i := range []int{0, in.nQ / 2, in.nQ - 1} {
				bitwiseEqual(t, fmt.Sprintf("row %d alone (attend_split)", i), in.attendRows(t, d, []int{i}), all[i*qd:(i+1)*qd])
			}
			if !c.alone {
				return
			}
			split := devZeros(t, d, in.nQ*qd)
			if err := d.attendSplit(split, in.dq, in.dk, in.dv, in.dkp, in.dqp, in.nQ, in.nKeys, c.sh, nil, false); err != nil {
				t.Fatal(err)
			}
			bitwiseEqual(t, "attend_tile vs attend_split on the whole batch", all, download(t, d, split, in.nQ*qd))
		})
	}
}

// BenchmarkAttendPrefill times causal prefill attention (nQ = nKeys, GQA
// 9/3/64 like SmolLM2-135M) through attend_split and through attend_tile,
// for choosing ftMinRows on a GPU (in the CPU emulation it measures the
// emulation, not a GPU):
//
//	CGO_ENABLED=1 go test -tags cuda -run '^$' -bench AttendPrefill ./kernels/cuda/
func BenchmarkAttendPrefill(b *testing.B) {
	d, err := Open(0)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	sh := kernels.AttnShape{Heads: 9, KVHeads: 3, HeadDim: 64}
	r := rand.New(rand.NewPCG(61, 62))
	for _, n := range []int{64, 128, 512, 2048} {
		if Emulated() && n > 64 {
			continue
		}
		pos := seqPos(0, n)
		var bufs []*Buffer
		upload := func(x []float32) *Buffer {
			buf, err := d.NewF32(x)
			if err != nil {
				b.Fatal(err)
			}
			bufs = append(bufs, buf)
			return buf
		}
		q, k, v := upload(randF32(r, n*sh.QDim(), 1)), upload(randF32(r, n*sh.KVDim(), 1)), upload(randF32(r, n*sh.KVDim(), 1))
		out := upload(make([]float32, n*sh.QDim()))
		p, err := d.NewI32(pos)
		if err != nil {
			b.Fatal(err)
		}
		bufs = append(bufs, p)
		for _, tile := range []bool{false, true} {
			name := fmt.Sprintf("n=%d/attend_split", n)
			if tile {
				name = fmt.Sprintf("n=%d/attend_tile", n)
			}
			b.Run(name, func(b *testing.B) {
				for b.Loop() {
					if err := d.attendSplit(out, q, k, v, p, p, n, n, sh, nil, tile); err != nil {
						b.Fatal(err)
					}
				}
				if err := d.Sync(); err != nil {
					b.Fatal(err)
				}
			})
		}
		for _, buf := range bufs {
			if err := d.Free(buf); err != nil {
				b.Fatal(err)
			}
		}
	}
}
