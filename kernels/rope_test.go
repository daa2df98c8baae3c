package kernels

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

func TestRoPEShiftByDeltaEqualsRoPEAtSumOfPositions(t *testing.T) {
	rng := rand.New(rand.NewPCG(41, 42))
	const d, heads, base = 64, 3, 100000.0
	for _, neox := range []bool{false, true} {
		for _, c := range []struct{ p, delta int }{{0, 5}, {17, 100}, {300, -200}, {8000, 37}, {7990, 250}, {5, 8000}} {
			t.Run(fmt.Sprintf("neox=%v/p=%d/delta=%d", neox, c.p, c.delta), func(t *testing.T) {
				k := randVec(rng, d*heads, 1)
				shifted := append([]float32(nil), k...)
				RoPE(shifted, d, heads, c.p, base, neox)
				RoPEShift(shifted, d, heads, c.delta, base, neox)
				direct := append([]float32(nil), k...)
				RoPE(direct, d, heads, c.p+c.delta, base, neox)
				for i := range k {
					if diff := math.Abs(float64(shifted[i] - direct[i])); diff > 1e-5 {
						t.Fatalf("[%d]: shifted %v, direct %v (diff %g)", i, shifted[i], direct[i], diff)
					}
				}
			})
		}
	}
}

func TestRoPERotatesTheDocumentedPairs(t *testing.T) {
	const d, pos, base = 8, 3, 10000.0
	for _, neox := range []bool{false, true} {
		x := make([]float32, d)
		for i := range x {
			x[i] = float32(i + 1)
		}
		got := append([]float32(nil), x...)
		RoPE(got, d, 1, pos, base, neox)
		for i := 0; i < d/2; i++ {
			a, b := 2*i, 2*i+1
			if neox {
				a, b = i, i+d/2
			}
			ang := float64(pos) * math.Pow(base, -float64(2*i)/d)
			c, s := float32(math.Cos(ang)), float32(math.Sin(ang))
			w0 := float32(x[a]*c) - float32(x[b]*s)
			w1 := float32(x[a]*s) + float32(x[b]*c)
			if got[a] != w0 || got[b] != w1 {
				t.Errorf("neox=%v pair %d (%d,%d): got (%v,%v) want (%v,%v)", neox, i, a, b, got[a], got[b], w0, w1)
			}
		}
	}
}

func TestRoPETableMatchesRoPEBitwiseAndKeepsNorms(t *testing.T) {
	rng := rand.New(rand.NewPCG(43, 44))
	const d, heads, base = 64, 9, 100000.0
	for _, neox := range []bool{false, true} {
		tab, err := NewRoPETable(d, base, neox, nil)
		if err != nil {
			t.Fatal(err)
		}
		cos, sin := make([]float32, d/2), make([]float32, d/2)
		for _, pos := range []int{0, 1, 511, 8191, -40} {
			x := randVec(rng, d*heads, 1)
			a := append([]float32(nil), x...)
			b := append([]float32(nil), x...)
			c := append([]float32(nil), x...)
			RoPE(a, d, heads, pos, base, neox)
			tab.Apply(b, heads, pos)
			tab.CosSin(pos, cos, sin)
			tab.Rotate(c, heads, cos, sin)
			for i := range a {
				if a[i] != b[i] || a[i] != c[i] {
					t.Fatalf("neox=%v pos=%d [%d]: RoPE %v, Apply %v, Rotate %v", neox, pos, i, a[i], b[i], c[i])
				}
			}
			for h := 0; h < heads; h++ {
				var n0, n1 float64
				for i := h * d; i < (h+1)*d; i++ {
					n0 += float64(x[i]) * float64(x[i])
					n1 += float64(a[i]) * float64(a[i])
				}
				if math.Abs(n0-n1) > 1e-5*n0 {
					t.Fatalf("pos=%d head %d: norm² %v → %v", pos, h, n0, n1)
				}
			}
			if pos == 0 {
				for i := range a {
					if a[i] != x[i] {
						t.Fatalf("position 0 changed element %d", i)
					}
				}
			}
		}
	}
}

func TestRoPETableFreqFactorsDivideTheta(t *testing.T) {
	ff := make([]float32, 4)
	for i := range ff {
		ff[i] = float32(i + 1)
	}
	tab, err := NewRoPETable(8, 500000, false, ff)
	if err != nil {
		t.Fatal(err)
	}
	for i := range ff {
		want := math.Pow(500000, -float64(2*i)/8) / float64(ff[i])
		if tab.Theta(i) != want {
			t.Errorf("θ_%d = %v want %v", i, tab.Theta(i), want)
		}
	}
	for _, bad := range []func() (*RoPETable, error){
		func() (*RoPETable, error) { return NewRoPETable(7, 1e4, false, nil) },
		func() (*RoPETable, error) { return NewRoPETable(8, 0, false, nil) },
		func() (*RoPETable, error) { return NewRoPETable(8, 1e4, false, ff[:3]) },
		func() (*RoPETable, error) { return NewRoPETable(8, 1e4, false, []float32{1, 0, 1, 1}) },
	} {
		if _, err := bad(); !errors.Is(err, ErrShape) {
			t.Errorf("bad table: %v, want ErrShape", err)
		}
	}
}
