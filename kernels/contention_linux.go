package kernels

import (
	"os"
	"runtime"
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
// ("0.14 0.09 0.03 3/81 1303" → 3), without allocating.
func loadavgRunning(b []byte) (int, bool) {
	field := 0
	for i := 0; i < len(b); {
		for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n') {
			i++
		}
		if i == len(b) {
			break
		}
		if field == 3 {
			n, digits := 0, 0
			for ; i < len(b) && b[i] >= '0' && b[i] <= '9' && digits < 9; i++ {
				n = n*10 + int(b[i]-'0')
				digits++
			}
			if digits == 0 || i == len(b) || b[i] != '/' {
				return 0, false
			}
			return n, true
		}
		for i < len(b) && b[i] != ' ' && b[i] != '\t' && b[i] != '\n' {
			i++
		}
		field++
	}
	return 0, false
}

// close releases the file.
func (q *runQueue) close() {
	if q != nil {
		q.f.Close()
	}
}
