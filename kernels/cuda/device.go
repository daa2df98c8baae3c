//go:build (cuda || cudaemu) && cgo

package cuda

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"unsafe"

	"github.com/blendrag/blendrag/kernels"
)

// ErrClosed is returned by every method of a Device after Close.
var ErrClosed = errors.New("cuda: device closed")

// kernel identifies a kernel of kernels.cu.
type kernel int

const (
	kQuantQ8 kernel = iota
	kMMQ4_1
	kMMQ8_0
	kMMF32
	kMMF16
	kRMSNorm
	kRoPE
	kAttend
	kScatter
	kSwiGLU
	kAdd
	kAttendSplit
	kAttendCombine
	kAttendCombineGroups
	kAttendTile
	numKernels
)

// kernelNames are the kernels' names in kernels.cu, by kernel.
var kernelNames = [numKernels]string{"quant_q8", "mm_q4_1", "mm_q8_0", "mm_f32", "mm_f16",
	"rmsnorm", "rope", "attend", "scatter_rows", "swiglu", "add_f32", "attend_split", "attend_combine",
	"attend_combine_groups", "attend_tile"}

// Device is one GPU with blendrag's kernels loaded. Its methods serialise on
// a mutex and bind the device's context to the calling OS thread for the
// duration of the call, so a Device may be used from any goroutine. Kernels
// run asynchronously in the default stream; Download* and Sync wait for them.
type Device struct {
	mu      sync.Mutex
	closed  bool
	ordinal int
	name    string
	drv     *driver

	// Scratch space, grown on demand and reused.
	acts, scores, rows *Buffer

	prof *profiler // the running profile, if any (StartProfile)
}

// Buffer is a block of device memory owned by the Device that allocated it.
type Buffer struct {
	ptr  uintptr
	size int64
	view bool // a window into another buffer: Free refuses it
}

// Bytes is the size of b in bytes.
func (b *Buffer) Bytes() int64 { return b.size }

// View returns the window [off, off+bytes) of b as a Buffer that shares b's
// memory. It is valid while b is; Free refuses it.
func (b *Buffer) View(off, bytes int64) (*Buffer, error) {
	if off < 0 || bytes <= 0 || off > b.size-bytes {
		return nil, fmt.Errorf("cuda: view [%d, +%d) of a %d-byte buffer: %w", off, bytes, b.size, kernels.ErrShape)
	}
	return &Buffer{ptr: b.ptr + uintptr(off), size: bytes, view: true}, nil
}

// Open initialises GPU ordinal (0-based) — its primary context, the kernels'
// module (the embedded PTX, JIT-compiled by the driver) and a cuBLAS handle.
// It returns an error when the CUDA driver did not initialise (no GPU, no
// kernel driver: see cuinit.go), the ordinal does not exist or any step
// fails. In a build with the cudaemu tag it opens the CPU emulation instead
// (ordinal 0 only).
func Open(ordinal int) (*Device, error) {
	drv, name, err := openDriver(ordinal)
	if err != nil {
		return nil, fmt.Errorf("cuda: opening device %d: %w", ordinal, err)
	}
	return &Device{ordinal: ordinal, name: name, drv: drv}, nil
}

// Name returns the device's name as the driver reports it.
func (d *Device) Name() string { return d.name }

// Emulated reports whether this build runs the kernels in the CPU emulation
// of the cudaemu build tag rather than on a GPU.
func Emulated() bool { return emulated }

// Close frees the scratch buffers and releases the device. Buffers allocated
// from d should be freed before (releasing the context frees them if this
// was its last user). Close is idempotent.
func (d *Device) Close() error {
	err := d.do(func() error {
		var errs []error
		for _, b := range []*Buffer{d.acts, d.scores, d.rows} {
			if b != nil {
				errs = append(errs, d.drv.free(b.ptr))
			}
		}
		d.acts, d.scores, d.rows = nil, nil, nil
		if d.prof != nil {
			errs = append(errs, d.prof.free(d.drv))
			d.prof = nil
		}
		return errors.Join(errs...)
	})
	if errors.Is(err, ErrClosed) {
		return nil
	}
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	if cerr := d.drv.close(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	if err != nil {
		return fmt.Errorf("cuda: closing device %d: %w", d.ordinal, err)
	}
	return nil
}

// do runs f with d's context current on a locked OS thread, holding d's
// mutex.
func (d *Device) do(f func() error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	unbind, err := d.drv.bind()
	if err != nil {
		return fmt.Errorf("cuda: device %d: %w", d.ordinal, err)
	}
	defer unbind()
	return f()
}

// Sync waits until every kernel and copy queued on d has finished and returns
// the first asynchronous error.
func (d *Device) Sync() error {
	if err := d.do(func() error { return d.drv.sync() }); err != nil {
		return fmt.Errorf("cuda: synchronising device %d: %w", d.ordinal, err)
	}
	return nil
}

// Alloc allocates bytes (> 0) of device memory. Its contents are undefined.
func (d *Device) Alloc(bytes int64) (*Buffer, error) {
	var b *Buffer
	err := d.do(func() error {
		var err error
		b, err = d.alloc(bytes)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("cuda: allocating %d bytes: %w", bytes, err)
	}
	return b, nil
}

// alloc allocates device memory; called inside do.
func (d *Device) alloc(bytes int64) (*Buffer, error) {
	if bytes <= 0 {
		return nil, fmt.Errorf("size must be positive")
	}
	p, err := d.drv.alloc(bytes)
	if err != nil {
		return nil, err
	}
	return &Buffer{ptr: p, size: bytes}, nil
}

// Free releases b, after the work already queued (which may still read or
// write it) has finished: cuMemFree only "may" wait for it. b must have
// come from d and must not be used afterwards.
func (d *Device) Free(b *Buffer) error {
	if b == nil {
		return nil
	}
	if b.view {
		return fmt.Errorf("cuda: Free of a view: free the buffer it came from")
	}
	if err := d.do(func() error { return errors.Join(d.drv.sync(), d.drv.free(b.ptr)) }); err != nil {
		return fmt.Errorf("cuda: freeing %d bytes: %w", b.size, err)
	}
	b.ptr, b.size = 0, 0
	return nil
}

// grow makes *b a scratch buffer of at least bytes, reallocating (to the
// next power of two) when it is too small. Called inside do.
func (d *Device) grow(b **Buffer, bytes int64) error {
	if *b != nil && (*b).size >= bytes {
		return nil
	}
	if *b != nil {
		if err := errors.Join(d.drv.sync(), d.drv.free((*b).ptr)); err != nil { // queued work may use it
			return err
		}
		*b = nil
	}
	size := int64(1) << 16
	for size < bytes {
		size <<= 1
	}
	nb, err := d.alloc(size)
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
	if err := d.do(func() error { return d.timed("upload", n, func() error { return d.drv.htod(dst.ptr, p, n) }) }); err != nil {
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
	if err := d.do(func() error { return d.timed("download", n, func() error { return d.drv.dtoh(p, src.ptr, n) }) }); err != nil {
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

func ceilDiv(a, b int) int { return (a + b - 1) / b }
