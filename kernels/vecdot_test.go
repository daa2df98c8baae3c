package kernels

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// TestVecDotMatchesDequantizedDot checks every type's dot product against
// float64 arithmetic on dequantized values, for several lengths (multiples
// of the block size, not of any unrolling):
//
//   - tightly against Σ w·x̂, with x̂ the dequantized activations: only
//     float32 rounding may differ (plus, for Q8_1 activations, the fp16
//     rounding of the block sums s that ggml uses for the min term);
//   - loosely against Σ w·x with the original x, within the activation
//     quantisation error Σ |w|·|x − x̂|.
func TestVecDotMatchesDequantizedDot(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, wt := range allDotTypes {
		bs := wt.BlockSize()
		lens := []int{32, 96, 256, 288, 1024, 1536}
		if bs == 256 {
			lens = []int{256, 768, 1536}
		}
		for _, n := range lens {
			t.Run(fmt.Sprintf("%v/n=%d", wt, n), func(t *testing.T) {
				at, _ := ActType(wt)
				for trial := 0; trial < 4; trial++ {
					row := randomRows(rng, wt, 1, n)
					x := randomActs(rng, 1, n)
					act := make([]byte, mustRowBytes(at, n))
					if err := QuantizeActs(wt, x, act); err != nil {
						t.Fatal(err)
					}
					got, err := VecDot(wt, row, act, n)
					if err != nil {
						t.Fatal(err)
					}
					w := make([]float32, n)
					if err := Dequantize(wt, row, w); err != nil {
						t.Fatal(err)
					}
					xq, s, dsum := dequantActs(at, act, n)
					var ref, refAbs, exact, qerr float64
					for k := range w {
						ref += float64(w[k]) * xq[k]
						refAbs += math.Abs(float64(w[k]) * xq[k])
						exact += float64(w[k]) * float64(x[k])
						qerr += math.Abs(float64(w[k])) * math.Abs(xq[k]-float64(x[k]))
					}
					// ggml's Q4_1/Q5_1 dot uses m·s with s = fp16(d·Σq) instead
					// of m·fp16(d)·Σq.
					var sTerm float64
					if at == Q8_1 {
						bb := wt.BlockBytes()
						for b := range s {
							m := float64(F16ToF32(uint16(row[b*bb+2]) | uint16(row[b*bb+3])<<8))
							sTerm += math.Abs(m) * math.Abs(s[b]-dsum[b])
						}
					}
					tight := 2e-5*refAbs + sTerm + 1e-30
					if d := math.Abs(float64(got) - ref); d > tight {
						t.Errorf("trial %d: VecDot %v, Σ w·x̂ %v: |diff| %g > %g", trial, got, ref, d, tight)
					}
					loose := qerr + tight + 1e-6*refAbs
					if d := math.Abs(float64(got) - exact); d > loose {
						t.Errorf("trial %d: VecDot %v, Σ w·x %v: |diff| %g > quantisation bound %g", trial, got, exact, d, loose)
					}
				}
			})
		}
	}
}

// TestSWARDotEqualsReferenceDotBitwise checks that the portable SWAR kernels
// MatMul uses (unpacked and fused) return exactly what VecDot returns, including for extreme
// values (all nibbles 15, activations ±127) where lane carries would show.
func TestSWARDotEqualsReferenceDotBitwise(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, wt := range []DType{Q4_0, Q4_1, Q5_0, Q5_1, Q8_0} {
		for trial := 0; trial < 200; trial++ {
			n := 32 * (1 + rng.IntN(8))
			row := randomRows(rng, wt, 1, n)
			x := randomActs(rng, 1, n)
			switch trial % 4 {
			case 1: // largest unsigned weights, largest activations
				for i := range row {
					if !isScaleByte(wt, i) {
						row[i] = 0xff
					}
				}
				for i := range x {
					x[i] = 1
				}
			case 2: // Q8_0 weights at −128/127, activations of alternating sign
				for i := range row {
					if !isScaleByte(wt, i) {
						row[i] = byte(0x80 | (i & 1))
					}
				}
				for i := range x {
					x[i] = float32(1 - 2*(i&1))
				}
			}
			act := make([]byte, mustRowBytes(mustAct(wt), n))
			if err := QuantizeActs(wt, x, act); err != nil {
				t.Fatal(err)
			}
			want, err := VecDot(wt, row, act, n)
			if err != nil {
				t.Fatal(err)
			}
			packed := make([]actBlock, n/32)
			packActs(x, packed)
			var got float32
			if wt == Q8_0 {
				wq := make([]wBlock8, n/32)
				for i := range wq {
					unpackQ8(row[34*i:], &wq[i])
				}
				got = swarDotQ8_0(wq, packed)
			} else {
				wq := make([]wBlock, n/32)
				unpackRow(wt, row, wq)
				switch wt {
				case Q4_0:
					got = swarDotQ4_0(wq, packed)
				case Q4_1:
					got = swarDotQ4_1(wq, packed)
				case Q5_0:
					got = swarDotQ5_0(wq, packed)
				case Q5_1:
					got = swarDotQ5_1(wq, packed)
				}
			}
			if !sameBits(got, want) {
				t.Fatalf("%v trial %d n=%d: SWAR %v (%#08x), reference %v (%#08x)", wt, trial, n, got, math.Float32bits(got), want, math.Float32bits(want))
			}
			fused := want
			switch wt {
			case Q4_0:
				fused = fusedDotQ4_0(row, packed)
			case Q4_1:
				fused = fusedDotQ4_1(row, packed)
			case Q8_0:
				fused = fusedDotQ8_0(row, packed)
			}
			if !sameBits(fused, want) {
				t.Fatalf("%v trial %d n=%d: fused SWAR %v, reference %v", wt, trial, n, fused, want)
			}
		}
	}
}

func isScaleByte(t DType, i int) bool {
	off := i % t.BlockBytes()
	for _, s := range scaleOffsets(t) {
		if off == s || off == s+1 {
			return true
		}
	}
	return false
}

func mustAct(t DType) DType {
	at, err := ActType(t)
	if err != nil {
		panic(err)
	}
	return at
}

func TestVecDotRejectsMismatchedLengths(t *testing.T) {
	row := make([]byte, 40)
	act := make([]byte, 72)
	if _, err := VecDot(Q4_1, row, act, 64); err != nil {
		t.Fatalf("valid shapes: %v", err)
	}
	if _, err := VecDot(Q4_1, row[:39], act, 64); !errors.Is(err, ErrShape) {
		t.Errorf("short row: %v", err)
	}
	if _, err := VecDot(Q4_1, row, act[:70], 64); !errors.Is(err, ErrShape) {
		t.Errorf("short act: %v", err)
	}
	if _, err := VecDot(Q8_1, row, act, 64); !errors.Is(err, ErrUnsupported) {
		t.Errorf("Q8_1 weights: %v", err)
	}
}

func TestDequantizeQuantizeVecDotAllocateNothing(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	for _, wt := range allDotTypes {
		n := 512
		row := randomRows(rng, wt, 1, n)
		x := randomActs(rng, 1, n)
		w := make([]float32, n)
		act := make([]byte, mustRowBytes(mustAct(wt), n))
		a := testing.AllocsPerRun(10, func() {
			if err := Dequantize(wt, row, w); err != nil {
				t.Fatal(err)
			}
			if err := QuantizeActs(wt, x, act); err != nil {
				t.Fatal(err)
			}
			if _, err := VecDot(wt, row, act, n); err != nil {
				t.Fatal(err)
			}
		})
		if a != 0 {
			t.Errorf("%v: %v allocations", wt, a)
		}
	}
}
