//go:build !(cuda || cudaemu) || !cgo

package server

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/blendrag/blendrag/model"
	"github.com/blendrag/blendrag/model/fetch"
)

// TestOpenWithCUDADeviceFailsWithoutCUDA: in a binary built without CUDA,
// Config.Device "cuda" makes Open fail with an error wrapping
// model.ErrNoCUDA (not a panic), and a malformed device is an error.
func TestOpenWithCUDADeviceFailsWithoutCUDA(t *testing.T) {
	if testing.Short() {
		t.Skip("loads the generator")
	}
	if _, err := os.Stat(fetch.GeneratorPath(fetch.Dir())); err != nil {
		t.Skip("default models not present: run `make models`")
	}
	for _, c := range []struct {
		device string
		check  func(error) bool
	}{
		{"cuda", func(err error) bool { return errors.Is(err, model.ErrNoCUDA) }},
		{"cuda:x", func(err error) bool { return err != nil && strings.Contains(err.Error(), "cuda:N") }},
	} {
		s, err := Open(Config{DataDir: t.TempDir(), Threads: 2, Device: c.device})
		if s != nil || !c.check(err) {
			t.Errorf("Open with device %q: service %v, error %v", c.device, s, err)
		}
	}
}
