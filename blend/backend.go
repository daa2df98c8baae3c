package blend

import (
	"fmt"

	"github.com/blendrag/blendrag/model"
)

// backendFor returns the backend a blend computation of model m runs on: b,
// or m's own CPU forward pass when b is nil. It refuses a backend of
// another model.
func backendFor(m *model.Model, b model.Backend) (model.Backend, error) {
	if b == nil {
		return m.OpenBackend("cpu")
	}
	if b.Model() != m {
		return nil, fmt.Errorf("blend: backend %s runs another model", b.Device())
	}
	return b, nil
}

// onCPU reports whether b (nil meaning the CPU) is the CPU backend.
func onCPU(b model.Backend) bool { return b == nil || b.Device() == "cpu" }
