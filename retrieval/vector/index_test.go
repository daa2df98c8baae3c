package vector

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// refScores returns the float64 dot product of q with each id's vector.
func refScores(ids []string, vecs [][]float32, q []float32) map[string]float64 {
	out := make(map[string]float64, len(ids))
	for i, v := range vecs {
		var s float64
		for j := range v {
			s += float64(v[j]) * float64(q[j])
		}
		out[ids[i]] = s
	}
	return out
}

func TestExactSearchMatchesBruteForce(t *testing.T) {
	ids, vecs, queries := dataset(5000, 20, 3)
	for _, tc := range []struct{ threads, k int }{{1, 1}, {1, 10}, {2, 10}, {3, 25}, {2, 6000}} {
		t.Run(fmt.Sprintf("threads=%d,k=%d", tc.threads, tc.k), func(t *testing.T) {
			e, err := NewExact(384, tc.threads)
			if err != nil {
				t.Fatal(err)
			}
			for i, v := range vecs {
				if err := e.Add(ids[i], v); err != nil {
					t.Fatal(err)
				}
			}
			for _, q := range queries {
				hits, err := e.Search(q, tc.k)
				if err != nil {
					t.Fatal(err)
				}
				want := bruteForce(ids, vecs, q, tc.k, nil)
				if len(hits) != len(want) {
					t.Fatalf("got %d hits, want %d", len(hits), len(want))
				}
				ref := refScores(ids, vecs, q)
				for i, h := range hits {
					if d := math.Abs(float64(h.Score) - ref[h.ID]); d > 1e-5 {
						t.Fatalf("hit %d %s score %v, reference %v", i, h.ID, h.Score, ref[h.ID])
					}
					if d := math.Abs(ref[h.ID] - ref[want[i]]); d > 1e-5 {
						t.Fatalf("rank %d: got %s (%v), reference %s (%v)", i, h.ID, ref[h.ID], want[i], ref[want[i]])
					}
				}
			}
		})
	}
}

func TestIndexRejectsBadVectors(t *testing.T) {
	ix, err := Open(filepath.Join(t.TempDir(), "v.idx"), 4, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string][]float32{
		"short": {1, 2, 3},
		"long":  {1, 2, 3, 4, 5},
		"NaN":   {1, float32(math.NaN()), 0, 0},
		"Inf":   {1, float32(math.Inf(1)), 0, 0},
	} {
		if err := ix.Add("x", v); err == nil {
			t.Errorf("%s vector accepted", name)
		}
		if _, err := ix.Search(v, 3); err == nil {
			t.Errorf("%s query accepted", name)
		}
	}
	if ix.Len() != 0 || ix.Has("x") {
		t.Fatal("a rejected vector was stored")
	}
	if _, err := Open("x", 0, Options{}); err == nil {
		t.Fatal("dimension 0 accepted")
	}
}

// indexModes are the two search paths of Index.
var indexModes = []struct {
	name string
	opt  Options
}{
	{"exact", Options{HNSWThreshold: -1}},
	{"hnsw", Options{HNSWThreshold: 10, EfConstruction: 100}},
}

func fill(t *testing.T, ix *Index, ids []string, vecs [][]float32) {
	t.Helper()
	for i, v := range vecs {
		if err := ix.Add(ids[i], v); err != nil {
			t.Fatal(err)
		}
	}
}

func TestIndexReAddReplacesVector(t *testing.T) {
	for _, m := range indexModes {
		t.Run(m.name, func(t *testing.T) {
			ids, vecs, _ := dataset(300, 0, 5)
			ix, err := Open(filepath.Join(t.TempDir(), "v.idx"), 384, m.opt)
			if err != nil {
				t.Fatal(err)
			}
			fill(t, ix, ids, vecs)
			// v0 takes v1's vector; a search for it must find both ids at score 1.
			if err := ix.Add("v0", vecs[1]); err != nil {
				t.Fatal(err)
			}
			if ix.Len() != 300 {
				t.Fatalf("Len = %d after re-add, want 300", ix.Len())
			}
			hits, err := ix.Search(vecs[1], 2)
			if err != nil {
				t.Fatal(err)
			}
			got := []string{hits[0].ID, hits[1].ID}
			slices.Sort(got)
			if !slices.Equal(got, []string{"v0", "v1"}) || math.Abs(float64(hits[1].Score)-1) > 1e-5 {
				t.Fatalf("hits %v, want v0 and v1 at score 1", hits)
			}
		})
	}
}

