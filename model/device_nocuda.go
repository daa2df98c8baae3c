//go:build !(cuda || cudaemu) || !cgo

package model

// openCUDA is the stub of builds without the cuda tag (or without cgo).
func openCUDA(*Model, DeviceSpec) (Backend, error) { return nil, ErrNoCUDA }

// cudaBuilt reports whether this build includes the CUDA backend.
const cudaBuilt = false
