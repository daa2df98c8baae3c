package kernels

import (
	"fmt"
	"unsafe"
)

// FMAPeakFLOPs runs iters iterations of a register-only loop of independent
// 8-wide float32 fused multiply-adds (AVX2/FMA on amd64; scalar elsewhere)
// on the calling goroutine and returns the FLOPs it performed (192 per
// iteration, a multiply-add counting two). Timing it on one or several
// goroutines gives the machine's float32 peak, the yardstick of
// `blendrag bench kernels`.
func FMAPeakFLOPs(iters int) float64 {
	if iters <= 0 {
		return 0
	}
	fmaLoop(iters)
	return 192 * float64(iters)
}

// ReadSweep reads every byte of buf (len(buf) must be a multiple of 128)
// with wide loads and returns a checksum of them, so that timing it measures
// memory read bandwidth.
func ReadSweep(buf []byte) (uint64, error) {
	if len(buf)%128 != 0 {
		return 0, fmt.Errorf("read sweep of %d bytes: not a multiple of 128: %w", len(buf), ErrShape)
	}
	if len(buf) == 0 {
		return 0, nil
	}
	return readSweep(unsafe.SliceData(buf), len(buf)), nil
}
