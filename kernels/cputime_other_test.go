//go:build !unix

package kernels

import "time"

// processCPU is not available here; benchmarks then skip the CPU-time metric.
func processCPU() time.Duration { return 0 }
