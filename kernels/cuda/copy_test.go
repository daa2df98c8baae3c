//go:build (cuda || cudaemu) && cgo

package cuda

import (
	"errors"
	"slices"
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

// TestUploadF32QueuedKeepsTheDeviceOrder: a queued upload into a buffer
// that earlier kernels and copies read does not overtake them, later work
// sees the new data, and the host may rewrite the source at once — over
// more data in all than the staging memory holds.
func TestUploadF32QueuedKeepsTheDeviceOrder(t *testing.T) {
	d := openDevice(t)
	const (
		n      = 4 << 20 // floats: 16 MiB per upload
		rounds = 6
		added  = 4096 // floats the kernel reads (the emulation is slow)
	)
	pattern := func(i, j int) float32 { return float32(i + j%7) }
	src := make([]float32, n)
	b := devF32s(t, d, src)
	acc := devF32s(t, d, src[:added])
	var snaps []*Buffer
	for i := range rounds {
		snap, err := d.Alloc(n * 4)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = d.Free(snap) })
		snaps = append(snaps, snap)
		if err := d.Copy(snap, b, n*4); err != nil { // reads the previous upload
			t.Fatal(err)
		}
		if err := d.Add(acc, b, added); err != nil { // so does this kernel
			t.Fatal(err)
		}
		for j := range src {
			src[j] = pattern(i, j)
		}
		if err := d.UploadF32Queued(b, src); err != nil {
			t.Fatal(err)
		}
		clear(src) // the host reuses its slice at once
	}
	if err := d.Add(acc, b, added); err != nil { // sees the last upload
		t.Fatal(err)
	}
	for i, snap := range snaps {
		got := download(t, d, snap, n)
		for j := range got {
			if want := pattern(i-1, j); (i == 0 && got[j] != 0) || (i > 0 && got[j] != want) {
				t.Fatalf("copy %d, float %d: %v, want the upload before it", i, j, got[j])
			}
		}
	}
	got := download(t, d, acc, added)
	for j := range got {
		var want float32
		for i := range rounds {
			want += pattern(i, j)
		}
		if got[j] != want {
			t.Fatalf("acc[%d] = %v, want %v", j, got[j], want)
		}
	}
	if err := d.UploadF32Queued(b, make([]float32, n+1)); !errors.Is(err, kernels.ErrShape) {
		t.Errorf("queued upload larger than the buffer: %v, want ErrShape", err)
	}
}

// TestDownloadF32QueuedSeesTheWorkBeforeIt: queued downloads of a buffer
// that kernels keep changing — more in all than one block of pinned memory —
// each give the values after the work queued before them, also after their
// memory was released and reused; a download beyond the buffer is refused.
func TestDownloadF32QueuedSeesTheWorkBeforeIt(t *testing.T) {
	d := openDevice(t)
	const n = 3 << 20 // floats: 12 MiB per download
	src := make([]float32, n)
	for j := range src {
		src[j] = float32(j % 1000)
	}
	b := devF32s(t, d, src)
	one := devF32s(t, d, make([]float32, n))
	if err := d.UploadF32(one, slices.Repeat([]float32{1}, n)); err != nil {
		t.Fatal(err)
	}
	for round := range 2 {
		var dls []Download
		for range 4 {
			if err := d.Add(b, one, n); err != nil {
				t.Fatal(err)
			}
			dl, err := d.DownloadF32Queued(b, n)
			if err != nil {
				t.Fatal(err)
			}
			dls = append(dls, dl)
		}
		for i, dl := range dls {
			got, err := d.WaitDownload(dl)
			if err != nil {
				t.Fatal(err)
			}
			added := float32(round*4 + i + 1)
			for j := range got {
				if got[j] != float32(j%1000)+added {
					t.Fatalf("round %d, download %d: value %d is %v, want %v", round, i, j, got[j], float32(j%1000)+added)
				}
			}
		}
		if err := d.ReleaseDownloads(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.DownloadF32Queued(b, n+1); !errors.Is(err, kernels.ErrShape) {
		t.Errorf("download beyond the buffer: %v, want ErrShape", err)
	}
}
