//go:build !amd64

package kernels

// cpuRelax marks a polling loop; it does nothing off amd64.
func cpuRelax() {}
