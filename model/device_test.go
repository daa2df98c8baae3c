package model

import (
	"errors"
	"testing"
)

func TestParseDeviceAcceptsCPUAndCUDAOrdinals(t *testing.T) {
	for _, c := range []struct {
		in   string
		want DeviceSpec
		ok   bool
	}{
		{"cpu", DeviceSpec{Kind: "cpu"}, true},
		{"cuda", DeviceSpec{Kind: "cuda"}, true},
		{"cuda:0", DeviceSpec{Kind: "cuda"}, true},
		{"cuda:3", DeviceSpec{Kind: "cuda", Ordinal: 3}, true},
		{"cuda+blas", DeviceSpec{Kind: "cuda", BLAS: true}, true},
		{"cuda:2+blas", DeviceSpec{Kind: "cuda", Ordinal: 2, BLAS: true}, true},
		{"cpu+blas", DeviceSpec{}, false},
		{"cuda+blas+blas", DeviceSpec{}, false},
		{"cuda:+blas", DeviceSpec{}, false},
		{"cuda:-1", DeviceSpec{}, false},
		{"cuda:x", DeviceSpec{}, false},
		{"gpu", DeviceSpec{}, false},
		{"", DeviceSpec{}, false},
	} {
		got, err := ParseDevice(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("ParseDevice(%q) = %+v, %v; want %+v, ok=%v", c.in, got, err, c.want, c.ok)
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
