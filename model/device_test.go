package model

import (
	"errors"
	"testing"
)

func TestParseDeviceAcceptsCPUAndCUDAOrdinals(t *testing.T) {
	for _, c := range []struct {
		in      string
		kind    string
		ordinal int
		ok      bool
	}{
		{"cpu", "cpu", 0, true},
		{"cuda", "cuda", 0, true},
		{"cuda:0", "cuda", 0, true},
		{"cuda:3", "cuda", 3, true},
		{"cuda:-1", "", 0, false},
		{"cuda:x", "", 0, false},
		{"gpu", "", 0, false},
		{"", "", 0, false},
	} {
		kind, ord, err := ParseDevice(c.in)
		if (err == nil) != c.ok || kind != c.kind || ord != c.ordinal {
			t.Errorf("ParseDevice(%q) = %q, %d, %v; want %q, %d, ok=%v", c.in, kind, ord, err, c.kind, c.ordinal, c.ok)
		}
	}
}

func TestCPUBackendIsTheModelsForward(t *testing.T) {
	m := &Model{}
	b, err := m.OpenBackend("cpu")
	if err != nil {
		t.Fatal(err)
	}
	if cb, ok := b.(cpuBackend); !ok || cb.m != m || b.Device() != "cpu" || b.Close() != nil {
		t.Fatalf("OpenBackend(cpu) = %#v, want the model's own forward pass", b)
	}
	if _, err := m.OpenBackend("tpu"); err == nil {
		t.Error("OpenBackend(tpu) succeeded")
	}
}

func TestCUDABackendWithoutCUDABuildIsErrNoCUDA(t *testing.T) {
	if cudaBuilt {
		t.Skip("built with the cuda tag: the CUDA tests cover OpenBackend(cuda)")
	}
	if _, err := (&Model{}).OpenBackend("cuda:0"); !errors.Is(err, ErrNoCUDA) {
		t.Fatalf("OpenBackend(cuda:0) error %v, want ErrNoCUDA", err)
	}
}
