package binfile

import (
	"errors"
	"strings"
	"testing"
)

func sample() []byte {
	w := NewWriter("TESTMAGC", 3, 0)
	w.U8(7)
	w.U16(513)
	w.U32(1 << 30)
	w.F32(-1.5)
	w.F64(3.25)
	w.String("héllo")
	return w.Finish()
}

func TestRoundTripReadsWhatWasWritten(t *testing.T) {
	r, err := NewReader(sample(), "TESTMAGC", 3)
	if err != nil {
		t.Fatal(err)
	}
	if a, b, c, d, e, f := r.U8(), r.U16(), r.U32(), r.F32(), r.F64(), r.String(); a != 7 || b != 513 || c != 1<<30 || d != -1.5 || e != 3.25 || f != "héllo" {
		t.Fatalf("read %v %v %v %v %v %q", a, b, c, d, e, f)
	}
	if err := r.Done(); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptionIsDetected(t *testing.T) {
	good := sample()
	flipped := append([]byte(nil), good...)
	flipped[12] ^= 0x10
	for name, tc := range map[string]struct {
		data    []byte
		magic   string
		version uint32
		want    string
	}{
		"flipped":   {flipped, "TESTMAGC", 3, "checksum"},
		"truncated": {good[:len(good)-1], "TESTMAGC", 3, "checksum"},
		"magic":     {good, "OTHERMAG", 3, "magic"},
		"version":   {good, "TESTMAGC", 4, "version"},
		"empty":     {nil, "TESTMAGC", 3, "magic"},
	} {
		if _, err := NewReader(tc.data, tc.magic, tc.version); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one mentioning %q", name, err, tc.want)
		}
	}
}

func TestReadPastEndIsTruncatedAndTrailingBytesReported(t *testing.T) {
	r, _ := NewReader(sample(), "TESTMAGC", 3)
	r.Take(r.Remaining() - 1)
	if err := r.Done(); err == nil {
		t.Fatal("Done accepted a trailing byte")
	}
	r.U32()
	if !errors.Is(r.Err(), ErrTruncated) || !errors.Is(r.Done(), ErrTruncated) {
		t.Fatalf("err = %v, want ErrTruncated", r.Err())
	}
	if r.String() != "" {
		t.Fatal("read after error returned data")
	}
}
