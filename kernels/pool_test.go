package kernels

import (
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

func TestPoolRunCoversEveryIndexExactlyOnce(t *testing.T) {
	for _, threads := range []int{1, 2, 3, 8} {
		p := NewPool(threads)
		for _, n := range []int{0, 1, 2, 5, 7, 64, 1000} {
			c := &coverTask{hits: make([]atomic.Int32, n), workers: make([]atomic.Int32, n), maxW: threads}
			p.RunTask(n, c)
			if c.bad.Load() {
				t.Fatalf("threads=%d n=%d: bad worker index or empty range", threads, n)
			}
			for i := range c.hits {
				if h := c.hits[i].Load(); h != 1 {
					t.Fatalf("threads=%d n=%d: index %d processed %d times", threads, n, i, h)
				}
			}
		}
		p.Close()
	}
}

// slowTask sleeps in every call made by a worker other than 0 and counts
// the indices each worker processed.
type slowTask struct{ per [2]atomic.Int64 }

func (s *slowTask) Do(w, lo, hi int) {
	if w != 0 {
		time.Sleep(20 * time.Millisecond)
	}
	s.per[w].Add(int64(hi - lo))
}

func TestPoolSlowWorkerLeavesItsShareToTheOthers(t *testing.T) {
	p := NewPool(2)
	defer p.Close()
	s := &slowTask{}
	const n = 800
	p.RunTask(n, s)
	w0, w1 := s.per[0].Load(), s.per[1].Load()
	if w0+w1 != n {
		t.Fatalf("covered %d + %d indices, want %d", w0, w1, n)
	}
	// The caller takes every range the sleeping worker has not taken: at
	// most one of the 2·chunksPerThread.
	if w1 > n/(2*chunksPerThread) {
		t.Errorf("the slow worker did %d of %d indices, want at most %d", w1, n, n/(2*chunksPerThread))
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

// sumTask adds its range's length into a per-worker counter, sleeping now
// and then so that both the polling and the parking paths of the hand-off
// are taken.
type sumTask struct {
	per  []atomic.Int64
	iter int
}

func (s *sumTask) Do(w, lo, hi int) {
	if (s.iter+w)%7 == 0 {
		time.Sleep(time.Duration(s.iter%3) * 20 * time.Microsecond)
	}
	s.per[w].Add(int64(hi - lo))
}

func TestPoolHandOffNeverLosesOrRepeatsAJob(t *testing.T) {
	iters := 1000
	if testing.Short() {
		iters = 200
	}
	for _, threads := range []int{2, 3, 8} {
		for _, spin := range []time.Duration{0, time.Microsecond, 5 * time.Microsecond, DefaultSpin} {
			p := NewPool(threads)
			p.SetSpin(spin)
			s := &sumTask{per: make([]atomic.Int64, threads)}
			var want int64
			for it := 0; it < iters; it++ {
				s.iter = it
				n := 1 + it%(3*threads)
				p.RunTask(n, s)
				want += int64(n)
				var got int64
				for w := range s.per {
					got += s.per[w].Load()
				}
				if got != want {
					t.Fatalf("threads=%d spin=%v iteration %d: covered %d indices in total, want %d", threads, spin, it, got, want)
				}
				if it%500 == 250 {
					// Let every worker park, so the next call wakes them.
					time.Sleep(2*spin + 200*time.Microsecond)
				}
			}
			p.Close()
		}
	}
}

func TestPoolCloseStopsPollingAndParkedWorkers(t *testing.T) {
	for _, spin := range []time.Duration{0, time.Hour} {
		p := NewPool(4)
		p.SetSpin(spin)
		var n atomic.Int32
		p.Run(8, func(lo, hi int) { n.Add(int32(hi - lo)) })
		done := make(chan struct{})
		go func() { p.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("spin=%v: Close did not return", spin)
		}
		if n.Load() != 8 {
			t.Errorf("spin=%v: covered %d of 8", spin, n.Load())
		}
	}
}

func TestPoolBacksOffOnlyAfterSeveralGapsInOneWindow(t *testing.T) {
	var p Pool
	ms := int64(time.Millisecond)
	now := int64(10 * time.Second)
	// Gaps spread out more than a window apart never add up.
	for i := range 3 * spinGaps {
		if p.descheduled(now + int64(i)*(spinWindow+ms)) {
			t.Fatalf("gap %d, each a window apart: backed off", i)
		}
	}
	now += int64(10 * time.Second)
	for i := range spinGaps {
		got := p.descheduled(now + int64(i)*ms)
		if want := i == spinGaps-1; got != want {
			t.Fatalf("gap %d of %d within one window: backed off %v, want %v", i+1, spinGaps, got, want)
		}
	}
}
