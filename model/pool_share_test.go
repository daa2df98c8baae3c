package model_test

import (
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blendrag/blendrag/kernels"
	"github.com/blendrag/blendrag/model"
	"github.com/blendrag/blendrag/model/modeltest"
)

// TestSharedPoolOutlivesTheModelsThatBorrowIt: a model loaded with
// Options.Pool computes on that pool, gives the same logits as one with its
// own pool, and leaves the pool open when closed, so the owner still works.
func TestSharedPoolOutlivesTheModelsThatBorrowIt(t *testing.T) {
	owner := modeltest.New(t, modeltest.Spec{Layers: 2, Dim: 64, Heads: 4, KVHeads: 2, FFN: 128, Seed: 7, Weights: kernels.Q4_1})
	path := filepath.Join(t.TempDir(), "b.gguf")
	spec := modeltest.Spec{Layers: 1, Dim: 32, Heads: 2, KVHeads: 1, FFN: 64, Seed: 8, Weights: kernels.Q4_1}
	if err := modeltest.Write(path, spec); err != nil {
		t.Fatal(err)
	}
	own, err := model.Load(path, model.Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	borrower, err := model.Load(path, model.Options{Pool: owner.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	if borrower.Pool() != owner.Pool() {
		t.Fatal("the borrower made its own pool")
	}
	toks := []int32{1, 5, 9, 13, 2}
	logits := func(m *model.Model) []float32 {
		t.Helper()
		got, err := m.Forward(model.NewKV(m.Config), toks, model.Positions(0, len(toks)), false)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if !slices.Equal(logits(borrower), logits(own)) {
		t.Error("logits on the shared pool differ from the model's own pool")
	}
	want := logits(owner)
	if err := borrower.Close(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(logits(owner), want) {
		t.Error("the owner computes differently after the borrower closed")
	}
	// A closed pool still computes, on the caller alone: the second
	// worker taking part shows the pool is open.
	w := &workerSeen{}
	owner.Pool().RunTask(8, w)
	if !w.second.Load() {
		t.Error("after the borrower closed, the shared pool runs on one goroutine: it was closed")
	}
}

// workerSeen sleeps in each call and records whether worker 1 made one.
type workerSeen struct{ second atomic.Bool }

func (w *workerSeen) Do(worker, lo, hi int) {
	time.Sleep(5 * time.Millisecond)
	if worker == 1 {
		w.second.Store(true)
	}
}
