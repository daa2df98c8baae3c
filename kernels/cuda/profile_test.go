//go:build (cuda || cudaemu) && cgo

package cuda

import (
	"testing"
)

// TestProfileCountsEveryOperation: a profile counts each operation queued
// while it runs once, under its name, with the bytes of copies — across
// more operations than one batch of events holds — and nothing queued
// before StartProfile or after StopProfile.
func TestProfileCountsEveryOperation(t *testing.T) {
	d := openDevice(t)
	a := devF32s(t, d, []float32{1, 2, 3, 4})
	b := devF32s(t, d, []float32{1, 1, 1, 1})
	if err := d.Add(a, b, 4); err != nil { // before the profile
		t.Fatal(err)
	}
	if _, err := d.StopProfile(); err == nil {
		t.Fatal("StopProfile without a profile: no error")
	}
	if err := d.StartProfile(); err != nil {
		t.Fatal(err)
	}
	const adds = profBatch + 100
	for range adds {
		if err := d.Add(a, b, 4); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.UploadF32(b, []float32{2, 2, 2}); err != nil {
		t.Fatal(err)
	}
	if err := d.Copy(a, b, 8); err != nil {
		t.Fatal(err)
	}
	got := download(t, d, a, 4)
	p, err := d.StopProfile()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Add(a, b, 4); err != nil { // after
		t.Fatal(err)
	}
	want := map[string]OpTime{
		"add_f32":  {Calls: adds},
		"upload":   {Calls: 1, Bytes: 12},
		"copy":     {Calls: 1, Bytes: 8},
		"download": {Calls: 1, Bytes: 16},
	}
	if len(p.Ops) != len(want) {
		t.Errorf("profile has %d kinds of operation, want %d: %+v", len(p.Ops), len(want), p.Ops)
	}
	var busy int64
	for i, op := range p.Ops {
		w, ok := want[op.Name]
		if !ok || op.Calls != w.Calls || op.Bytes != w.Bytes {
			t.Errorf("op %q: %d calls, %d bytes; want %d and %d", op.Name, op.Calls, op.Bytes, w.Calls, w.Bytes)
		}
		if i > 0 && op.Device > p.Ops[i-1].Device {
			t.Errorf("ops not sorted by device time: %v after %v", op.Device, p.Ops[i-1].Device)
		}
		busy += int64(op.Device)
	}
	if int64(p.Busy) != busy || p.Busy > p.Wall || p.Wall <= 0 {
		t.Errorf("busy %v (ops sum %v), wall %v", p.Busy, busy, p.Wall)
	}
	// The profiled operations ran: a = [2 3 4 5]+adds, then its first two
	// floats were overwritten by the copy.
	if got[0] != 2 || got[1] != 2 || got[3] != 5+adds {
		t.Errorf("a = %v after the profiled work", got)
	}
}
