package kernels

// cpuRelax tells the CPU the caller is in a polling loop (PAUSE).
//
//go:noescape
func cpuRelax()
