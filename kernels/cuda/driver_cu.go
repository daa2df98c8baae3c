//go:build cuda && !cudaemu && cgo

package cuda

import (
	_ "embed"
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"
	"unsafe"

	"gorgonia.org/cu"
)

// ptx is kernels.cu compiled by gen.sh.
//
//go:embed kernels.ptx
var ptx string

// emulated reports whether kernels run in the CPU emulation (cudaemu).
const emulated = false

// driver is one GPU through gorgonia.org/cu: its primary context, the
// kernels' module and, once MatMulBLAS needs it, a cuBLAS handle. Calls
// other than openDriver must run between bind and the function bind
// returns.
type driver struct {
	dev   cu.Device
	ctx   cu.CUContext
	mod   cu.Module
	fns   [numKernels]cu.Function
	blas  *cublas    // nil until the first sgemm
	stage stager     // asynchronous uploads (htodAsync)
	down  downloader // asynchronous downloads (dtohQueued)
}

// openDriver initialises GPU ordinal and returns it with its name.
func openDriver(ordinal int) (*driver, string, error) {
	if err := initError(); err != nil {
		return nil, "", err
	}
	n, err := cu.NumDevices()
	if err != nil {
		return nil, "", fmt.Errorf("counting devices: %w", err)
	}
	if ordinal < 0 || ordinal >= n {
		return nil, "", fmt.Errorf("device %d requested, %d present", ordinal, n)
	}
	dev, err := cu.GetDevice(ordinal)
	if err != nil {
		return nil, "", err
	}
	name, err := dev.Name()
	if err != nil {
		return nil, "", fmt.Errorf("device name: %w", err)
	}
	ctx, err := dev.RetainPrimaryCtx()
	if err != nil {
		return nil, "", fmt.Errorf("retaining the primary context: %w", err)
	}
	drv := &driver{dev: dev, ctx: ctx}
	unbind, err := drv.bind()
	if err != nil {
		return nil, "", errors.Join(err, dev.ReleasePrimaryCtx())
	}
	err = drv.load()
	unbind()
	if err != nil {
		return nil, "", errors.Join(err, drv.close())
	}
	return drv, name, nil
}

// load loads the kernels' module and its kernels: the embedded PTX, or the
// PTX, cubin or fatbin file named by $BLENDRAG_CUDA_MODULE (for checking a
// module compiled on the GPU host with its own nvcc, e.g.
// nvcc -cubin -arch=sm_90 --fmad=false -O3 kernels.cu).
func (drv *driver) load() error {
	image, src := ptx, "the embedded PTX module"
	if p := os.Getenv("BLENDRAG_CUDA_MODULE"); p != "" {
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("$BLENDRAG_CUDA_MODULE: %w", err)
		}
		image, src = string(b), p
	}
	mod, err := cu.LoadData(image)
	if err != nil {
		return fmt.Errorf("loading %s: %w", src, err)
	}
	drv.mod = mod
	for k, name := range kernelNames {
		if drv.fns[k], err = mod.Function(name); err != nil {
			return fmt.Errorf("kernel %s: %w", name, err)
		}
	}
	return nil
}

// bind makes the context current on the calling goroutine's (locked) OS
// thread; the returned function unlocks the thread.
func (drv *driver) bind() (func(), error) {
	runtime.LockOSThread()
	if err := cu.SetCurrentContext(drv.ctx); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("binding the context: %w", err)
	}
	return runtime.UnlockOSThread, nil
}

// close releases cuBLAS, the module and the primary context.
func (drv *driver) close() error {
	unbind, err := drv.bind()
	if err != nil {
		return err
	}
	defer unbind()
	var errs []error
	errs = append(errs, drv.stage.close(), drv.down.close())
	if drv.blas != nil {
		errs = append(errs, drv.blas.close())
	}
	var zero cu.Module
	if drv.mod != zero {
		errs = append(errs, drv.mod.Unload())
	}
	errs = append(errs, drv.dev.ReleasePrimaryCtx())
	return errors.Join(errs...)
}

