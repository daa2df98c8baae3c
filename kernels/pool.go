package kernels

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Task is a piece of parallel work for Pool.RunTask.
type Task interface {
	// Do processes indices [lo, hi). worker ∈ [0, Threads()) names the
	// goroutine making the call; calls that run at the same time have
	// different worker values, so Do may use per-worker scratch space.
	Do(worker, lo, hi int)
}

// Pool is a fixed set of worker goroutines for data-parallel loops, plus the
// scratch space MatMul needs. The goroutines are started once by NewPool;
// between calls each spins for up to spinWait watching for the next job (a
// decoder issues a few hundred short parallel calls per token, and waking a
// parked goroutine costs more than many of them take) and then parks on a
// channel. A parallel call starts no goroutine and, once its scratch has
// grown to the largest shape seen, allocates nothing.
//
// The zero Pool is a valid pool with no extra goroutines: everything runs on
// the calling goroutine.
//
// A Pool runs one operation (Run, RunTask, MatMul) at a time; concurrent
// calls from several goroutines are safe and are serialised. A Task or func
// run by the Pool must not call back into the same Pool (it would deadlock).
// A panic inside a Task is re-raised on the goroutine that called Run or
// RunTask once all workers have finished.
type Pool struct {
	mu      sync.Mutex // held for the whole of each operation
	threads int
	wake    []chan struct{} // wake[w] starts a parked worker w (w ≥ 1)
	parked  []atomic.Bool   // parked[w]: worker w is (about to be) blocked on wake[w]
	// gen is the job generation: a counter in the high bits and, in the low
	// genPartsBits, the number of parts of its job; worker w takes part in
	// a generation with more than w parts (and the caller waits for it, so
	// it cannot miss one), and skips the others.
	gen     atomic.Uint64
	quit    atomic.Bool  // set by Close: workers exit at the next generation
	pending atomic.Int32 // workers of the current job still running
	// doneCh receives one value when the last worker finishes while the
	// caller is parked (callerParked).
	doneCh       chan struct{}
	callerParked atomic.Bool
	exited       sync.WaitGroup // worker goroutines still running
	closed       bool
	// spin is how long to poll before parking: spinWait, or 0 when there
	// are fewer OS threads for goroutines (GOMAXPROCS) than workers, where
	// a spinning goroutine would hold back the one it waits for.
	spin time.Duration

	// The current job; written under mu before the workers are woken.
	job      Task
	jobN     int
	jobParts int
	panicked any // first panic value of a worker in the current job
	panicMu  sync.Mutex

	fn   funcTask
	kern kernelTable
	// inlineWork: MatMul calls with less weight traffic run on the caller
	// (NewPool sets inlineBytes; tests set 0 to exercise the workers).
	inlineWork int
	mm         matmulState
}

// NewPool starts a pool of threads workers; threads ≤ 0 means
// runtime.GOMAXPROCS(0). The calling goroutine of each operation acts as
// worker 0, so threads−1 goroutines are started. Call Close to stop them.
func NewPool(threads int) *Pool {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	threads = min(threads, 1<<genPartsBits-1)
	p := &Pool{threads: threads, inlineWork: inlineBytes}
	if runtime.GOMAXPROCS(0) >= threads {
		p.spin = spinWait
	}
	p.kern.init()
	p.wake = make([]chan struct{}, threads)
	p.parked = make([]atomic.Bool, threads)
	p.doneCh = make(chan struct{}, 1)
	for w := 1; w < threads; w++ {
		p.wake[w] = make(chan struct{}, 1)
		p.exited.Add(1)
		go p.worker(w)
	}
	return p
}

// Threads returns the number of workers, the caller included.
func (p *Pool) Threads() int { return max(p.threads, 1) }

// Close stops the worker goroutines and waits for them to exit. It is
// idempotent. A closed Pool still works, running everything on the calling
// goroutine.
func (p *Pool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	p.quit.Store(true)
	p.startWorkers(p.threads)
	p.exited.Wait()
}

// spinWait is how long an idle worker, or a caller waiting for its workers,
// polls before parking.
const spinWait = 100 * time.Microsecond

// genPartsBits is the width of the parts field of Pool.gen; NewPool caps
// threads below 1<<genPartsBits.
const genPartsBits = 16

// startWorkers publishes a new job generation to workers 1 … parts−1 (the
// job fields must be written first) and wakes those that are parked.
func (p *Pool) startWorkers(parts int) {
	g := p.gen.Load()
	p.gen.Store((g>>genPartsBits+1)<<genPartsBits | uint64(parts))
	for w := 1; w < parts; w++ {
		if p.parked[w].CompareAndSwap(true, false) {
			p.wake[w] <- struct{}{}
		}
	}
}

