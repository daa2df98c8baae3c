package kernels

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// coverTask records which worker processed each index.
type coverTask struct {
	hits    []atomic.Int32
	workers []atomic.Int32
	maxW    int
	bad     atomic.Bool
}

func (c *coverTask) Do(w, lo, hi int) {
	if w < 0 || w >= c.maxW || lo >= hi {
		c.bad.Store(true)
	}
	for i := lo; i < hi; i++ {
		c.hits[i].Add(1)
		c.workers[i].Store(int32(w))
	}
}

func TestPoolRunCoversEveryIndexExactlyOnceInContiguousRanges(t *testing.T) {
	for _, threads := range []int{1, 2, 3, 8} {
		p := NewPool(threads)
		for _, n := range []int{0, 1, 2, 5, 7, 64, 1000} {
			runCovered(t, p, n, threads, fmt.Sprintf("threads=%d n=%d", threads, n))
		}
		p.Close()
	}
}

func TestPoolRunFuncAndConcurrentCallersAreSerialised(t *testing.T) {
	p := NewPool(2)
	defer p.Close()
	var wg sync.WaitGroup
	var inside atomic.Int32
	var overlap atomic.Bool
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := 0; it < 50; it++ {
				sum := make([]int, 100)
				p.Run(100, func(lo, hi int) {
					if inside.Add(1) > 2 {
						overlap.Store(true)
					}
					for i := lo; i < hi; i++ {
						sum[i] = i
					}
					inside.Add(-1)
				})
				for i, v := range sum {
					if v != i {
						t.Errorf("index %d not written", i)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if overlap.Load() {
		t.Error("more than Threads() ranges ran at once: operations were not serialised")
	}
}

func TestPoolReraisesWorkerPanicOnCaller(t *testing.T) {
	p := NewPool(2)
	defer p.Close()
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("recovered %v, want boom", r)
			}
		}()
		p.Run(10, func(lo, hi int) {
			if lo > 0 { // the second worker's range
				panic("boom")
			}
		})
	}()
	// The pool still works afterwards.
	var n atomic.Int32
	p.Run(10, func(lo, hi int) { n.Add(int32(hi - lo)) })
	if n.Load() != 10 {
		t.Errorf("after a panic the pool covered %d of 10", n.Load())
	}
}

func TestPoolCloseIsIdempotentAndClosedPoolRunsInline(t *testing.T) {
	p := NewPool(4)
	if p.Threads() != 4 {
		t.Fatalf("Threads() = %d", p.Threads())
	}
	p.Close()
	p.Close()
	var calls atomic.Int32
	p.Run(100, func(lo, hi int) {
		calls.Add(1)
		if lo != 0 || hi != 100 {
			t.Errorf("closed pool ran [%d,%d)", lo, hi)
		}
	})
	if calls.Load() != 1 {
		t.Errorf("closed pool made %d calls, want 1", calls.Load())
	}
	if d := NewPool(0); d.Threads() < 1 {
		t.Errorf("NewPool(0).Threads() = %d", d.Threads())
	} else {
		d.Close()
	}
}

func TestPoolRunTaskAllocatesNothing(t *testing.T) {
	p := NewPool(2)
	defer p.Close()
	c := &coverTask{hits: make([]atomic.Int32, 64), workers: make([]atomic.Int32, 64), maxW: 2}
	p.RunTask(64, c)
	if a := testing.AllocsPerRun(100, func() { p.RunTask(64, c) }); a != 0 {
		t.Errorf("RunTask allocates %v times per call", a)
	}
}

func TestZeroPoolRunsSingleThreaded(t *testing.T) {
	var p Pool
	if p.Threads() != 1 {
		t.Errorf("zero Pool Threads() = %d", p.Threads())
	}
	calls := 0
	p.Run(10, func(lo, hi int) { calls++ })
	if calls != 1 {
		t.Errorf("zero Pool made %d calls", calls)
	}
	m := Matrix{Type: Q4_K, Rows: 2, Cols: 256, Data: make([]byte, 2*144)}
	dst := []float32{1, 1}
	p.MatMul(dst, m, make([]float32, 256), 1)
	if dst[0] != 0 || dst[1] != 0 {
		t.Errorf("zero Pool MatMul of zero weights = %v", dst)
	}
	p.Close()
}

// TestPoolSpinningAndParkedWorkersRunEveryJobOnce alternates jobs with
// fewer parts than workers (so some workers skip generations), jobs issued
// back to back (workers still spinning) and jobs after pauses longer than
// spinWait (workers parked), and checks every index of every job is
// processed exactly once by a worker of that job.
func TestPoolSpinningAndParkedWorkersRunEveryJobOnce(t *testing.T) {
	p := NewPool(4)
	defer p.Close()
	for i := 0; i < 300; i++ {
		n := []int{1, 2, 3, 4, 9}[i%5]
		if i%7 == 0 {
			time.Sleep(3 * spinWait)
		}
		runCovered(t, p, n, min(4, n), fmt.Sprintf("job %d (n=%d)", i, n))
	}
}

// runCovered runs a coverTask over [0, n) on p and fails the test unless
// every index was processed exactly once, by workers below maxW, in
// contiguous ranges in worker order.
func runCovered(t *testing.T, p *Pool, n, maxW int, what string) {
	t.Helper()
	c := &coverTask{hits: make([]atomic.Int32, n), workers: make([]atomic.Int32, n), maxW: maxW}
	p.RunTask(n, c)
	if c.bad.Load() {
		t.Fatalf("%s: bad worker index or empty range", what)
	}
	for i := range c.hits {
		if h := c.hits[i].Load(); h != 1 {
			t.Fatalf("%s: index %d processed %d times", what, i, h)
		}
		if i > 0 && c.workers[i].Load() < c.workers[i-1].Load() {
			t.Fatalf("%s: ranges not contiguous in worker order at %d", what, i)
		}
	}
}
