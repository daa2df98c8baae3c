//go:build !linux

package kernels

// runQueue would count the machine's runnable threads; only Linux has one.
type runQueue struct{}

// openRunQueue returns nil: outside Linux the pool relies on the gaps
// between its polls alone.
func openRunQueue() *runQueue { return nil }

// crowded reports false.
func (q *runQueue) crowded() bool { return false }

// close does nothing.
func (q *runQueue) close() {}