func TestIndexDeletedIDsNeverReturnedAndRecallHolds(t *testing.T) {
	for _, m := range indexModes {
		t.Run(m.name, func(t *testing.T) {
			n := graphSize(2000)
			ids, vecs, queries := dataset(n, 50, 9)
			ix, err := Open(filepath.Join(t.TempDir(), "v.idx"), 384, m.opt)
			if err != nil {
				t.Fatal(err)
			}
			fill(t, ix, ids, vecs)
			if got := ix.UsesHNSW(); got != (m.name == "hnsw") {
				t.Fatalf("UsesHNSW = %v", got)
			}
			deleted := map[string]bool{}
			for i := 0; i < len(ids); i += 3 { // a third, spread over all clusters
				deleted[ids[i]] = true
				if err := ix.Delete(ids[i]); err != nil {
					t.Fatal(err)
				}
			}
			// Queries aimed exactly at deleted vectors stress the tombstones.
			probes := append(slices.Clone(queries), vecs[0], vecs[3], vecs[6])
			if err := ix.Delete("no-such-id"); err != nil {
				t.Fatal(err)
			}
			if ix.Has(ids[0]) || !ix.Has(ids[1]) || ix.Len() != n-len(deleted) {
				t.Fatalf("Has/Len wrong after delete: Len=%d", ix.Len())
			}
			r := recall(t, ix.Search, ids, vecs, probes, 10, deleted)
			if r < 0.95 {
				t.Fatalf("recall@10 after deleting a third = %.3f, want ≥ 0.95", r)
			}
			if err := ix.Save(); err != nil { // compacts the tombstones away
				t.Fatal(err)
			}
			if r := recall(t, ix.Search, ids, vecs, probes, 10, deleted); r < 0.95 {
				t.Fatalf("recall@10 after compaction = %.3f, want ≥ 0.95", r)
			}
			if got := len(ix.IDs()); got != n-len(deleted) {
				t.Fatalf("IDs has %d entries after compaction", got)
			}
		})
	}
}

func TestIndexSaveLoadRoundTripGivesEqualResults(t *testing.T) {
	for _, m := range indexModes {
		t.Run(m.name, func(t *testing.T) {
			ids, vecs, queries := dataset(graphSize(1000), 20, 11)
			path := filepath.Join(t.TempDir(), "v.idx")
			ix, err := Open(path, 384, m.opt)
			if err != nil {
				t.Fatal(err)
			}
			fill(t, ix, ids, vecs)
			for i := 0; i < len(ids); i += 7 {
				ix.Delete(ids[i])
			}
			if err := ix.Save(); err != nil {
				t.Fatal(err)
			}
			back, err := Open(path, 384, m.opt)
			if err != nil {
				t.Fatal(err)
			}
			if back.UsesHNSW() != ix.UsesHNSW() || !slices.Equal(back.IDs(), ix.IDs()) {
				t.Fatalf("reloaded index differs: hnsw %v/%v, %d/%d ids", back.UsesHNSW(), ix.UsesHNSW(), back.Len(), ix.Len())
			}
			for _, q := range queries {
				a, _ := ix.Search(q, 10)
				b, _ := back.Search(q, 10)
				if !slices.Equal(a, b) {
					t.Fatalf("results differ after reload:\n%v\n%v", a, b)
				}
			}
			if err := back.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := back.Search(queries[0], 1); !errors.Is(err, ErrClosed) {
				t.Fatalf("Search after Close: %v", err)
			}
		})
	}
}

