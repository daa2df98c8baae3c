//go:build cuda && !cudaemu && cgo

package cuda

/*
#include <cuda.h>
static CUresult blendragHostAlloc(void **p, size_t n) { return cuMemAllocHost(p, n); }
static CUresult blendragHostFree(void *p) { return cuMemFreeHost(p); }
*/
import "C"

import (
	"errors"
	"fmt"
	"unsafe"

	"gorgonia.org/cu"
)

// stageBytes is the pinned host memory that asynchronous uploads go
// through; a larger upload is made synchronously.
const stageBytes = 64 << 20

// stager uploads host data without waiting for the device: the data is
// copied into pinned staging memory, the copy to the device is queued on a
// stream of its own (so it does not wait for the kernels queued before it
// on the default stream), and the default stream waits for it (an event)
// before any work queued after it. Staging memory is reused once the copy
// that read it has finished. Its methods run with the context bound.
type stager struct {
	stream   cu.Stream
	base     unsafe.Pointer // stageBytes of pinned host memory; nil until first use
	head     int64          // where the next copy goes
	inflight []staged       // queued copies, oldest first
	events   []cu.Event     // finished copies' events, for reuse
}

type staged struct {
	off, n int64
	ev     cu.Event
}

// upload queues a copy of n bytes at src to dst: on the copy stream, or
// with ordered on the default stream itself, after the work queued there
// before it.
func (s *stager) upload(dst uintptr, src unsafe.Pointer, n int64, ordered bool) error {
	if n > stageBytes {
		return cu.MemcpyHtoD(cu.DevicePtr(dst), src, n)
	}
	if s.base == nil {
		var err error
		if s.stream, err = cu.MakeStream(cu.NonBlocking); err != nil {
			return fmt.Errorf("copy stream: %w", err)
		}
		if rc := C.blendragHostAlloc(&s.base, C.size_t(stageBytes)); rc != C.CUDA_SUCCESS {
			s.base = nil
			return fmt.Errorf("pinned staging memory of %d bytes: CUresult %d", stageBytes, int(rc))
		}
	}
	off := s.head
	if off+n > stageBytes {
		off = 0
	}
	// Wait for the oldest copies until none reads [off, off+n).
	for len(s.inflight) > 0 && overlaps(s.inflight, off, n) {
		c := s.inflight[0]
		if err := c.ev.Synchronize(); err != nil {
			return fmt.Errorf("waiting for a staged copy: %w", err)
		}
		s.inflight = s.inflight[1:]
		s.events = append(s.events, c.ev)
	}
	copy(unsafe.Slice((*byte)(unsafe.Add(s.base, off)), n), unsafe.Slice((*byte)(src), n))
	stream := s.stream
	if ordered {
		stream = cu.Stream{}
	}
	if err := cu.MemcpyHtoDAsync(cu.DevicePtr(dst), unsafe.Add(s.base, off), n, stream); err != nil {
		return err
	}
	var ev cu.Event
	if k := len(s.events); k > 0 {
		ev, s.events = s.events[k-1], s.events[:k-1]
	} else {
		var err error
		if ev, err = cu.MakeEvent(cu.DisableTiming); err != nil {
			return fmt.Errorf("copy event: %w", err)
		}
	}
	if err := ev.Record(stream); err != nil {
		return err
	}
	if !ordered {
		if err := (cu.Stream{}).Wait(ev, 0); err != nil { // the default stream waits for the copy
			return err
		}
	}
	s.inflight = append(s.inflight, staged{off: off, n: n, ev: ev})
	s.head = off + n
	return nil
}

// overlaps reports whether [off, off+n) meets a queued copy's staging bytes.
func overlaps(in []staged, off, n int64) bool {
	for _, c := range in {
		if off < c.off+c.n && c.off < off+n {
			return true
		}
	}
	return false
}

// close waits for the queued copies and frees the stream, events and
// staging memory.
func (s *stager) close() error {
	if s.base == nil {
		return nil
	}
	var errs []error
	// Ordered copies run on the default stream: wait for it as well
	// before the staging memory goes.
	errs = append(errs, s.stream.Synchronize(), cu.Synchronize())
	for _, c := range s.inflight {
		s.events = append(s.events, c.ev)
	}
	for i := range s.events {
		errs = append(errs, cu.DestroyEvent(&s.events[i]))
	}
	errs = append(errs, s.stream.Destroy())
	if rc := C.blendragHostFree(s.base); rc != C.CUDA_SUCCESS {
		errs = append(errs, fmt.Errorf("freeing pinned staging memory: CUresult %d", int(rc)))
	}
	*s = stager{}
	return errors.Join(errs...)
}

// downloader copies device memory to pinned host memory on a stream of its
// own, after the work queued before each copy and beside the work queued
// after it. Its pinned memory is blocks allocated as needed and handed out
// in order until release, which coalesces them into one block for next
// time. Its methods run with the context bound.
type downloader struct {
	stream cu.Stream // nil-valued until first use
	ready  bool
	mark   cu.Event // recorded on the default stream: what a copy waits for
	blocks []pinned
	queued []queuedCopy
	events []cu.Event // finished copies' events, for reuse
}

