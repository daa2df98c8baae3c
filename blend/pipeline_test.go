package blend

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/blendrag/blendrag/model"
	"github.com/blendrag/blendrag/model/modeltest"
)

// recordingSource logs each layer request into a shared event log.
type recordingSource struct {
	inner  Source
	events *[]string
}

func (s recordingSource) LoadLayer(l int) (k, v [][]float32, err error) {
	*s.events = append(*s.events, fmt.Sprint("load ", l))
	return s.inner.LoadLayer(l)
}

func TestPrefillRequestsEachLayerRightBeforeComputingIt(t *testing.T) {
	m := modeltest.New(t, specs()[0])
	f := newFixture(t, m, 20, 7, 12, 9)
	var want []string
	for l := range m.Config.Layers {
		want = append(want, fmt.Sprint("load ", l), fmt.Sprint("compute ", l))
	}
	for _, mode := range []Mode{ModeReuse, ModeCacheBlend, ModeAPE} {
		var events []string
		src := recordingSource{MemorySource(f.chunks), &events}
		trace := func(ev string, l int) {
			if ev == "compute" {
				events = append(events, fmt.Sprint("compute ", l))
			}
		}
		if _, err := prefill(context.Background(), m, f.seg, f.prefix, src, DefaultOptions(mode), trace); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(events, want) {
			t.Errorf("%s: events %v, want %v", mode, events, want)
		}
	}
}

// gatedSource reports each request on asked and serves it only when
// released, so a test can observe what a reader asks for and when.
type gatedSource struct {
	inner   Source
	asked   chan int
	release chan struct{}
}

func (s gatedSource) LoadLayer(l int) (k, v [][]float32, err error) {
	s.asked <- l
	<-s.release
	return s.inner.LoadLayer(l)
}

