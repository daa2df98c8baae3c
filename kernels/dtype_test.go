package kernels

import (
	"errors"
	"testing"
)

func TestDTypeGeometryMatchesGGML(t *testing.T) {
	cases := []struct {
		t         DType
		id        uint32
		name      string
		block, sz int
	}{
		{F32, 0, "F32", 1, 4},
		{F16, 1, "F16", 1, 2},
		{Q4_0, 2, "Q4_0", 32, 18},
		{Q4_1, 3, "Q4_1", 32, 20},
		{Q5_0, 6, "Q5_0", 32, 22},
		{Q5_1, 7, "Q5_1", 32, 24},
		{Q8_0, 8, "Q8_0", 32, 34},
		{Q8_1, 9, "Q8_1", 32, 36},
		{Q4_K, 12, "Q4_K", 256, 144},
		{Q5_K, 13, "Q5_K", 256, 176},
		{Q6_K, 14, "Q6_K", 256, 210},
		{Q8_K, 15, "Q8_K", 256, 292},
		{BF16, 30, "BF16", 1, 2},
	}
	for _, c := range cases {
		if uint32(c.t) != c.id || c.t.String() != c.name || !c.t.Valid() ||
			c.t.BlockSize() != c.block || c.t.BlockBytes() != c.sz {
			t.Errorf("%v: id %d name %q valid %v block %d bytes %d; want %d %q true %d %d",
				c.t, uint32(c.t), c.t.String(), c.t.Valid(), c.t.BlockSize(), c.t.BlockBytes(), c.id, c.name, c.block, c.sz)
		}
		rb, err := c.t.RowBytes(3 * c.block)
		if err != nil || rb != 3*c.sz {
			t.Errorf("%v.RowBytes(%d) = %d, %v; want %d", c.t, 3*c.block, rb, err, 3*c.sz)
		}
	}
}

func TestRowBytesRejectsRaggedCountsAndUnknownTypes(t *testing.T) {
	if _, err := Q4_1.RowBytes(33); !errors.Is(err, ErrShape) {
		t.Errorf("Q4_1.RowBytes(33) error = %v, want ErrShape", err)
	}
	if _, err := Q4_K.RowBytes(-256); !errors.Is(err, ErrShape) {
		t.Errorf("Q4_K.RowBytes(-256) error = %v, want ErrShape", err)
	}
	bad := DType(4) // Q4_2, removed from ggml
	if bad.Valid() || bad.BlockSize() != 0 || bad.String() != "DType(4)" {
		t.Errorf("DType(4): valid %v block %d name %q", bad.Valid(), bad.BlockSize(), bad.String())
	}
	if _, err := bad.RowBytes(32); !errors.Is(err, ErrUnsupported) {
		t.Errorf("DType(4).RowBytes error = %v, want ErrUnsupported", err)
	}
}
