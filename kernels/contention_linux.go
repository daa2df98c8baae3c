package kernels

import (
	"bytes"
	"os"
	"runtime"
	"strconv"
	"sync"
)

// runQueue reads the number of runnable threads of the whole machine from
// /proc/loadavg (its fourth field is running/total).
type runQueue struct {
	mu  sync.Mutex // guards buf; a reader that finds it held skips the check
	f   *os.File
	buf [128]byte
}

// openRunQueue opens /proc/loadavg; nil when it cannot be read.
func openRunQueue() *runQueue {
	f, err := os.Open("/proc/loadavg")
	if err != nil {
		return nil
	}
	return &runQueue{f: f}
}

// crowded reports whether more threads are runnable right now than the
// machine has CPUs (false when it cannot tell, or while another goroutine
// is reading).
func (q *runQueue) crowded() bool {
	if q == nil || !q.mu.TryLock() {
		return false
	}
	defer q.mu.Unlock()
	n, _ := q.f.ReadAt(q.buf[:], 0)
	r, ok := loadavgRunning(q.buf[:n])
	return ok && r > runtime.NumCPU()
}

// loadavgRunning returns the running count of /proc/loadavg's text b
// ("0.14 0.09 0.03 3/81 1303" → 3).
func loadavgRunning(b []byte) (int, bool) {
	fields := bytes.Fields(b)
	if len(fields) < 4 {
		return 0, false
	}
	running, _, ok := bytes.Cut(fields[3], []byte("/"))
	if !ok {
		return 0, false
	}
	r, err := strconv.Atoi(string(running))
	return r, err == nil
}

// close releases the file.
func (q *runQueue) close() {
	if q != nil {
		q.f.Close()
	}
}