func TestOpenCorruptFileErrorsNamingFile(t *testing.T) {
	ids, vecs, _ := dataset(50, 0, 13)
	path := filepath.Join(t.TempDir(), "v.idx")
	ix, err := Open(path, 384, Options{HNSWThreshold: 10})
	if err != nil {
		t.Fatal(err)
	}
	fill(t, ix, ids, vecs)
	if err := ix.Save(); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	flip := slices.Clone(good)
	flip[len(flip)/2] ^= 1
	magic := slices.Clone(good)
	magic[0] = 'X'
	cases := map[string][]byte{
		"flipped byte": flip,
		"truncated":    good[:len(good)-100],
		"bad magic":    magic,
		"empty":        {},
	}
	for name, data := range cases {
		bad := filepath.Join(t.TempDir(), "bad.idx")
		if err := os.WriteFile(bad, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(bad, 384, Options{}); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("%s: err = %v, want an error naming %s", name, err, bad)
		}
	}
	if _, err := Open(path, 383, Options{}); err == nil || !strings.Contains(err.Error(), "dimension") {
		t.Errorf("wrong dimension: err = %v", err)
	}
}

func TestIndexConcurrentSearchDuringAdd(t *testing.T) {
	ids, vecs, queries := dataset(600, 10, 17)
	ix, err := Open(filepath.Join(t.TempDir(), "v.idx"), 384, Options{HNSWThreshold: 200, EfConstruction: 40})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for r := range 3 {
		wg.Go(func() {
			for i := 0; i < 200; i++ {
				if _, err := ix.Search(queries[(i+r)%len(queries)], 5); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i, v := range vecs {
			if err := ix.Add(ids[i], v); err != nil {
				errs <- err
				return
			}
			if i%50 == 0 {
				ix.Delete(ids[i/2])
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if !ix.UsesHNSW() {
		t.Fatal("index did not switch to HNSW above its threshold")
	}
}

func TestIndexSwitchKeepsWritesMadeDuringTheBuild(t *testing.T) {
	ids, vecs, _ := dataset(300, 0, 19)
	ix, err := Open(filepath.Join(t.TempDir(), "v.idx"), 384, Options{HNSWThreshold: 200, EfConstruction: 60})
	if err != nil {
		t.Fatal(err)
	}
	fill(t, ix, ids[:200], vecs[:200])
	if ix.UsesHNSW() {
		t.Fatal("switched at the threshold, want only above it")
	}
	ran := false
	ix.buildHook = func() {
		ran = true
		// The graph is being built without the lock: writes and searches
		// must go through, against the exact index.
		if err := ix.Delete(ids[0]); err != nil {
			t.Error(err)
		}
		if err := ix.Add(ids[1], vecs[2]); err != nil { // replace
			t.Error(err)
		}
		fill(t, ix, ids[201:], vecs[201:])
		hits, err := ix.Search(vecs[250], 1)
		if err != nil || len(hits) != 1 || hits[0].ID != ids[250] {
			t.Errorf("search during the build: %v, %v", hits, err)
		}
		if ix.UsesHNSW() {
			t.Error("HNSW in use before its build finished")
		}
	}
	if err := ix.Add(ids[200], vecs[200]); err != nil {
		t.Fatal(err)
	}
	if !ran || !ix.UsesHNSW() {
		t.Fatalf("hook ran %v, UsesHNSW %v", ran, ix.UsesHNSW())
	}
	if ix.Len() != 299 || ix.Has(ids[0]) || !ix.Has(ids[299]) {
		t.Fatalf("Len %d, Has(deleted) %v, Has(added during build) %v", ix.Len(), ix.Has(ids[0]), ix.Has(ids[299]))
	}
	hits, err := ix.Search(vecs[2], 2)
	if err != nil {
		t.Fatal(err)
	}
	got := []string{hits[0].ID, hits[1].ID}
	slices.Sort(got)
	if want := []string{ids[1], ids[2]}; !slices.Equal(got, want) {
		t.Fatalf("replaced vector: hits %v, want %v", got, want)
	}
	excluded := map[string]bool{ids[0]: true, ids[1]: true}
	for i := 200; i < 300; i += 10 {
		hits, err := ix.Search(vecs[i], 1)
		if err != nil || hits[0].ID != ids[i] || excluded[hits[0].ID] {
			t.Fatalf("vector %d added during the build: hits %v, %v", i, hits, err)
		}
	}
}
