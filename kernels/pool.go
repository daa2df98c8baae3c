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

// DefaultSpin is how long a new Pool's idle workers poll for the next job
// (and a caller for its workers) before parking. Decode hands the workers a
// job every few tens of microseconds, and waking a parked goroutine costs
// about as much, or far more in a virtual machine, where the woken goroutine
// often runs only once its waker blocks. Polling made 2-thread decode
// 1.2–1.5× faster on the development machine (docs/BENCHMARKS.md); while
// the machine has more runnable threads than CPUs the pool parks at once
// anyway (see spinUntil), where polling measured no faster than parking.
const DefaultSpin = 50 * time.Microsecond

// Pool is a fixed set of worker goroutines for data-parallel loops, plus the
// scratch space MatMul needs. The goroutines are started once by NewPool and
// wait between calls, polling for a while and then parked (see SetSpin): a
// parallel call starts no goroutine and, once its scratch has grown to the
// largest shape seen, allocates nothing.
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
	closed  bool           // under mu
	exited  sync.WaitGroup // worker goroutines still running
	spin    atomic.Int64   // polling time in ns before parking
	// noSpinUntil: no polling before this time (ns since epoch); see spinUntil.
	noSpinUntil atomic.Int64
	// gapWindow (ns since epoch) starts the window in which gaps counts
	// descheduled polls; see descheduled.
	gapWindow atomic.Int64
	gaps      atomic.Int32
	// runq counts the machine's runnable threads (nil where it cannot);
	// lastLook is when it was last read (ns since epoch).
	runq         *runQueue
	lastLook     atomic.Int64
	crowdedLooks atomic.Int32 // consecutive crowded looks; see crowded
	epoch        time.Time

	// The hand-off protocol (see handoff.go).
	seq      atomic.Uint64 // number of jobs published; a change starts the workers
	closing  atomic.Bool   // set before the seq increment that stops the workers
	pending  atomic.Int32  // workers that have not finished the current job
	sleeping []atomic.Bool // sleeping[w]: worker w is parked or about to park
	wake     []chan struct{}
	waiter   atomic.Uint64 // seq of the job the caller parks on; 0: not parked
	doneCh   chan struct{} // wakes the parked caller

	// The current job; written under mu before seq is incremented.
	job      Task
	jobN     int
	jobParts int
	// The job's range is cut into jobChunks pieces that the workers take
	// in turn (next counts the pieces taken), so a worker that starts late
	// or runs slower does less of it.
	jobChunks int
	next      atomic.Int64
	panicked  any // first panic value of a worker in the current job
	panicMu   sync.Mutex

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
	p := &Pool{threads: threads, inlineWork: inlineBytes, epoch: time.Now()}
	p.spin.Store(int64(DefaultSpin))
	if threads > 1 {
		p.runq = openRunQueue()
	}
	p.kern.init()
	p.sleeping = make([]atomic.Bool, threads)
	p.wake = make([]chan struct{}, threads)
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

// SetSpin sets how long idle workers poll for the next job, and callers for
// their workers, before parking (DefaultSpin unless set; d ≤ 0 parks at
// once). Polling can only pay when the pool's threads have cores to
// themselves; while it sees a polling thread descheduled the pool parks at
// once anyway. It may be
// called at any time, also while the pool is working.
func (p *Pool) SetSpin(d time.Duration) { p.spin.Store(int64(max(d, 0))) }

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
	if p.threads > 1 {
		p.closing.Store(true)
		p.publish()
		p.exited.Wait()
	}
	p.runq.close()
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
	if w >= p.jobParts {
		return
	}
	for {
		c := int(p.next.Add(1) - 1)
		if c >= p.jobChunks {
			return
		}
		lo := p.jobN * c / p.jobChunks
		hi := p.jobN * (c + 1) / p.jobChunks
		if lo < hi {
			p.job.Do(w, lo, hi)
		}
	}
}

// chunksPerThread is how many pieces per thread a parallel call's range is
// cut into: enough that a worker starting a few microseconds late (or one
// on a slower core) leaves its share to the others, few enough that each
// piece stays a sizeable run of the kernels.
const chunksPerThread = 4

// RunTask splits [0, n) into contiguous ranges (a few per worker, at most
// n), calls t.Do on each in parallel and returns when all are done. The
// workers take the ranges in turn, so which worker computes which range,
// and how many ranges one worker gets, varies from call to call. Passing a pointer to
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
	p.jobChunks = min(n, parts*chunksPerThread)
	p.next.Store(0)
	seq := p.publish()
	p.runPart(0)
	p.awaitWorkers(seq)
	p.job = nil
	if r := p.panicked; r != nil {
		p.panicked = nil
		panic(r)
	}
}
