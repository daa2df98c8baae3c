//go:build cuda && cgo

package cuda

import (
	_ "embed"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"unsafe"

	"github.com/blendrag/blendrag/kernels"
	"gorgonia.org/cu"
	cublas "gorgonia.org/cu/blas"
)

// ptx is kernels.cu compiled by gen.sh.
//
//go:embed kernels.ptx
var ptx string

// ErrClosed is returned by every method of a Device after Close.
var ErrClosed = errors.New("cuda: device closed")

// functions holds the kernels of the loaded module.
type functions struct {
	quantQ8, mmQ4_1, mmQ8_0, mmF32, mmF16       cu.Function
	rmsnorm, rope, attend, scatter, swiglu, add cu.Function
}

// Device is one GPU with blendrag's kernels loaded. Its methods serialise on
// a mutex and bind the device's context to the calling OS thread for the
// duration of the call, so a Device may be used from any goroutine. Kernels
// run asynchronously in the default stream; Download* and Sync wait for them.
type Device struct {
	mu      sync.Mutex
	closed  bool
	ordinal int
	dev     cu.Device
	ctx     cu.CUContext
	mod     cu.Module
	fn      functions
	blas    *cublas.Standard

	// Scratch space, grown on demand and reused.
	acts, scores, rows *Buffer
}

// Buffer is a block of device memory owned by the Device that allocated it.
type Buffer struct {
	ptr  cu.DevicePtr
	size int64
	view bool // a window into another buffer: Free refuses it
}

// View returns the window [off, off+bytes) of b as a Buffer that shares b's
// memory. It is valid while b is; Free refuses it.
func (b *Buffer) View(off, bytes int64) (*Buffer, error) {
	if off < 0 || bytes <= 0 || off > b.size-bytes {
		return nil, fmt.Errorf("cuda: view [%d, +%d) of a %d-byte buffer: %w", off, bytes, b.size, kernels.ErrShape)
	}
	return &Buffer{ptr: b.ptr + cu.DevicePtr(off), size: bytes, view: true}, nil
}

// Bytes is the size of b in bytes.
func (b *Buffer) Bytes() int64 { return b.size }

// Open initialises GPU ordinal (0-based) — its primary context, the kernels'
// module (the embedded PTX, JIT-compiled by the driver) and a cuBLAS handle.
// It returns an error when the CUDA driver did not initialise (no GPU, no
// kernel driver: see cuinit.go), the ordinal does not exist or any step
// fails.
func Open(ordinal int) (*Device, error) {
	if err := initError(); err != nil {
		return nil, err
	}
	n, err := cu.NumDevices()
	if err != nil {
		return nil, fmt.Errorf("cuda: counting devices: %w", err)
	}
	if ordinal < 0 || ordinal >= n {
		return nil, fmt.Errorf("cuda: device %d requested, %d present", ordinal, n)
	}
	dev, err := cu.GetDevice(ordinal)
	if err != nil {
		return nil, fmt.Errorf("cuda: device %d: %w", ordinal, err)
	}
	ctx, err := dev.RetainPrimaryCtx()
	if err != nil {
		return nil, fmt.Errorf("cuda: device %d: retaining primary context: %w", ordinal, err)
	}
	d := &Device{ordinal: ordinal, dev: dev, ctx: ctx}
	err = d.do(func() error {
		mod, err := cu.LoadData(ptx)
		if err != nil {
			return fmt.Errorf("loading PTX module: %w", err)
		}
		d.mod = mod
		for name, f := range map[string]*cu.Function{
			"quant_q8": &d.fn.quantQ8, "mm_q4_1": &d.fn.mmQ4_1, "mm_q8_0": &d.fn.mmQ8_0,
			"mm_f32": &d.fn.mmF32, "mm_f16": &d.fn.mmF16, "rmsnorm": &d.fn.rmsnorm,
			"rope": &d.fn.rope, "attend": &d.fn.attend, "scatter_rows": &d.fn.scatter,
			"swiglu": &d.fn.swiglu, "add_f32": &d.fn.add,
		} {
			if *f, err = mod.Function(name); err != nil {
				return fmt.Errorf("kernel %s: %w", name, err)
			}
		}
		d.blas = &cublas.Standard{}
		if err := d.blas.Init(); err != nil {
			d.blas = nil
			return fmt.Errorf("cuBLAS: %w", err)
		}
		return nil
	})
	if err != nil {
		d.release()
		return nil, fmt.Errorf("cuda: opening device %d: %w", ordinal, err)
	}
	return d, nil
}

