//go:build (cuda || cudaemu) && cgo

package cuda

import (
	"fmt"
	"unsafe"

	"github.com/blendrag/blendrag/kernels"
)

// Copy copies the first bytes bytes of src to the start of dst on the
// device. It is queued after the kernels already launched and does not
// wait for the copy to finish (Download and Sync do). The two ranges must
// not overlap.
func (d *Device) Copy(dst, src *Buffer, bytes int64) error {
	if dst == nil || src == nil || bytes < 0 || bytes > dst.size || bytes > src.size {
		return fmt.Errorf("cuda: copy %d bytes from a buffer of %d into one of %d: %w", bytes, sizeOf(src), sizeOf(dst), kernels.ErrShape)
	}
	if bytes == 0 {
		return nil
	}
	if err := d.do(func() error {
		return d.timed("copy", bytes, func() error { return d.drv.dtod(dst.ptr, src.ptr, bytes) })
	}); err != nil {
		return fmt.Errorf("cuda: device copy of %d bytes: %w", bytes, err)
	}
	return nil
}

// UploadF32Async copies src into the start of dst without waiting for the
// kernels queued before it: on a GPU through pinned staging memory and a
// copy stream of the device's own, so the host goes on while the copy
// runs, and work queued after the call (kernels, copies, downloads) sees
// the data. src may be reused as soon as it returns. dst must not be read
// or written by work queued before the call — a freshly allocated buffer
// is the intended use.
func (d *Device) UploadF32Async(dst *Buffer, src []float32) error {
	if len(src) == 0 {
		return nil
	}
	return d.uploadStaged("asynchronous upload", "upload_async", dst, unsafe.Pointer(&src[0]), int64(len(src))*4, d.drv.htodAsync)
}

// UploadF32Queued copies src into the start of dst in order with the
// device's other work — after the kernels and copies queued before it,
// before those queued after — like UploadF32, but without waiting for the
// work queued before it: the host goes on as soon as src is staged (in
// pinned memory, on a GPU), and src may be reused when it returns. A copy
// larger than the staging memory (64 MiB) waits as UploadF32 does.
func (d *Device) UploadF32Queued(dst *Buffer, src []float32) error {
	if len(src) == 0 {
		return nil
	}
	return d.uploadStaged("queued upload", "upload_queued", dst, unsafe.Pointer(&src[0]), int64(len(src))*4, d.drv.htodQueued)
}

// UploadI32Queued is UploadF32Queued for int32 values.
func (d *Device) UploadI32Queued(dst *Buffer, src []int32) error {
	if len(src) == 0 {
		return nil
	}
	return d.uploadStaged("queued upload", "upload_queued", dst, unsafe.Pointer(&src[0]), int64(len(src))*4, d.drv.htodQueued)
}

// uploadStaged checks and runs one of the driver's staged uploads, htod,
// of the n > 0 bytes at src, named what in errors and op in profiles.
func (d *Device) uploadStaged(what, op string, dst *Buffer, src unsafe.Pointer, n int64, htod func(dst uintptr, src unsafe.Pointer, n int64) error) error {
	if dst == nil || n > dst.size {
		return fmt.Errorf("cuda: %s of %d bytes into a buffer of %d: %w", what, n, sizeOf(dst), kernels.ErrShape)
	}
	if err := d.do(func() error {
		return d.timed(op, n, func() error { return htod(dst.ptr, src, n) })
	}); err != nil {
		return fmt.Errorf("cuda: %s (%d bytes): %w", what, n, err)
	}
	return nil
}

// Download is a copy from the device queued by DownloadF32Queued.
type Download struct {
	i, n int
}

// DownloadF32Queued queues a copy of the first n float32 values of src to
// host memory of the device's own (pinned, on a GPU) after the work queued
// so far — which may still be writing src — without waiting for it; the
// copy runs beside the work queued later, on a stream of its own. Work
// queued later must not write those values before WaitDownload returns.
// WaitDownload then gives the values.
func (d *Device) DownloadF32Queued(src *Buffer, n int) (Download, error) {
	if n <= 0 || src == nil || int64(n)*4 > src.size {
		return Download{}, fmt.Errorf("cuda: queued download of %d float32s from a buffer of %d bytes: %w", n, sizeOf(src), kernels.ErrShape)
	}
	var i int
	err := d.do(func() error {
		return d.timed("download_queued", int64(n)*4, func() error {
			var err error
			i, err = d.drv.dtohQueued(src.ptr, int64(n)*4)
			return err
		})
	})
	if err != nil {
		return Download{}, fmt.Errorf("cuda: queued download (%d bytes): %w", n*4, err)
	}
	return Download{i: i, n: n}, nil
}

// WaitDownload waits for a queued download and returns its values: memory
// of the device's, read-only, valid until ReleaseDownloads.
func (d *Device) WaitDownload(dl Download) ([]float32, error) {
	var p unsafe.Pointer
	err := d.do(func() error {
		var err error
		p, err = d.drv.waitDownload(dl.i)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("cuda: waiting for a download: %w", err)
	}
	return unsafe.Slice((*float32)(p), dl.n), nil
}

// ReleaseDownloads waits for every queued download and makes their memory
// free for the next ones; the slices WaitDownload returned become invalid.
func (d *Device) ReleaseDownloads() error {
	if err := d.do(d.drv.releaseDownloads); err != nil {
		return fmt.Errorf("cuda: releasing downloads: %w", err)
	}
	return nil
}
