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

// TestUploadF32AsyncIsSeenByLaterWork: buffers uploaded asynchronously —
// more in all than the pinned staging memory holds, so it is reused — are
// what a later download reads, each with its own content, although the
// host reuses its source slice between uploads.
func TestUploadF32AsyncIsSeenByLaterWork(t *testing.T) {
	d := openDevice(t)
	const n = 6 << 20 // floats: 24 MiB per upload, 96 MiB in all
	src := make([]float32, n)
	var bufs []*Buffer
	for i := range 4 {
		for j := range src {
			src[j] = float32(i*7 + j%1000)
		}
		b, err := d.Alloc(n * 4)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Free(b)
		if err := d.UploadF32Async(b, src); err != nil {
			t.Fatal(err)
		}
		bufs = append(bufs, b)
	}
	got := make([]float32, n)
	for i, b := range bufs {
		if err := d.DownloadF32(got, b); err != nil {
			t.Fatal(err)
		}
		for j := 0; j < n; j += 4099 {
			if want := float32(i*7 + j%1000); got[j] != want {
				t.Fatalf("upload %d element %d: %v, want %v", i, j, got[j], want)
			}
		}
	}
	small := devF32s(t, d, []float32{1})
	if err := d.UploadF32Async(small, []float32{1, 2}); !errors.Is(err, kernels.ErrShape) {
		t.Errorf("uploading 2 floats into a 1-float buffer: %v, want ErrShape", err)
	}
}