// Name returns the device's name as the driver reports it.
func (d *Device) Name() (string, error) {
	var name string
	err := d.do(func() error {
		var err error
		name, err = d.dev.Name()
		return err
	})
	if err != nil {
		return "", fmt.Errorf("cuda: device %d name: %w", d.ordinal, err)
	}
	return name, nil
}

// Close frees the scratch buffers, the module and the cuBLAS handle and
// releases the primary context. Buffers allocated from d must be freed
// before (the context's release frees them if this was its last user).
// Close is idempotent.
func (d *Device) Close() error {
	err := d.do(func() error {
		var errs []error
		for _, b := range []*Buffer{d.acts, d.scores, d.rows} {
			if b != nil {
				errs = append(errs, cu.MemFree(b.ptr))
			}
		}
		d.acts, d.scores, d.rows = nil, nil, nil
		return errors.Join(errs...)
	})
	if errors.Is(err, ErrClosed) {
		return nil
	}
	if rerr := d.release(); rerr != nil {
		err = errors.Join(err, rerr)
	}
	if err != nil {
		return fmt.Errorf("cuda: closing device %d: %w", d.ordinal, err)
	}
	return nil
}

// release destroys what Open made and marks d closed.
func (d *Device) release() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var errs []error
	if err := cu.SetCurrentContext(d.ctx); err != nil {
		errs = append(errs, err)
	}
	if d.blas != nil {
		errs = append(errs, d.blas.Close())
	}
	var zero cu.Module
	if d.mod != zero {
		errs = append(errs, d.mod.Unload())
	}
	errs = append(errs, d.dev.ReleasePrimaryCtx())
	return errors.Join(errs...)
}

// do runs f with d's context current on a locked OS thread, holding d's
// mutex.
func (d *Device) do(f func() error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cu.SetCurrentContext(d.ctx); err != nil {
		return fmt.Errorf("cuda: binding the context of device %d: %w", d.ordinal, err)
	}
	return f()
}

// Sync waits until every kernel and copy queued on d has finished and returns
// the first asynchronous error.
func (d *Device) Sync() error {
	if err := d.do(cu.Synchronize); err != nil {
		return fmt.Errorf("cuda: synchronising device %d: %w", d.ordinal, err)
	}
	return nil
}

