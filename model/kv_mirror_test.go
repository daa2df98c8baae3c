package model

import (
	"slices"
	"testing"
)

// staleRuns lists layer l's stale runs below n as [lo, hi) pairs.
func staleRuns(m *kvMirror, l, n int) [][2]int {
	var out [][2]int
	m.stale(l, n, func(lo, hi int) error {
		out = append(out, [2]int{lo, hi})
		return nil
	})
	return out
}

// TestKVMirrorRecordsExactlyTheChangedRows: a device copy's record of a
// cache marks stale exactly the rows that changed after they were made
// current — appended rows, rows Changed/ChangedLayer name, rows KV.Shift
// rotates, rows a CPU pass writes — forgets truncated rows, and starts
// empty for a new owner. Each step is checked against the runs worked out
// by hand.
func TestKVMirrorRecordsExactlyTheChangedRows(t *testing.T) {
	c := Config{Layers: 2, Dim: 8, Heads: 2, KVHeads: 1, HeadDim: 4, RopeBase: 10000, Context: 64}
	kv := NewKV(c)
	kv.Grow(make([]int32, 10), Positions(0, 10))
	owner := new(int)
	m := kv.claimMirror(owner)
	check := func(what string, l, n int, want ...[2]int) {
		t.Helper()
		if got := staleRuns(m, l, n); !slices.Equal(got, want) {
			t.Fatalf("%s: layer %d stale runs %v, want %v", what, l, got, want)
		}
	}
	check("new record", 0, 10, [2]int{0, 10})
	m.setCurrent(0, 0, 10)
	m.setCurrent(1, 2, 5)
	check("after setCurrent", 0, 10)
	check("after setCurrent", 1, 10, [2]int{0, 2}, [2]int{5, 10})
	m.setCurrent(1, 0, 2)
	if m.low[1] != 5 {
		t.Fatalf("low[1] = %d after rows 0–4 became current, want 5", m.low[1])
	}
	kv.Grow(make([]int32, 3), Positions(10, 3))
	check("after Grow", 0, 13, [2]int{10, 13})
	m.setCurrent(0, 10, 13)
	kv.ChangedLayer(0, 4, 6)
	kv.Changed(12, 20)
	check("after Changed", 0, 13, [2]int{4, 6}, [2]int{12, 13})
	m.setCurrent(0, 0, 13)
	if err := kv.Shift(7, 9, 2, c); err != nil {
		t.Fatal(err)
	}
	check("after Shift", 0, 13, [2]int{7, 9})
	m.setCurrent(0, 0, 13)
	kv.Truncate(11)
	check("after Truncate", 0, 11)
	kv.Grow(make([]int32, 2), Positions(11, 2))
	check("after Truncate and Grow", 0, 13, [2]int{11, 13})
	m.setCurrent(0, 0, 13)
	p := &Pass{kv: kv, Rows: []int{3, 8}, K: make([]float32, 2*kv.KVDim), V: make([]float32, 2*kv.KVDim)}
	p.WriteKV(0, []int{1})
	check("after a CPU pass wrote row 8", 0, 13, [2]int{8, 9})
	if m2 := kv.claimMirror(new(int)); len(staleRuns(m2, 0, 13)) != 1 || m2.low[0] != 0 {
		t.Fatalf("another owner's record is not empty: %v", staleRuns(m2, 0, 13))
	}
}
