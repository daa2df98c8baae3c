//go:build (cuda || cudaemu) && cgo

package server

import (
	"context"
	"math"
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/blendrag/blendrag/blend"
)

// TestHTTPQueryOnCUDAMatchesTheCPU: a server whose Config.Device is the
// GPU (here the kernels' CPU emulation, -tags cudaemu) ingests — chunk KV
// computed on the device — and answers /v1/query with CacheBlend as a CPU
// server over the same documents does: same chunks (dense retrieval, on
// the CPU in both), same mode, same greedy answer. Asked again,
// it assembles the context from its device tier of chunk KV
// (timings.kv_device counts every chunk). The server's fusion of those
// chunks, from the device tier, then gives first-token logits within 1e-4
// (relative to the largest) of the CPU server's: the generated model has
// float32 weights, and every chunk but the first is moved, so its keys
// are rotated on the device.
func TestHTTPQueryOnCUDAMatchesTheCPU(t *testing.T) {
	req := QueryRequest{AskRequest: AskRequest{Question: bridgeQuestion, K: 3, MaxTokens: 6, Retriever: "dense", Mode: "cacheblend"}}
	ask := func(th *testHTTP) Answer {
		t.Helper()
		var ans Answer
		th.call(t, "POST", "/v1/query", req, http.StatusOK, &ans)
		return ans
	}
	serve := func(device string) *testHTTP {
		th := newTestHTTPWith(t, true, HTTPConfig{}, func(c *Config) {
			c.Device = device
			c.NoCrossEncoder = true // its background work is slow in the emulation
		})
		if _, job := th.upload(t, bridgeDocs); job.State != JobDone {
			t.Fatalf("%s: ingest job %+v", device, job)
		}
		return th
	}
	cpu := serve("cpu")
	want := ask(cpu)
	if len(want.Citations) < 2 {
		t.Fatalf("the CPU server answers from %d chunks; the test needs ≥ 2 (a moved one)", len(want.Citations))
	}
	gpu := serve("cuda")
	for round := range 2 {
		got := ask(gpu)
		if got.Text != want.Text || got.Mode != want.Mode || len(got.Citations) != len(want.Citations) {
			t.Errorf("round %d: the GPU server answers %q (%s, %d chunks), the CPU server %q (%s, %d)",
				round, got.Text, got.Mode, len(got.Citations), want.Text, want.Mode, len(want.Citations))
		}
		for i := range min(len(got.Citations), len(want.Citations)) {
			if got.Citations[i].Chunk.ID != want.Citations[i].Chunk.ID {
				t.Errorf("round %d: chunk %d is %s, the CPU server's %s", round, i, got.Citations[i].Chunk.ID, want.Citations[i].Chunk.ID)
			}
		}
		// Round 0 may compute chunk KV the background precompute has not
		// reached yet; round 1 finds every chunk in the device tier.
		if round == 1 && (got.Timings.KVDevice != len(got.Citations) || got.Timings.KVMissing != 0) {
			t.Errorf("round 1: kv_device %d, kv_missing %d; want %d and 0", got.Timings.KVDevice, got.Timings.KVMissing, len(got.Citations))
		}
	}

	// The metrics count the second round's chunks as served by the device
	// tier, and report the memory it holds.
	if got := testutil.ToFloat64(gpu.h.metrics.kvTiers.WithLabelValues("device")); got != float64(len(want.Citations)) {
		t.Errorf("device tier chunks in the metrics = %v, want %d", got, len(want.Citations))
	}
	if tiers := gpu.svc.KVTiers(); tiers.Device.Bytes == 0 || tiers.Device.Entries == 0 || tiers.Device.Hits == 0 {
		t.Errorf("tiers %+v: want the device tier's record", tiers)
	}

	var texts, ids []string
	for _, c := range want.Citations {
		texts = append(texts, c.Chunk.Text)
		ids = append(ids, c.Chunk.ID)
	}
	firstLogits := func(s *Service) *blend.Result {
		t.Helper()
		e := s.eng
		unlock := e.lockForQuery()
		defer unlock()
		res, _, _, err := s.fuse(context.Background(), e.format.Segments(bridgeQuestion, texts), ids, blend.DefaultOptions(blend.ModeCacheBlend))
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	ref, dev := firstLogits(cpu.svc), firstLogits(gpu.svc)
	if dev.Stats.DeviceHits != len(ids) {
		t.Errorf("the GPU server's fusion took %d of %d chunks from its device tier", dev.Stats.DeviceHits, len(ids))
	}
	var top, diff float64
	for i := range ref.Logits {
		top = max(top, math.Abs(float64(ref.Logits[i])))
		diff = max(diff, math.Abs(float64(ref.Logits[i]-dev.Logits[i])))
	}
	if diff > 1e-4*max(top, 1) {
		t.Errorf("first-token logits: max |GPU − CPU| = %g (largest |logit| %g)", diff, top)
	}
	t.Logf("answer %q from %d chunks; first-token logits max |GPU − CPU| %.3g of %.3g", want.Text, len(ids), diff, top)
}
