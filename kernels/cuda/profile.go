//go:build (cuda || cudaemu) && cgo

package cuda

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Profile is the device time of a Device's work between StartProfile and
// StopProfile, per kind of operation. On a GPU each operation is bracketed
// by two events on the default stream, so Device is the GPU's own time for
// it; the events cost the host about a microsecond each, so Wall (host
// time) is slightly longer than without profiling. Wall − Busy is the time
// the default stream had nothing to run: the host's own work, launch
// overhead and waits.
type Profile struct {
	Wall time.Duration // host time from StartProfile to StopProfile
	Busy time.Duration // sum of Ops' Device
	Ops  []OpTime      // by Device, longest first
}

// OpTime is the total of one kind of operation in a Profile: a kernel (by
// its name in kernels.cu), "cublas_sgemm", or a copy: "upload",
// "upload_queued", "download", "copy", and "upload_async" and
// "download_queued", whose transfers run on streams of their own (their
// times are the default stream's wait for the upload, and nothing for the
// download).
type OpTime struct {
	Name   string
	Calls  int
	Device time.Duration
	Bytes  int64 // bytes moved, for copies
}

// profBatch is how many operations a profile keeps in flight before it
// waits for the device and adds up their times.
const profBatch = 4096

// profiler collects a Device's operations while a profile runs. Its
// methods run inside Device.do.
type profiler struct {
	start   time.Time
	events  []profEvent // 2 per pending operation, allocated once, reused
	pending []profOp
	totals  map[string]*OpTime
}

type profOp struct {
	name  string
	bytes int64
}

// StartProfile starts timing every operation queued on d (see Profile),
// discarding a profile already running.
func (d *Device) StartProfile() error {
	err := d.do(func() error {
		if err := d.drv.sync(); err != nil {
			return err
		}
		if d.prof != nil {
			if err := d.prof.free(d.drv); err != nil {
				return err
			}
		}
		d.prof = &profiler{start: time.Now(), totals: map[string]*OpTime{}}
		return nil
	})
	if err != nil {
		return fmt.Errorf("cuda: starting a profile: %w", err)
	}
	return nil
}

// StopProfile waits for the device's queued work and returns the profile
// since StartProfile.
func (d *Device) StopProfile() (Profile, error) {
	var p Profile
	err := d.do(func() error {
		pr := d.prof
		if pr == nil {
			return errors.New("no profile is running")
		}
		d.prof = nil
		err := pr.fold(d.drv)
		p.Wall = time.Since(pr.start)
		err = errors.Join(err, pr.free(d.drv))
		for _, t := range pr.totals {
			p.Ops = append(p.Ops, *t)
			p.Busy += t.Device
		}
		slices.SortFunc(p.Ops, func(a, b OpTime) int {
			if a.Device != b.Device {
				return int(b.Device - a.Device)
			}
			return cmp.Compare(a.Name, b.Name)
		})
		return err
	})
	if err != nil {
		return Profile{}, fmt.Errorf("cuda: stopping a profile: %w", err)
	}
	return p, nil
}

// begin records the event before an operation; it returns the index of
// the operation's first event. Called inside do.
func (pr *profiler) begin(drv *driver) (int, error) {
	if len(pr.pending) == profBatch {
		if err := pr.fold(drv); err != nil {
			return 0, err
		}
	}
	i := 2 * len(pr.pending)
	for len(pr.events) < i+2 {
		e, err := drv.newEvent()
		if err != nil {
			return 0, fmt.Errorf("profile event: %w", err)
		}
		pr.events = append(pr.events, e)
	}
	return i, drv.record(pr.events[i])
}

// end records the event after the operation begun at i.
func (pr *profiler) end(drv *driver, i int, name string, bytes int64) error {
	pr.pending = append(pr.pending, profOp{name, bytes})
	return drv.record(pr.events[i+1])
}

// fold waits for the pending operations and adds their times to the
// totals; the events are then free for reuse.
func (pr *profiler) fold(drv *driver) error {
	if len(pr.pending) == 0 {
		return nil
	}
	if err := drv.sync(); err != nil {
		return err
	}
	for k, op := range pr.pending {
		dt, err := drv.elapsed(pr.events[2*k], pr.events[2*k+1])
		if err != nil {
			return fmt.Errorf("profile event: %w", err)
		}
		t := pr.totals[op.name]
		if t == nil {
			t = &OpTime{Name: op.name}
			pr.totals[op.name] = t
		}
		t.Calls++
		t.Device += dt
		t.Bytes += op.bytes
	}
	pr.pending = pr.pending[:0]
	return nil
}

// free releases the events.
func (pr *profiler) free(drv *driver) error {
	var errs []error
	for _, e := range pr.events {
		errs = append(errs, drv.freeEvent(e))
	}
	pr.events = nil
	return errors.Join(errs...)
}

// The operations below are d.drv's, timed while a profile runs. Each is
// called inside do.

func (d *Device) launch(k kernel, gx, gy, block, shared int, a *args) error {
	if d.prof == nil {
		return d.drv.launch(k, gx, gy, block, shared, a)
	}
	return d.timed(kernelNames[k], 0, func() error { return d.drv.launch(k, gx, gy, block, shared, a) })
}

func (d *Device) sgemm(rows, cols, n int, w, x, y uintptr) error {
	if d.prof == nil {
		return d.drv.sgemm(rows, cols, n, w, x, y)
	}
	return d.timed("cublas_sgemm", 0, func() error { return d.drv.sgemm(rows, cols, n, w, x, y) })
}

// timed runs op, one of the driver's operations with its arguments bound,
// as operation name moving bytes, between two events while a profile
// runs. An operation that fails leaves its begin event unpaired and
// unused.
func (d *Device) timed(name string, bytes int64, op func() error) error {
	if d.prof == nil {
		return op()
	}
	i, err := d.prof.begin(d.drv)
	if err != nil {
		return err
	}
	if err := op(); err != nil {
		return err
	}
	return d.prof.end(d.drv, i, name, bytes)
}
