//go:build (cuda || cudaemu) && cgo

package cuda

import (
	"errors"
	"testing"

	"github.com/blendrag/blendrag/kernels"
)

// TestCopyMovesBytesBetweenViews: Copy writes exactly the requested range
// of the destination view, leaves the rest of the buffer alone, and
// refuses a range larger than either buffer.
func TestCopyMovesBytesBetweenViews(t *testing.T) {
	d := openDevice(t)
	src := devF32s(t, d, []float32{1, 2, 3, 4, 5, 6})
	dst := devF32s(t, d, []float32{0, 0, 0, 0, 0, 0})
	from, err := src.View(4, 12) // 2, 3, 4
	if err != nil {
		t.Fatal(err)
	}
	to, err := dst.View(8, 16)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Copy(to, from, 12); err != nil {
		t.Fatal(err)
	}
	got := download(t, d, dst, 6)
	want := []float32{0, 0, 2, 3, 4, 0}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("after Copy: %v, want %v", got, want)
		}
	}
	if err := d.Copy(to, src, 20); !errors.Is(err, kernels.ErrShape) {
		t.Errorf("copying 20 bytes into a 16-byte view: %v, want ErrShape", err)
	}
}
