//go:build cudaemu && cgo

package cuda

// #cgo CXXFLAGS: -std=c++20 -O2 -pthread
// #cgo LDFLAGS: -pthread -lm
// #include "emu_api.h"
import "C"

import (
	_ "embed"
	"fmt"
	"time"
	"unsafe"
)

// emulated reports whether kernels run in the CPU emulation (cudaemu).
const emulated = true

// kernelSource is kernels.cu, which emu.cc compiles with #include. It is
// embedded only so that the go command hashes it: otherwise an edit to
// kernels.cu alone would not rebuild the package, and the emulation would
// keep running the kernels of the last build.
//
//go:embed kernels.cu
var kernelSource string

// driver runs kernels.cu in the CPU emulation of emu.cc: "device" memory is
// host memory, launches run to completion before they return.
type driver struct {
	downloads [][]byte // dtohQueued's copies until releaseDownloads
}

// openDriver opens the emulated device; there is only ordinal 0.
func openDriver(ordinal int) (*driver, string, error) {
	if ordinal != 0 {
		return nil, "", fmt.Errorf("device %d requested, the emulation has 1", ordinal)
	}
	return &driver{}, "CPU emulation of kernels.cu (cudaemu)", nil
}

// SetEmulatedMemoryLimit caps the emulated device's memory at bytes (0:
// no cap): allocations beyond it fail, as on a full GPU. The emulated
// device is one per process, and so is the cap. It exists for tests of
// what the backend does when device memory runs out.
func SetEmulatedMemoryLimit(bytes int64) { C.emu_set_mem_limit(C.size_t(bytes)) }

// EmulatedMemoryInUse reports the emulated device's bytes allocated.
func EmulatedMemoryInUse() int64 { return int64(C.emu_mem_used()) }

func (*driver) bind() (func(), error) { return func() {}, nil }

func (*driver) close() error { return nil }

func (*driver) alloc(bytes int64) (uintptr, error) {
	p := C.emu_alloc(C.size_t(bytes))
	if p == 0 {
		return 0, fmt.Errorf("emulated device memory exhausted (%d bytes requested)", bytes)
	}
	return uintptr(p), nil
}

func (*driver) free(p uintptr) error {
	C.emu_free(C.uint64_t(p))
	return nil
}

func (*driver) htod(dst uintptr, src unsafe.Pointer, n int64) error {
	C.emu_copy_in(C.uint64_t(dst), src, C.size_t(n))
	return nil
}

// htodAsync is htod: emulated copies finish at once.
func (d *driver) htodAsync(dst uintptr, src unsafe.Pointer, n int64) error {
	return d.htod(dst, src, n)
}

// htodQueued is htod: emulated work finishes before the call returns.
func (d *driver) htodQueued(dst uintptr, src unsafe.Pointer, n int64) error {
	return d.htod(dst, src, n)
}

// dtohQueued copies at once (emulated work is finished when it returns)
// into memory of its own that waitDownload(i) returns.
func (d *driver) dtohQueued(src uintptr, n int64) (int, error) {
	b := make([]byte, n)
	if n > 0 {
		C.emu_copy_out(unsafe.Pointer(&b[0]), C.uint64_t(src), C.size_t(n))
	}
	d.downloads = append(d.downloads, b)
	return len(d.downloads) - 1, nil
}

func (d *driver) waitDownload(i int) (unsafe.Pointer, error) {
	if i < 0 || i >= len(d.downloads) {
		return nil, fmt.Errorf("no queued download %d", i)
	}
	return unsafe.Pointer(unsafe.SliceData(d.downloads[i])), nil
}

func (d *driver) releaseDownloads() error {
	d.downloads = nil
	return nil
}

func (*driver) dtoh(dst unsafe.Pointer, src uintptr, n int64) error {
	C.emu_copy_out(dst, C.uint64_t(src), C.size_t(n))
	return nil
}

func (*driver) dtod(dst, src uintptr, n int64) error {
	C.emu_copy_dd(C.uint64_t(dst), C.uint64_t(src), C.size_t(n))
	return nil
}

func (*driver) sync() error { return nil }

// profEvent is a timing event of the profiler (profile.go): in the
// emulation, where every operation finishes before it returns, the host
// clock when it was recorded.
type profEvent = *time.Time

func (*driver) newEvent() (profEvent, error) { return new(time.Time), nil }

func (*driver) record(e profEvent) error {
	*e = time.Now()
	return nil
}

func (*driver) elapsed(a, b profEvent) (time.Duration, error) { return b.Sub(*a), nil }

func (*driver) freeEvent(profEvent) error { return nil }

func (*driver) launch(k kernel, gx, gy, block, shared int, a *args) error {
	if rc := C.emu_launch(C.int(k), C.int(gx), C.int(gy), C.int(block), C.int(shared), (*C.uint64_t)(unsafe.Pointer(&a.v[0]))); rc != 0 {
		return fmt.Errorf("emulated launch of %s (grid %d×%d, block %d) failed (%d: -1 bad launch, -2 deadlock)", kernelNames[k], gx, gy, block, int(rc))
	}
	return nil
}

// sgemm stands in for cuBLAS SGEMM (NVIDIA's library, not emulated) with a
// plain float32 product of the same layout (emu_sgemm), so that the code
// around MatMulBLAS — shapes, buffers, the backend's "+blas" path — runs in
// the emulation; what cuBLAS itself computes is checked on a GPU only.
func (*driver) sgemm(rows, cols, n int, w, x, y uintptr) error {
	C.emu_sgemm(C.int(rows), C.int(cols), C.int(n), C.uint64_t(w), C.uint64_t(x), C.uint64_t(y))
	return nil
}
