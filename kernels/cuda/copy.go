//go:build (cuda || cudaemu) && cgo

package cuda

import (
	"fmt"

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
