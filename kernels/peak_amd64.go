package kernels

//go:noescape
func fmaLoop(iters int)

//go:noescape
func readSweep(p *byte, n int) uint64
