//go:build !amd64

package kernels

import (
	"runtime"
	"unsafe"
)

// fmaLoop is the portable stand-in for the AVX2 FMA probe: the same FLOP
// count in scalar float32 multiply-adds.
func fmaLoop(iters int) {
	var acc [24]float32
	a, b := float32(1.0000001), float32(0.9999999)
	for i := 0; i < iters; i++ {
		for k := 0; k < 96; k++ {
			acc[k%24] += a * b
		}
	}
	runtime.KeepAlive(&acc)
}

// readSweep xors n bytes (a multiple of 128) eight at a time.
func readSweep(p *byte, n int) uint64 {
	b := unsafe.Slice(p, n)
	var x uint64
	for i := 0; i+8 <= n; i += 8 {
		x ^= le64(b[i:])
	}
	return x
}
