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
	if err := d.do(func() error { return d.drv.dtod(dst.ptr, src.ptr, bytes) }); err != nil {
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
	n := int64(len(src)) * 4
	if dst == nil || n > dst.size {
		return fmt.Errorf("cuda: asynchronous upload of %d bytes into a buffer of %d: %w", n, sizeOf(dst), kernels.ErrShape)
	}
	if n == 0 {
		return nil
	}
	if err := d.do(func() error { return d.drv.htodAsync(dst.ptr, unsafe.Pointer(&src[0]), n) }); err != nil {
		return fmt.Errorf("cuda: asynchronous upload (%d bytes): %w", n, err)
	}
	return nil
}