func TestPrefetchReadsNextLayerBeforeItIsRequested(t *testing.T) {
	m := modeltest.New(t, specs()[0])
	f := newFixture(t, m, 21, 7, 12)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g := gatedSource{MemorySource(f.chunks), make(chan int), make(chan struct{})}
	p := Prefetch(ctx, g, m.Config.Layers, 1)
	wait := func(want int) {
		t.Helper()
		select {
		case l := <-g.asked:
			if l != want {
				t.Fatalf("reader asked for layer %d, want %d", l, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("reader never asked for layer %d", want)
		}
	}
	wait(0)
	g.release <- struct{}{}
	k, _, err := p.LoadLayer(0)
	if err != nil || len(k) != 2 {
		t.Fatalf("layer 0: %d chunks, %v", len(k), err)
	}
	// The caller now "computes" layer 0: the reader is already on layer 1.
	wait(1)
	g.release <- struct{}{}
	if _, _, err := p.LoadLayer(1); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.LoadLayer(3); err == nil {
		t.Errorf("out-of-order request accepted")
	}
	cancel()
	if _, _, err := p.LoadLayer(2); !errors.Is(err, context.Canceled) {
		// The reader may have queued layer 2 before seeing the cancellation.
		if err != nil {
			t.Errorf("after cancel: %v", err)
		}
	}
}

func TestPrefillThroughPrefetchEqualsMemorySource(t *testing.T) {
	m := modeltest.New(t, specs()[0])
	f := newFixture(t, m, 22, 7, 12, 9)
	direct := f.prefill(t, DefaultOptions(ModeCacheBlend))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res, err := Prefill(ctx, m, f.seg, f.prefix, Prefetch(ctx, MemorySource(f.chunks), m.Config.Layers, 2), DefaultOptions(ModeCacheBlend))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(direct.Logits, res.Logits) {
		t.Errorf("prefetching changed the logits")
	}
}

func TestAutoRatioIsTheLargerOfMinimumAndLoadBalancedRatio(t *testing.T) {
	tests := []struct {
		name   string
		min    float64
		load   time.Duration
		perRow time.Duration
		rows   int
		want   float64
	}{
		{"load hides more than the minimum", 0.15, 30 * time.Millisecond, 100 * time.Microsecond, 1000, 0.3},
		{"minimum wins over fast load", 0.15, 5 * time.Millisecond, 100 * time.Microsecond, 1000, 0.15},
		{"slow load clamps to 1", 0.15, time.Second, 100 * time.Microsecond, 1000, 1},
		{"no rows falls back to the minimum", 0.2, time.Second, time.Millisecond, 0, 0.2},
		{"no recompute estimate", 0.1, time.Second, 0, 100, 0.1},
		{"negative minimum clamps to 0", -1, 0, time.Millisecond, 100, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := AutoRatio(tc.min, tc.load, tc.perRow, tc.rows); math.Abs(got-tc.want) > 1e-12 {
				t.Errorf("AutoRatio = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPrefillRejectsBadInput(t *testing.T) {
	m := modeltest.New(t, specs()[0])
	f := newFixture(t, m, 23, 7, 12)
	ctx := context.Background()
	short := []*model.KV{f.chunks[0], f.chunks[1].Slice(0, 5)}
	otherPrefix, err := EncodePrefix(m, f.seg.Prefix[:3])
	if err != nil {
		t.Fatal(err)
	}
	noQ := f.seg
	noQ.Question = nil
	emptyChunk := f.seg
	emptyChunk.Chunks = [][]int32{f.seg.Chunks[0], {}}
	tests := []struct {
		name   string
		seg    Segments
		prefix *model.KV
		src    Source
		opt    Options
	}{
		{"unknown mode", f.seg, f.prefix, MemorySource(f.chunks), Options{Mode: "magic"}},
		{"ratio above 1", f.seg, f.prefix, MemorySource(f.chunks), Options{Mode: ModeCacheBlend, Ratio: 1.5}},
		{"negative temperature", f.seg, f.prefix, MemorySource(f.chunks), Options{Mode: ModeAPE, T: -1}},
		{"no question", noQ, f.prefix, MemorySource(f.chunks), DefaultOptions(ModeFull)},
		{"empty chunk", emptyChunk, f.prefix, MemorySource(f.chunks), DefaultOptions(ModeReuse)},
		{"prefix KV of other tokens", f.seg, otherPrefix, MemorySource(f.chunks), DefaultOptions(ModeReuse)},
		{"nil prefix KV", f.seg, nil, MemorySource(f.chunks), DefaultOptions(ModePrefix)},
		{"no source", f.seg, f.prefix, nil, DefaultOptions(ModeCacheBlend)},
		{"chunk KV of wrong length", f.seg, f.prefix, MemorySource(short), DefaultOptions(ModeCacheBlend)},
		{"too few chunk KVs", f.seg, f.prefix, MemorySource(f.chunks[:1]), DefaultOptions(ModeAPE)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Prefill(ctx, m, tc.seg, tc.prefix, tc.src, tc.opt); err == nil {
				t.Errorf("accepted")
			}
		})
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	for _, mode := range Modes {
		if _, err := Prefill(cancelled, m, f.seg, f.prefix, MemorySource(f.chunks), DefaultOptions(mode)); !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: %v", mode, err)
		}
	}
}

func TestStatsEstimatesAreMeansOverLayersAndRows(t *testing.T) {
	s := Stats{Computed: []int{10, 4, 4, 2}, Load: 40 * time.Millisecond, Compute: 200 * time.Millisecond}
	if got := s.LoadPerLayer(); got != 10*time.Millisecond {
		t.Errorf("LoadPerLayer = %v, want 10ms", got)
	}
	if got := s.ComputePerRow(); got != 10*time.Millisecond {
		t.Errorf("ComputePerRow = %v, want 10ms", got)
	}
	if (Stats{}).LoadPerLayer() != 0 || (Stats{}).ComputePerRow() != 0 {
		t.Errorf("empty stats give non-zero estimates")
	}
}

// holeySource is a store that lost one chunk: it returns nil for it.
type holeySource struct {
	inner Source
	lost  int
}

func (s holeySource) LoadLayer(l int) (k, v [][]float32, err error) {
	k, v, err = s.inner.LoadLayer(l)
	if err == nil {
		k, v = slices.Clone(k), slices.Clone(v)
		k[s.lost], v[s.lost] = nil, nil
	}
	return k, v, err
}

func TestOverrideRecomputedChunkEqualsIntactStore(t *testing.T) {
	m := modeltest.New(t, specs()[0])
	f := newFixture(t, m, 24, 7, 12, 9)
	intact := f.prefill(t, DefaultOptions(ModeCacheBlend))
	holey := holeySource{MemorySource(f.chunks), 1}
	if _, err := Prefill(context.Background(), m, f.seg, f.prefix, holey, DefaultOptions(ModeCacheBlend)); err == nil {
		t.Fatalf("a missing chunk was accepted")
	}
	again, err := EncodeChunk(m, f.prefix, f.seg.Chunks[1])
	if err != nil {
		t.Fatal(err)
	}
	res, err := Prefill(context.Background(), m, f.seg, f.prefix, Override(holey, map[int]*model.KV{1: again}), DefaultOptions(ModeCacheBlend))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(intact.Logits, res.Logits) {
		t.Errorf("the recomputed chunk changed the logits")
	}
	if _, _, err := Override(holey, map[int]*model.KV{5: again}).LoadLayer(0); err == nil {
		t.Errorf("override of a chunk the source does not have was accepted")
	}
}