type pinned struct {
	base       unsafe.Pointer
	size, used int64
}

type queuedCopy struct {
	host unsafe.Pointer
	done cu.Event
}

// queue queues a copy of n bytes at src and returns its index for wait.
func (dl *downloader) queue(src uintptr, n int64) (int, error) {
	if !dl.ready {
		s, err := cu.MakeStream(cu.NonBlocking)
		if err != nil {
			return 0, fmt.Errorf("download stream: %w", err)
		}
		if dl.mark, err = cu.MakeEvent(cu.DisableTiming); err != nil {
			return 0, errors.Join(fmt.Errorf("download event: %w", err), s.Destroy())
		}
		dl.stream, dl.ready = s, true
	}
	host, err := dl.take(n)
	if err != nil {
		return 0, err
	}
	var done cu.Event
	if k := len(dl.events); k > 0 {
		done, dl.events = dl.events[k-1], dl.events[:k-1]
	} else if done, err = cu.MakeEvent(cu.DisableTiming); err != nil {
		return 0, fmt.Errorf("download event: %w", err)
	}
	// The copy waits for the work queued so far on the default stream (it
	// wrote src), and nothing on the default stream waits for the copy.
	err = errors.Join(dl.mark.Record(cu.Stream{}), dl.stream.Wait(dl.mark, 0))
	if err == nil {
		err = cu.MemcpyDtoHAsync(host, cu.DevicePtr(src), n, dl.stream)
	}
	if err == nil {
		err = done.Record(dl.stream)
	}
	if err != nil {
		dl.events = append(dl.events, done)
		return 0, err
	}
	dl.queued = append(dl.queued, queuedCopy{host: host, done: done})
	return len(dl.queued) - 1, nil
}

// take returns n bytes of pinned memory, from the last block or a new one.
func (dl *downloader) take(n int64) (unsafe.Pointer, error) {
	if k := len(dl.blocks); k > 0 && dl.blocks[k-1].size-dl.blocks[k-1].used >= n {
		b := &dl.blocks[k-1]
		p := unsafe.Add(b.base, b.used)
		b.used += (n + 255) &^ 255
		return p, nil
	}
	size := max(n, 16<<20)
	if k := len(dl.blocks); k > 0 {
		size = max(size, 2*dl.blocks[k-1].size)
	}
	var p unsafe.Pointer
	if rc := C.blendragHostAlloc(&p, C.size_t(size)); rc != C.CUDA_SUCCESS {
		return nil, fmt.Errorf("pinned host memory of %d bytes: CUresult %d", size, int(rc))
	}
	dl.blocks = append(dl.blocks, pinned{base: p, size: size, used: (n + 255) &^ 255})
	return p, nil
}

// wait waits for copy i and returns its host memory.
func (dl *downloader) wait(i int) (unsafe.Pointer, error) {
	if i < 0 || i >= len(dl.queued) {
		return nil, fmt.Errorf("no queued download %d", i)
	}
	if err := dl.queued[i].done.Synchronize(); err != nil {
		return nil, err
	}
	return dl.queued[i].host, nil
}

// release waits for every queued copy and makes their memory free for
// reuse, coalescing the blocks into one.
func (dl *downloader) release() error {
	if !dl.ready {
		return nil
	}
	err := dl.stream.Synchronize()
	for _, q := range dl.queued {
		dl.events = append(dl.events, q.done)
	}
	dl.queued = dl.queued[:0]
	if len(dl.blocks) > 1 {
		var total int64
		for _, b := range dl.blocks {
			total += b.size
			if rc := C.blendragHostFree(b.base); rc != C.CUDA_SUCCESS {
				err = errors.Join(err, fmt.Errorf("freeing pinned memory: CUresult %d", int(rc)))
			}
		}
		dl.blocks = dl.blocks[:0]
		var p unsafe.Pointer
		if rc := C.blendragHostAlloc(&p, C.size_t(total)); rc == C.CUDA_SUCCESS {
			dl.blocks = append(dl.blocks, pinned{base: p, size: total})
		} // else: allocated again on demand
	}
	for i := range dl.blocks {
		dl.blocks[i].used = 0
	}
	return err
}

// close waits for the copies and frees the stream, events and memory.
func (dl *downloader) close() error {
	if !dl.ready {
		return nil
	}
	err := dl.release()
	for _, b := range dl.blocks {
		if rc := C.blendragHostFree(b.base); rc != C.CUDA_SUCCESS {
			err = errors.Join(err, fmt.Errorf("freeing pinned memory: CUresult %d", int(rc)))
		}
	}
	for i := range dl.events {
		err = errors.Join(err, cu.DestroyEvent(&dl.events[i]))
	}
	err = errors.Join(err, cu.DestroyEvent(&dl.mark), dl.stream.Destroy())
	*dl = downloader{}
	return err
}