// Alloc allocates bytes (> 0) of device memory. Its contents are undefined.
func (d *Device) Alloc(bytes int64) (*Buffer, error) {
	var b *Buffer
	err := d.do(func() error {
		var err error
		b, err = alloc(bytes)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("cuda: allocating %d bytes: %w", bytes, err)
	}
	return b, nil
}

func alloc(bytes int64) (*Buffer, error) {
	if bytes <= 0 {
		return nil, fmt.Errorf("size must be positive")
	}
	p, err := cu.MemAlloc(bytes)
	if err != nil {
		return nil, err
	}
	return &Buffer{ptr: p, size: bytes}, nil
}

// Free releases b. b must have come from d and must not be used afterwards.
func (d *Device) Free(b *Buffer) error {
	if b == nil {
		return nil
	}
	if b.view {
		return fmt.Errorf("cuda: Free of a view: free the buffer it came from")
	}
	if err := d.do(func() error { return cu.MemFree(b.ptr) }); err != nil {
		return fmt.Errorf("cuda: freeing %d bytes: %w", b.size, err)
	}
	b.ptr, b.size = 0, 0
	return nil
}

// grow makes *b a scratch buffer of at least bytes, reallocating (to the
// next power of two) when it is too small. Called inside do.
func grow(b **Buffer, bytes int64) error {
	if *b != nil && (*b).size >= bytes {
		return nil
	}
	if *b != nil {
		if err := cu.MemFree((*b).ptr); err != nil {
			return err
		}
		*b = nil
	}
	size := int64(1) << 16
	for size < bytes {
		size <<= 1
	}
	nb, err := alloc(size)
	if err != nil {
		return fmt.Errorf("scratch of %d bytes: %w", size, err)
	}
	*b = nb
	return nil
}

// upload copies n bytes at p into dst (which must hold them).
func (d *Device) upload(what string, dst *Buffer, p unsafe.Pointer, n int64) error {
	if dst == nil || n > dst.size {
		return fmt.Errorf("cuda: upload %s: %d bytes into a buffer of %d: %w", what, n, sizeOf(dst), kernels.ErrShape)
	}
	if n == 0 {
		return nil
	}
	if err := d.do(func() error { return cu.MemcpyHtoD(dst.ptr, p, n) }); err != nil {
		return fmt.Errorf("cuda: upload %s (%d bytes): %w", what, n, err)
	}
	return nil
}

// download copies n bytes from src into p, after every queued kernel.
func (d *Device) download(what string, p unsafe.Pointer, src *Buffer, n int64) error {
	if src == nil || n > src.size {
		return fmt.Errorf("cuda: download %s: %d bytes from a buffer of %d: %w", what, n, sizeOf(src), kernels.ErrShape)
	}
	if n == 0 {
		return nil
	}
	if err := d.do(func() error { return cu.MemcpyDtoH(p, src.ptr, n) }); err != nil {
		return fmt.Errorf("cuda: download %s (%d bytes): %w", what, n, err)
	}
	return nil
}

func sizeOf(b *Buffer) int64 {
	if b == nil {
		return 0
	}
	return b.size
}

// UploadF32 copies src into the start of dst.
func (d *Device) UploadF32(dst *Buffer, src []float32) error {
	if len(src) == 0 {
		return nil
	}
	return d.upload("float32", dst, unsafe.Pointer(&src[0]), int64(len(src))*4)
}

// UploadI32 copies src into the start of dst.
func (d *Device) UploadI32(dst *Buffer, src []int32) error {
	if len(src) == 0 {
		return nil
	}
	return d.upload("int32", dst, unsafe.Pointer(&src[0]), int64(len(src))*4)
}

// UploadBytes copies src into the start of dst.
func (d *Device) UploadBytes(dst *Buffer, src []byte) error {
	if len(src) == 0 {
		return nil
	}
	return d.upload("bytes", dst, unsafe.Pointer(&src[0]), int64(len(src)))
}

// DownloadF32 fills dst from the start of src, after every queued kernel.
func (d *Device) DownloadF32(dst []float32, src *Buffer) error {
	if len(dst) == 0 {
		return nil
	}
	return d.download("float32", unsafe.Pointer(&dst[0]), src, int64(len(dst))*4)
}

// DownloadBytes fills dst from the start of src, after every queued kernel.
func (d *Device) DownloadBytes(dst []byte, src *Buffer) error {
	if len(dst) == 0 {
		return nil
	}
	return d.download("bytes", unsafe.Pointer(&dst[0]), src, int64(len(dst)))
}

// NewF32 allocates a buffer holding a copy of src (len(src) > 0).
func (d *Device) NewF32(src []float32) (*Buffer, error) {
	b, err := d.Alloc(int64(len(src)) * 4)
	if err != nil {
		return nil, err
	}
	if err := d.UploadF32(b, src); err != nil {
		return nil, errors.Join(err, d.Free(b))
	}
	return b, nil
}

// NewI32 allocates a buffer holding a copy of src (len(src) > 0).
func (d *Device) NewI32(src []int32) (*Buffer, error) {
	b, err := d.Alloc(int64(len(src)) * 4)
	if err != nil {
		return nil, err
	}
	if err := d.UploadI32(b, src); err != nil {
		return nil, errors.Join(err, d.Free(b))
	}
	return b, nil
}

// args collects kernel parameters as 8-byte slots (cu's Launch copies 8
// bytes per parameter; the driver reads the parameter's own size, the low
// bytes on little-endian machines).
type args struct {
	v [20]uint64
	n int
}

func (a *args) buf(b *Buffer) *args {
	if b != nil {
		a.v[a.n] = uint64(b.ptr)
	}
	a.n++
	return a
}

func (a *args) i32(x int) *args {
	a.v[a.n] = uint64(uint32(int32(x)))
	a.n++
	return a
}

func (a *args) i64(x int64) *args {
	a.v[a.n] = uint64(x)
	a.n++
	return a
}

func (a *args) f32(x float32) *args {
	a.v[a.n] = uint64(math.Float32bits(x))
	a.n++
	return a
}

// launch queues f on the default stream. Called inside do.
func launch(f cu.Function, gx, gy, block, shared int, a *args) error {
	params := make([]unsafe.Pointer, a.n)
	for i := range params {
		params[i] = unsafe.Pointer(&a.v[i])
	}
	return f.Launch(gx, gy, 1, block, 1, 1, shared, cu.Stream{}, params)
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }
