package kernels

import "time"

// The hand-off between a Pool's caller and its workers.
//
// Publishing: the caller writes the job fields, sets pending to the number
// of workers (every worker takes part; one with no range just reports), and
// increments seq. A worker that sees seq change runs its part, then
// decrements pending; the worker that brings it to 0 wakes the caller if it
// is parked. All three are sequentially consistent atomics, which order the
// job fields before each worker's reads and each worker's writes before the
// caller's return.
//
// Parking without lost or stray wake-ups, for a worker w (the caller is
// symmetrical, with waiter and doneCh):
//
//   - The sleeper stores sleeping[w] = true, then re-reads seq. The waker
//     increments seq, then swaps sleeping[w] true→false and, only if that
//     swap succeeded, sends one token on wake[w]. By the total order of the
//     atomics either the sleeper's re-read sees the new seq or the waker's
//     swap sees true.
//   - A sleeper that sees the new seq tries the same swap itself. Exactly
//     one swap succeeds: if the sleeper's did, no token is sent; if the
//     waker's did, a token is (or will be) sent and the sleeper receives it.
//     So every token sent is received exactly once, by the park it was
//     meant for or — when the waker's swap comes late, after the worker
//     already ran the job by polling and parked again — by a later park,
//     which then re-checks seq and parks again: a stray token never makes a
//     worker run a job twice or skip one.
//   - The caller's flag holds the seq of the job it waits for, not a bool,
//     so a worker's late swap for an earlier job (after the caller already
//     saw pending reach 0 by polling and published the next job) fails and
//     sends nothing.

// publish starts the workers on the job in the Pool's fields (or, with
// closing set, stops them) and returns the job's seq. p.mu must be held.
func (p *Pool) publish() uint64 {
	p.pending.Store(int32(p.threads - 1))
	seq := p.seq.Add(1)
	for w := 1; w < p.threads; w++ {
		if p.sleeping[w].CompareAndSwap(true, false) {
			p.wake[w] <- struct{}{}
		}
	}
	return seq
}

// worker is the loop of worker goroutine w.
func (p *Pool) worker(w int) {
	defer p.exited.Done()
	var seen uint64 // seq is 0 until the first publish, which may come before this line runs
	for {
		seq := p.nextJob(w, seen)
		seen = seq
		if p.closing.Load() {
			return
		}
		p.runPart(w)
		if p.pending.Add(-1) == 0 && p.waiter.CompareAndSwap(seq, 0) {
			p.doneCh <- struct{}{}
		}
	}
}

// nextJob waits until seq differs from seen and returns it: polling for the
// spin time, then parked.
func (p *Pool) nextJob(w int, seen uint64) uint64 {
	if s, ok := p.spinUntil(func() (uint64, bool) {
		s := p.seq.Load()
		return s, s != seen
	}); ok {
		return s
	}
	for {
		p.sleeping[w].Store(true)
		if s := p.seq.Load(); s != seen {
			if p.sleeping[w].CompareAndSwap(true, false) {
				return s
			}
			<-p.wake[w] // the publisher's swap won: take its token
			return s
		}
		<-p.wake[w]
		if s := p.seq.Load(); s != seen {
			return s
		}
		// A late token from an earlier publish: park again.
	}
}

// awaitWorkers waits until every worker has finished job seq: polling for
// the spin time, then parked.
func (p *Pool) awaitWorkers(seq uint64) {
	if _, ok := p.spinUntil(func() (uint64, bool) {
		return 0, p.pending.Load() == 0
	}); ok {
		return
	}
	p.waiter.Store(seq)
	if p.pending.Load() == 0 && p.waiter.CompareAndSwap(seq, 0) {
		return
	}
	<-p.doneCh
}

// spinUntil polls cond for about ns nanoseconds and returns its value once
// it reports true; false when the time ran out. Polling is skipped while
// p's back-off (below) lasts.
//
// A polling thread that the operating system deschedules has spent its
// share of the CPU: once the awaited event comes it waits for its next time
// slice, far longer than a parked thread, which the scheduler favours on
// wake-up. So when gaps between polls show that the pool's threads keep
// being descheduled (the machine has more busy threads than cores), the
// pool stops polling for spinBackoff and parks at once instead. One gap is
// not enough: in a virtual machine the host takes the CPU away for tens or
// hundreds of microseconds several hundred times a second on an otherwise
// quiet machine (measured here: ~250 gaps over 50 µs and ~5 over 500 µs
// per thread and second, none over 5 ms), which says nothing about
// contention. A thread that shares its CPU with another busy one loses
// whole time slices (milliseconds) every few milliseconds, so the pool
// backs off after spinGaps gaps over spinGap within spinWindow. Where the
// system says how many threads are runnable (Linux), the pool also looks
// every runqEvery and backs off when two looks in a row find more than
// CPUs: a polling thread is mostly descheduled while it computes, where no
// gap between polls shows.
func (p *Pool) spinUntil(cond func() (uint64, bool)) (uint64, bool) {
	ns := p.spin.Load()
	if v, ok := cond(); ok || ns <= 0 {
		return v, ok
	}
	now := time.Since(p.epoch).Nanoseconds()
	if now < p.noSpinUntil.Load() {
		return 0, false
	}
	if last := p.lastLook.Load(); now-last > runqEvery && p.lastLook.CompareAndSwap(last, now) && p.crowded() {
		p.noSpinUntil.Store(now + spinBackoff)
		return 0, false
	}
	start, last := now, now
	for {
		for i := 0; i < 64; i++ {
			cpuRelax()
			if v, ok := cond(); ok {
				return v, true
			}
		}
		now = time.Since(p.epoch).Nanoseconds()
		if now-last > spinGap && p.descheduled(now) {
			p.noSpinUntil.Store(now + spinBackoff)
			return 0, false
		}
		if now-start >= ns {
			return 0, false
		}
		last = now
	}
}

// polling reports whether idle workers poll now: a spin time is set and no
// back-off is in force.
func (p *Pool) polling() bool {
	return p.spin.Load() > 0 && time.Since(p.epoch).Nanoseconds() >= p.noSpinUntil.Load()
}

// crowded reads the machine's run queue and reports whether it held more
// threads than CPUs at this look and the one before (a garbage collection
// or a short-lived thread crowds it for a moment, another busy process for
// good). Only the goroutine that won lastLook calls it.
func (p *Pool) crowded() bool {
	if !p.runq.crowded() {
		p.crowdedLooks.Store(0)
		return false
	}
	return p.crowdedLooks.Add(1) >= 2
}

// descheduled records a gap between polls that ended at now and reports
// whether it is the spinGaps-th within spinWindow (the count restarts with
// the first gap after a window has passed). Concurrent callers may lose a
// count or restart a window twice; the rule needs no more precision.
func (p *Pool) descheduled(now int64) bool {
	if now-p.gapWindow.Load() > spinWindow {
		p.gapWindow.Store(now)
		p.gaps.Store(1)
		return spinGaps <= 1
	}
	return p.gaps.Add(1) >= spinGaps
}

// spinGap is the gap between two polls (normally about a microsecond) that
// counts as the polling thread having been descheduled; spinGaps such gaps
// within spinWindow mean contention, and the pool then parks at once for
// spinBackoff.
const (
	spinGap     = int64(time.Millisecond)
	spinGaps    = 4
	spinWindow  = int64(100 * time.Millisecond)
	spinBackoff = int64(200 * time.Millisecond)
	runqEvery   = int64(10 * time.Millisecond)
)