func (drv *driver) alloc(bytes int64) (uintptr, error) {
	p, err := cu.MemAlloc(bytes)
	return uintptr(p), err
}

func (drv *driver) free(p uintptr) error { return cu.MemFree(cu.DevicePtr(p)) }

func (drv *driver) htod(dst uintptr, src unsafe.Pointer, n int64) error {
	return cu.MemcpyHtoD(cu.DevicePtr(dst), src, n)
}

// htodAsync queues a copy of n bytes at src to dst without waiting for
// the queued kernels: src may be reused when it returns, and work queued
// after it on the default stream sees the data. dst must not be in use by
// work queued before.
func (drv *driver) htodAsync(dst uintptr, src unsafe.Pointer, n int64) error {
	return drv.stage.upload(dst, src, n, false)
}

// htodQueued queues a copy of n bytes at src to dst on the default stream,
// after the work queued before it, without waiting for that work: src may
// be reused when it returns.
func (drv *driver) htodQueued(dst uintptr, src unsafe.Pointer, n int64) error {
	return drv.stage.upload(dst, src, n, true)
}

// dtohQueued queues a copy of n bytes at src to pinned host memory after
// the work queued before it, without waiting; waitDownload(i) returns the
// memory once the copy is done, valid until releaseDownloads.
func (drv *driver) dtohQueued(src uintptr, n int64) (int, error) { return drv.down.queue(src, n) }

func (drv *driver) waitDownload(i int) (unsafe.Pointer, error) { return drv.down.wait(i) }

func (drv *driver) releaseDownloads() error { return drv.down.release() }

func (drv *driver) dtoh(dst unsafe.Pointer, src uintptr, n int64) error {
	return cu.MemcpyDtoH(dst, cu.DevicePtr(src), n)
}

// dtod queues a device-to-device copy (asynchronous with respect to the
// host, ordered with the kernels of the default stream).
func (drv *driver) dtod(dst, src uintptr, n int64) error {
	return cu.MemcpyDtoD(cu.DevicePtr(dst), cu.DevicePtr(src), n)
}

func (drv *driver) sync() error { return cu.Synchronize() }

// profEvent is a timing event of the profiler (profile.go).
type profEvent = cu.Event

func (drv *driver) newEvent() (profEvent, error) { return cu.MakeEvent(cu.DefaultEvent) }

// record queues e on the default stream.
func (drv *driver) record(e profEvent) error { return e.Record(cu.Stream{}) }

// elapsed is the GPU time between two recorded events that have completed.
func (drv *driver) elapsed(a, b profEvent) (time.Duration, error) {
	ms, err := a.Elapsed(b)
	return time.Duration(ms * float64(time.Millisecond)), err
}

func (drv *driver) freeEvent(e profEvent) error { return cu.DestroyEvent(&e) }

// launch queues kernel k on the default stream.
func (drv *driver) launch(k kernel, gx, gy, block, shared int, a *args) error {
	params := make([]unsafe.Pointer, a.n)
	for i := range params {
		params[i] = unsafe.Pointer(&a.v[i])
	}
	return drv.fns[k].Launch(gx, gy, 1, block, 1, 1, shared, cu.Stream{}, params)
}

// sgemm computes y = W·x for row-major W (rows×cols), x (n×cols) and
// y (n×rows) on the device with cuBLAS, opening it on first use. In cuBLAS's
// column-major view W is a cols×rows matrix, x is cols×n and y is rows×n, so
// y = Wᵀ·x.
func (drv *driver) sgemm(rows, cols, n int, w, x, y uintptr) error {
	if drv.blas == nil {
		b, err := openCUBLAS()
		if err != nil {
			return err
		}
		drv.blas = b
	}
	return drv.blas.sgemm(cublasOpT, cublasOpN, rows, n, cols, w, cols, x, cols, y, rows)
}
