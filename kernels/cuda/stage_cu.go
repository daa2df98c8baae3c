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
	errs = append(errs, s.stream.Synchronize())
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
