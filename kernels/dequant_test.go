package kernels

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"os"
	"testing"
)

// golden is kernels/testdata/dequant_golden.json, written by
// testdata/make_golden.py from the PyPI gguf package.
type golden struct {
	Dequantize []struct {
		Type     string `json:"type"`
		GGMLType uint32 `json:"ggml_type"`
		N        int    `json:"n"`
		Raw      []byte `json:"raw"`
		WantBits []byte `json:"want_f32_bits"`
	} `json:"dequantize"`
	F32ToF16 struct {
		In   []byte `json:"in_f32_bits"`
		Want []byte `json:"want_f16_bits"`
	} `json:"f32_to_f16"`
	F32ToBF16 struct {
		In   []byte `json:"in_f32_bits"`
		Want []byte `json:"want_bf16_bits"`
	} `json:"f32_to_bf16"`
	QuantizeQ8_0 struct {
		In   []byte `json:"in_f32_bits"`
		Want []byte `json:"want_raw"`
	} `json:"quantize_q8_0"`
}

func loadGolden(t *testing.T) *golden {
	t.Helper()
	data, err := os.ReadFile("testdata/dequant_golden.json")
	if err != nil {
		t.Fatalf("read golden file (regenerate with python3 kernels/testdata/make_golden.py): %v", err)
	}
	var g golden
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatalf("parse golden file: %v", err)
	}
	return &g
}

func f32s(b []byte) []float32 {
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

func TestDequantizeMatchesGGUFReference(t *testing.T) {
	g := loadGolden(t)
	seen := map[DType]bool{}
	for _, c := range g.Dequantize {
		dt := DType(c.GGMLType)
		t.Run(c.Type, func(t *testing.T) {
			if dt.String() != c.Type {
				t.Fatalf("ggml type %d is %v here, %s in the golden file", c.GGMLType, dt, c.Type)
			}
			want := f32s(c.WantBits)
			if len(want) != c.N {
				t.Fatalf("golden has %d values, says n=%d", len(want), c.N)
			}
			got := make([]float32, c.N)
			if err := Dequantize(dt, c.Raw, got); err != nil {
				t.Fatal(err)
			}
			bad := 0
			for i := range want {
				if !sameBits(got[i], want[i]) {
					if bad < 5 {
						t.Errorf("element %d: got %v (%#08x), gguf %v (%#08x)", i, got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
					}
					bad++
				}
			}
			if bad > 0 {
				t.Errorf("%d of %d values differ", bad, len(want))
			}
		})
		seen[dt] = true
	}
	for _, dt := range []DType{F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K} {
		if !seen[dt] {
			t.Errorf("golden file has no %v case", dt)
		}
	}
}

func TestDequantizeRejectsBadShapesAndTypes(t *testing.T) {
	dst := make([]float32, 64)
	if err := Dequantize(Q4_0, make([]byte, 35), dst); !errors.Is(err, ErrShape) {
		t.Errorf("short src: %v, want ErrShape", err)
	}
	if err := Dequantize(Q4_0, make([]byte, 18), dst[:31]); !errors.Is(err, ErrShape) {
		t.Errorf("ragged dst: %v, want ErrShape", err)
	}
	if err := Dequantize(Q8_K, make([]byte, 292), make([]float32, 256)); !errors.Is(err, ErrUnsupported) {
		t.Errorf("Q8_K: %v, want ErrUnsupported", err)
	}
	if err := Dequantize(DType(99), nil, nil); !errors.Is(err, ErrUnsupported) {
		t.Errorf("DType(99): %v, want ErrUnsupported", err)
	}
}

func TestF32ToF16MatchesNumpyRoundToNearestEven(t *testing.T) {
	g := loadGolden(t)
	in := f32s(g.F32ToF16.In)
	for i, f := range in {
		want := binary.LittleEndian.Uint16(g.F32ToF16.Want[2*i:])
		got := F32ToF16(f)
		isNaN := want&0x7c00 == 0x7c00 && want&0x3ff != 0
		if isNaN {
			if got&0x7c00 != 0x7c00 || got&0x3ff == 0 || got&0x8000 != want&0x8000 {
				t.Errorf("F32ToF16(%v) = %#04x, numpy %#04x (NaN)", f, got, want)
			}
			continue
		}
		if got != want {
			t.Errorf("F32ToF16(%v [%#08x]) = %#04x, numpy %#04x", f, math.Float32bits(f), got, want)
		}
	}
}

func TestF32ToBF16MatchesGGUFReference(t *testing.T) {
	g := loadGolden(t)
	in := f32s(g.F32ToBF16.In)
	for i, f := range in {
		want := binary.LittleEndian.Uint16(g.F32ToBF16.Want[2*i:])
		if got := F32ToBF16(f); got != want {
			t.Errorf("F32ToBF16(%v [%#08x]) = %#04x, gguf %#04x", f, math.Float32bits(f), got, want)
		}
	}
}

func TestF16ToF32RoundTripsEveryHalf(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		f := F16ToF32(uint16(h))
		isNaN := h&0x7c00 == 0x7c00 && h&0x3ff != 0
		if isNaN != (f != f) {
			t.Fatalf("F16ToF32(%#04x) = %v, NaN-ness wrong", h, f)
		}
		back := F32ToF16(f)
		if isNaN {
			// The quiet bit gets set; sign and the rest of the payload survive.
			if back != uint16(h)|0x200 {
				t.Fatalf("NaN %#04x round-trips to %#04x", h, back)
			}
			continue
		}
		if back != uint16(h) {
			t.Fatalf("F16 %#04x → %v → %#04x", h, f, back)
		}
		// Check the value independently: (−1)^s · 2^(e−15) · (1 + m/1024), or
		// subnormal 2^−14 · m/1024.
		e, m := h>>10&0x1f, h&0x3ff
		var want float64
		switch {
		case e == 0x1f:
			want = math.Inf(1)
		case e == 0:
			want = math.Ldexp(float64(m), -24)
		default:
			want = math.Ldexp(1+float64(m)/1024, int(e)-15)
		}
		if h&0x8000 != 0 {
			want = -want
		}
		if float64(f) != want {
			t.Fatalf("F16ToF32(%#04x) = %v, want %v", h, f, want)
		}
	}
}

func TestF32ToF16RoundsToNearestEven(t *testing.T) {
	// Exhaustively around every representable half, check that the float32
	// values strictly between two neighbours round to the nearer one, and the
	// midpoint to the even one.
	for h := uint16(0); h < 0x7bff; h++ {
		lo, hi := float64(F16ToF32(h)), float64(F16ToF32(h+1))
		mid := (lo + hi) / 2
		below := math.Nextafter32(float32(mid), float32(lo))
		above := math.Nextafter32(float32(mid), float32(hi))
		if got := F32ToF16(below); got != h {
			t.Fatalf("just below midpoint of %#04x,%#04x: got %#04x", h, h+1, got)
		}
		if got := F32ToF16(above); got != h+1 {
			t.Fatalf("just above midpoint of %#04x,%#04x: got %#04x", h, h+1, got)
		}
		even := h
		if h&1 == 1 {
			even = h + 1
		}
		if got := F32ToF16(float32(mid)); got != even {
			t.Fatalf("midpoint of %#04x,%#04x: got %#04x, want %#04x", h, h+1, got, even)
		}
	}
	if got := F32ToF16(65520); got != 0x7c00 {
		t.Errorf("65520 → %#04x, want Inf", got)
	}
	if got := F32ToF16(-1e10); got != 0xfc00 {
		t.Errorf("-1e10 → %#04x, want -Inf", got)
	}
}
