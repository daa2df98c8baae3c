package kernels

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

func TestQuantizeQ8_0MatchesGGUFReference(t *testing.T) {
	g := loadGolden(t)
	x := f32s(g.QuantizeQ8_0.In)
	got := make([]byte, mustRowBytes(Q8_0, len(x)))
	if err := QuantizeActs(Q4_0, x, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, g.QuantizeQ8_0.Want) {
		for b := 0; b < len(got)/34; b++ {
			if g, w := got[34*b:34*b+34], g.QuantizeQ8_0.Want[34*b:34*b+34]; !bytes.Equal(g, w) {
				t.Errorf("block %d:\n got %x\nwant %x", b, g, w)
			}
		}
	}
}

func TestActTypeFollowsGGMLVecDotType(t *testing.T) {
	want := map[DType]DType{
		F32: F32, F16: F16, BF16: BF16,
		Q4_0: Q8_0, Q5_0: Q8_0, Q8_0: Q8_0,
		Q4_1: Q8_1, Q5_1: Q8_1,
		Q4_K: Q8_K, Q5_K: Q8_K, Q6_K: Q8_K,
	}
	for w, a := range want {
		if got, err := ActType(w); err != nil || got != a {
			t.Errorf("ActType(%v) = %v, %v; want %v", w, got, err, a)
		}
	}
	for _, bad := range []DType{Q8_1, Q8_K, DType(4), DType(77)} {
		if _, err := ActType(bad); !errors.Is(err, ErrUnsupported) {
			t.Errorf("ActType(%v) error = %v, want ErrUnsupported", bad, err)
		}
	}
}

// TestQ8ActivationsReconstructWithinHalfAStep checks the invariants of the
// activation quantisers: |d·q − x| ≤ d/2 (plus the fp16 rounding of d), Q8_1's
// s is fp16(d·Σq), Q8_K's bsums are the sums of its q's.
func TestQ8ActivationsReconstructWithinHalfAStep(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	x := randomActs(rng, 1, 1024)
	for _, w := range []DType{Q4_0, Q4_1, Q4_K} {
		at, _ := ActType(w)
		act := make([]byte, mustRowBytes(at, len(x)))
		if err := QuantizeActs(w, x, act); err != nil {
			t.Fatal(err)
		}
		xq, s, dsum := dequantActs(at, act, len(x))
		bs := at.BlockSize()
		for b := 0; b < len(x)/bs; b++ {
			var amax float64
			for _, v := range x[b*bs : (b+1)*bs] {
				amax = math.Max(amax, math.Abs(float64(v)))
			}
			step := amax / 127
			for i := b * bs; i < (b+1)*bs; i++ {
				if e := math.Abs(xq[i] - float64(x[i])); e > step*(0.5+1e-3)+amax*1e-3 {
					t.Fatalf("%v block %d element %d: x %v → %v, error %g > half step %g", at, b, i, x[i], xq[i], e, step/2)
				}
			}
			if at == Q8_1 {
				// s = fp16(d_unrounded·Σq) ≈ fp16(d)·Σq within fp16 precision.
				if math.Abs(s[b]-dsum[b]) > 2e-3*math.Abs(dsum[b])+1e-7 {
					t.Errorf("Q8_1 block %d: s %v, d·Σq %v", b, s[b], dsum[b])
				}
			}
			if at == Q8_K {
				blk := act[b*292 : (b+1)*292]
				for j := 0; j < 16; j++ {
					var sum int
					for _, q := range blk[4+16*j : 4+16*j+16] {
						sum += int(int8(q))
					}
					if got := int(int16(binary.LittleEndian.Uint16(blk[260+2*j:]))); got != sum {
						t.Errorf("Q8_K block %d bsums[%d] = %d, want %d", b, j, got, sum)
					}
				}
			}
		}
	}
}

func TestQuantizeActsRejectsBadShapes(t *testing.T) {
	x := make([]float32, 64)
	if err := QuantizeActs(Q4_1, x, make([]byte, 71)); !errors.Is(err, ErrShape) {
		t.Errorf("short dst: %v", err)
	}
	if err := QuantizeActs(Q4_K, x, make([]byte, 292)); !errors.Is(err, ErrShape) {
		t.Errorf("64 values for Q4_K: %v", err)
	}
	if err := QuantizeActs(Q8_K, x, nil); !errors.Is(err, ErrUnsupported) {
		t.Errorf("Q8_K weights: %v", err)
	}
}

func TestNearestIntRoundsHalfToEven(t *testing.T) {
	for _, c := range []struct {
		in   float32
		want int32
	}{{0.5, 0}, {1.5, 2}, {2.5, 2}, {-0.5, 0}, {-1.5, -2}, {126.5, 126}, {-127.4, -127}, {3.49, 3}} {
		if got := nearestInt(c.in); got != c.want {
			t.Errorf("nearestInt(%v) = %d, want %d", c.in, got, c.want)
		}
	}
}
