package model

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Backend runs a Model's forward pass on one compute device. Forward and
// Recompute have the contracts of Model.Forward and Model.Recompute: the KV
// cache stays in host memory and is the source of truth (a device backend
// copies each layer's keys and values in and writes the fresh rows back).
// A Backend is not safe for concurrent use.
type Backend interface {
	// Device names the device, e.g. "cpu" or "cuda:0".
	Device() string
	Forward(kv *KV, tokens, pos []int32, all bool) ([]float32, error)
	Recompute(kv *KV, rows []int, all bool) ([]float32, error)
	// Close releases the device's copy of the weights. The Model stays
	// usable.
	Close() error
}

// ErrNoCUDA is returned by OpenBackend for a CUDA device in a binary built
// without CUDA support (the default; build with -tags cuda and cgo).
var ErrNoCUDA = errors.New("model: this binary was built without CUDA support (rebuild with -tags cuda, CGO_ENABLED=1)")

// OpenBackend returns the backend for device: "cpu" (the Model's own
// kernels and forward pass, bit for bit; Close does nothing) or "cuda" / "cuda:N" (GPU N, default 0; the
// weights are uploaded once here). A CUDA device needs a binary built with
// the cuda tag (otherwise the error wraps ErrNoCUDA) and a working GPU.
func (m *Model) OpenBackend(device string) (Backend, error) {
	name, ordinal, err := ParseDevice(device)
	if err != nil {
		return nil, err
	}
	if name == "cpu" {
		return cpuBackend{m}, nil
	}
	b, err := openCUDA(m, ordinal)
	if err != nil {
		return nil, fmt.Errorf("model: device %s: %w", device, err)
	}
	return b, nil
}

// ParseDevice splits a device name into its kind ("cpu" or "cuda") and
// ordinal: "cpu", "cuda" (ordinal 0) or "cuda:N".
func ParseDevice(device string) (kind string, ordinal int, err error) {
	switch {
	case device == "cpu":
		return "cpu", 0, nil
	case device == "cuda":
		return "cuda", 0, nil
	case strings.HasPrefix(device, "cuda:"):
		n, err := strconv.Atoi(device[len("cuda:"):])
		if err != nil || n < 0 {
			return "", 0, fmt.Errorf("model: device %q: want cuda:N with N ≥ 0", device)
		}
		return "cuda", n, nil
	}
	return "", 0, fmt.Errorf("model: unknown device %q (want cpu, cuda or cuda:N)", device)
}

// cpuBackend is the Model's own forward pass.
type cpuBackend struct{ m *Model }

func (b cpuBackend) Device() string { return "cpu" }

// Forward is Model.Forward, through the loop every backend shares.
func (b cpuBackend) Forward(kv *KV, tokens, pos []int32, all bool) ([]float32, error) {
	return b.m.appendRows(kv, tokens, pos, all, b.m.Recompute)
}

func (b cpuBackend) Recompute(kv *KV, rows []int, all bool) ([]float32, error) {
	return b.m.Recompute(kv, rows, all)
}

func (b cpuBackend) Close() error { return nil }

// appendRows is Model.Forward over any Recompute: it appends tokens at
// positions pos to kv and recomputes the new rows — in batches of
// prefillBatch when the positions ascend (each batch sees the ones before
// it), otherwise all together — returning the last row's logits or, when
// all is true, every new row's. On error kv is left as it was.
//
// It is Model.Forward's loop with the recomputation as a parameter, so that
// every backend appends rows the same way.
func (m *Model) appendRows(kv *KV, tokens, pos []int32, all bool, recompute func(kv *KV, rows []int, all bool) ([]float32, error)) ([]float32, error) {
	if len(tokens) == 0 || len(tokens) != len(pos) {
		return nil, fmt.Errorf("model: Forward needs as many positions as tokens (got %d and %d)", len(tokens), len(pos))
	}
	ascending := true
	for i, p := range pos {
		if p < 0 || int(p) >= m.Config.Context {
			return nil, fmt.Errorf("model: position %d exceeds the model's context length %d", p, m.Config.Context)
		}
		if i > 0 && p <= pos[i-1] {
			ascending = false
		}
	}
	batch := len(tokens)
	if ascending {
		batch = prefillBatch
	}
	start := kv.Len()
	var out []float32
	for lo := 0; lo < len(tokens); lo += batch {
		hi := min(lo+batch, len(tokens))
		first := kv.Grow(tokens[lo:hi], pos[lo:hi])
		rows := make([]int, hi-lo)
		for i := range rows {
			rows[i] = first + i
		}
		logits, err := recompute(kv, rows, all)
		if err != nil {
			kv.Truncate(start)
			return nil, err
		}
		if all {
			out = append(out, logits...)
		} else {
			out = logits
		}
	}
	return out, nil
}