// worker runs job generations until Close. It takes part in every
// generation whose job has a part for it (w < jobParts), and in the last
// (quit) one it exits.
func (p *Pool) worker(w int) {
	defer p.exited.Done()
	var last uint64 // NewPool starts the workers at generation 0
	for {
		g := p.awaitGen(w, last)
		last = g
		if p.quit.Load() {
			return
		}
		if w >= int(g&(1<<genPartsBits-1)) {
			continue // not in this job
		}
		p.runPart(w)
		if p.pending.Add(-1) == 0 && p.callerParked.CompareAndSwap(true, false) {
			p.doneCh <- struct{}{}
		}
	}
}

// awaitGen waits until the job generation differs from last and returns it:
// spinning for up to spinWait, then parking on wake[w]. The parked flag and
// the generation are both atomics, so either startWorkers sees the flag and
// sends, or the worker sees the new generation after setting it.
func (p *Pool) awaitGen(w int, last uint64) uint64 {
	var g uint64
	if spinUntil(p.spin, func() bool { g = p.gen.Load(); return g != last }) {
		return g
	}
	p.parked[w].Store(true)
	if g = p.gen.Load(); g != last && p.parked[w].CompareAndSwap(true, false) {
		return g
	}
	// startWorkers cleared the flag and sends (or has sent) a wake-up: the
	// generation it published is the current one until this worker, part
	// of it, finishes.
	<-p.wake[w]
	return p.gen.Load()
}

// spinUntil polls cond for up to d (at least once) and reports whether it
// became true.
func spinUntil(d time.Duration, cond func() bool) bool {
	var start time.Time
	for i := 1; ; i++ {
		if cond() {
			return true
		}
		if d <= 0 {
			return false
		}
		if i%64 == 0 {
			if start.IsZero() {
				start = time.Now()
			} else if time.Since(start) > d {
				return false
			}
		}
	}
}

// runPart runs worker w's share of the current job, catching a panic so the
// caller can re-raise it.
func (p *Pool) runPart(w int) {
	defer func() {
		if r := recover(); r != nil {
			p.panicMu.Lock()
			if p.panicked == nil {
				p.panicked = r
			}
			p.panicMu.Unlock()
		}
	}()
	lo := p.jobN * w / p.jobParts
	hi := p.jobN * (w + 1) / p.jobParts
	if lo < hi {
		p.job.Do(w, lo, hi)
	}
}

// RunTask splits [0, n) into contiguous ranges, one per worker (fewer when
// n < Threads()), calls t.Do on each in parallel and returns when all are
// done. Worker w gets [n·w/k, n·(w+1)/k) for k parts. Passing a pointer to
// a long-lived Task makes the call allocation-free.
func (p *Pool) RunTask(n int, t Task) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.runLocked(n, t)
}

// funcTask adapts a func to Task.
type funcTask struct{ fn func(lo, hi int) }

// Do calls the func.
func (f *funcTask) Do(_, lo, hi int) { f.fn(lo, hi) }

// Run is RunTask for a func of a range. The func value escapes to the
// workers, so a func literal that captures variables costs the caller one
// small allocation per call; use RunTask in allocation-free hot paths.
func (p *Pool) Run(n int, fn func(lo, hi int)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fn.fn = fn
	p.runLocked(n, &p.fn)
	p.fn.fn = nil
}

// runLocked runs t over [0, n); p.mu must be held.
func (p *Pool) runLocked(n int, t Task) {
	parts := min(p.threads, n)
	if p.closed || p.threads <= 1 {
		parts = min(1, n)
	}
	if parts <= 0 {
		return
	}
	if parts == 1 {
		t.Do(0, 0, n)
		return
	}
	p.job, p.jobN, p.jobParts, p.panicked = t, n, parts, nil
	p.pending.Store(int32(parts - 1))
	p.startWorkers(parts)
	p.runPart(0)
	p.waitWorkers()
	p.job = nil
	if r := p.panicked; r != nil {
		p.panicked = nil
		panic(r)
	}
}

// waitWorkers returns once every worker of the current job has finished:
// it spins for up to spinWait, then parks on doneCh (the last worker sends
// if it sees callerParked set).
func (p *Pool) waitWorkers() {
	if spinUntil(p.spin, func() bool { return p.pending.Load() == 0 }) {
		return
	}
	p.callerParked.Store(true)
	if p.pending.Load() == 0 && p.callerParked.CompareAndSwap(true, false) {
		return
	}
	<-p.doneCh
}
