package kvstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/blendrag/blendrag/model"
	"github.com/blendrag/blendrag/model/modeltest"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func openStore(t *testing.T, dir string, opt Options) *Store {
	t.Helper()
	opt.Logger = quiet
	if opt.DiskBudget == 0 {
		opt.DiskBudget = 1 << 30
	}
	s, err := Open(dir, opt)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// synthKV returns a random cache of rows rows at positions start.. .
func synthKV(seed uint64, layers, rows, dim, start int) *model.KV {
	r := rand.New(rand.NewPCG(seed, 7))
	kv := &model.KV{KVDim: dim, Pos: model.Positions(start, rows), K: make([][]float32, layers), V: make([][]float32, layers)}
	for i := 0; i < rows; i++ {
		kv.Tokens = append(kv.Tokens, int32(r.IntN(1000)))
	}
	for l := range layers {
		kv.K[l] = testMatrix(r, rows, dim)
		kv.V[l] = testMatrix(r, rows, dim)
	}
	return kv
}

func key(chunk string) Key { return Key{Model: "m1", Segment: "s1/p", Chunk: chunk} }

func equalKV(t *testing.T, got, want *model.KV) {
	t.Helper()
	if got.KVDim != want.KVDim || !slices.Equal(got.Pos, want.Pos) || !slices.Equal(got.Tokens, want.Tokens) || len(got.K) != len(want.K) {
		t.Fatalf("shape/positions/tokens differ: %d %v %v vs %d %v %v", got.KVDim, got.Pos, got.Tokens, want.KVDim, want.Pos, want.Tokens)
	}
	for l := range want.K {
		if !slices.Equal(got.K[l], want.K[l]) || !slices.Equal(got.V[l], want.V[l]) {
			t.Fatalf("layer %d differs", l)
		}
	}
}

// TestF32StoredKVReproducesLogitsExactly stores a real prefill's KV of a
// generated model and continues from the loaded cache: the logits equal
// those of continuing from the original cache bit for bit.
func TestF32StoredKVReproducesLogitsExactly(t *testing.T) {
	m := modeltest.New(t, modeltest.Spec{Layers: 2, Dim: 128, Heads: 4, KVHeads: 2, FFN: 128, Weights: 0, Seed: 3})
	kv := model.NewKV(m.Config)
	toks := m.Tok.Encode("the river rises in the north", false)
	if _, err := m.Forward(kv, toks, model.Positions(0, len(toks)), false); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, t.TempDir(), Options{Codec: CodecF32})
	defer s.Close()
	if err := s.Put(key("c"), kv); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(key("c"))
	if err != nil {
		t.Fatal(err)
	}
	equalKV(t, got, kv)
	q := m.Tok.Encode(" and south", false)
	want, err := m.Forward(kv, q, model.Positions(len(toks), len(q)), false)
	if err != nil {
		t.Fatal(err)
	}
	have, err := m.Forward(got, q, model.Positions(len(toks), len(q)), false)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(want, have) {
		t.Fatal("logits over the stored cache differ from those over the original")
	}
}

func TestPutGetRoundTripPerCodecAndSurvivesReopen(t *testing.T) {
	for _, c := range Codecs {
		t.Run(string(c), func(t *testing.T) {
			dir := t.TempDir()
			kv := synthKV(1, 3, 20, 64, 11)
			s := openStore(t, dir, Options{Codec: c})
			if err := s.Put(key("a"), kv); err != nil {
				t.Fatal(err)
			}
			first, err := s.Get(key("a"))
			if err != nil {
				t.Fatal(err)
			}
			// The stored values are the codec's round trip of each matrix.
			for l := range kv.K {
				for _, m := range []struct {
					x, y      []float32
					perColumn bool
				}{{kv.K[l], first.K[l], true}, {kv.V[l], first.V[l], false}} {
					b, _ := c.encode(nil, m.x, 20, 64, m.perColumn)
					want := make([]float32, len(m.x))
					c.decode(want, b, 20, 64, m.perColumn)
					if !slices.Equal(want, m.y) {
						t.Fatalf("layer %d: stored values differ from the codec's round trip", l)
					}
				}
			}
			bytesUsed, n := s.Usage()
			if n != 1 || bytesUsed <= 0 {
				t.Fatalf("usage %d bytes, %d chunks", bytesUsed, n)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = openStore(t, dir, Options{Codec: c})
			defer s.Close()
			if b2, n2 := s.Usage(); b2 != bytesUsed || n2 != 1 {
				t.Fatalf("usage after reopen %d/%d, want %d/1", b2, n2, bytesUsed)
			}
			again, err := s.Get(key("a"))
			if err != nil {
				t.Fatal(err)
			}
			equalKV(t, again, first)
		})
	}
}

func TestDifferentModelSegmentOrCodecNeverServesStale(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{Codec: CodecFP16})
	a := synthKV(1, 2, 8, 64, 5)
	if err := s.Put(key("c"), a); err != nil {
		t.Fatal(err)
	}
	for _, k := range []Key{{"m2", "s1/p", "c"}, {"m1", "s2/p", "c"}, {"m1", "s1/q", "c"}, {"m1", "s1/p", "d"}, {"m1/s1", "p", "c"}} {
		if s.Has(k) {
			t.Errorf("Has(%v) after putting %v", k, key("c"))
		}
		if _, err := s.Get(k); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%v) = %v, want ErrNotFound", k, err)
		}
	}
	s.Close()
	s = openStore(t, dir, Options{Codec: CodecInt8})
	if s.Has(key("c")) {
		t.Error("an int8 store has the fp16 chunk")
	}
	if _, err := s.Get(key("c")); !errors.Is(err, ErrNotFound) {
		t.Errorf("int8 Get of an fp16 chunk = %v, want ErrNotFound", err)
	}
	b := synthKV(2, 2, 8, 64, 5)
	if err := s.Put(key("c"), b); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openStore(t, dir, Options{Codec: CodecFP16})
	defer s.Close()
	got, err := s.Get(key("c"))
	if err != nil {
		t.Fatal(err)
	}
	want := a.Clone()
	for l := range want.K {
		for i := range want.K[l] {
			want.K[l][i] = roundTrip(want.K[l][i])
			want.V[l][i] = roundTrip(want.V[l][i])
		}
	}
	equalKV(t, got, want)
	if _, n := s.Usage(); n != 2 {
		t.Errorf("%d chunks stored, want 2 (fp16 and int8)", n)
	}
}

func roundTrip(v float32) float32 {
	b, _ := CodecFP16.encode(nil, []float32{v}, 1, 1, false)
	out := make([]float32, 1)
	CodecFP16.decode(out, b, 1, 1, false)
	return out[0]
}

// rawUpdate changes the stored value of a Badger key through the database.
func rawUpdate(t *testing.T, s *Store, k []byte, f func(v []byte) []byte) {
	t.Helper()
	err := s.db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(k)
		if err != nil {
			return err
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		if v = f(v); v == nil {
			return txn.Delete(k)
		}
		return txn.Set(k, v)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestCorruptTruncatedOrMissingValueIsErrCorruptAndDropped(t *testing.T) {
	layer1 := dbKey(tagLayer, key("c"), CodecInt8, 1)
	meta := dbKey(tagMeta, key("c"), CodecInt8, 0)
	cases := []struct {
		name string
		key  []byte
		f    func([]byte) []byte
	}{
		{"flipped payload byte", layer1, func(v []byte) []byte { v[len(v)/2] ^= 0x10; return v }},
		{"flipped header byte", layer1, func(v []byte) []byte { v[5] ^= 1; return v }},
		{"truncated value", layer1, func(v []byte) []byte { return v[:len(v)-3] }},
		{"missing value", layer1, func([]byte) []byte { return nil }},
		{"empty value", layer1, func([]byte) []byte { return []byte{} }},
		{"flipped metadata byte", meta, func(v []byte) []byte { v[25] ^= 0x80; return v }},
		{"truncated metadata", meta, func(v []byte) []byte { return v[:10] }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t, t.TempDir(), Options{Codec: CodecInt8})
			defer s.Close()
			kv := synthKV(3, 3, 12, 64, 2)
			other := synthKV(4, 3, 12, 64, 2)
			if err := s.Put(key("c"), kv); err != nil {
				t.Fatal(err)
			}
			if err := s.Put(key("ok"), other); err != nil {
				t.Fatal(err)
			}
			rawUpdate(t, s, tc.key, tc.f)
			_, err := s.Get(key("c"))
			var ce *ChunkError
			if !errors.Is(err, ErrCorrupt) || !errors.As(err, &ce) || len(ce.Corrupt) != 1 || ce.Corrupt[0] != key("c") {
				t.Fatalf("Get = %v, want ErrCorrupt naming chunk c", err)
			}
			if s.Has(key("c")) {
				t.Error("the corrupt chunk is still listed")
			}
			if _, err := s.Get(key("c")); !errors.Is(err, ErrNotFound) {
				t.Errorf("Get after corruption = %v, want ErrNotFound", err)
			}
			if _, err := s.Get(key("ok")); err != nil {
				t.Errorf("the other chunk: %v", err)
			}
			// The caller recomputes and puts it again.
			if err := s.Put(key("c"), kv); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Get(key("c")); err != nil {
				t.Fatalf("Get after re-Put: %v", err)
			}
		})
	}
}

// TestCorruptBytesOnDiskAreDetected flips one byte of a stored layer value
// in Badger's files on disk and reopens the store.
func TestCorruptBytesOnDiskAreDetected(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{Codec: CodecF32})
	kv := synthKV(5, 2, 16, 64, 0)
	if err := s.Put(key("c"), kv); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The stored bytes of layer 1's K part: find them in the files.
	val, err := encodeLayer(CodecF32, 1, 16, 64, kv.K[1], kv.V[1])
	if err != nil {
		t.Fatal(err)
	}
	needle := val[layerHead+100 : layerHead+164]
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	found := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i := bytes.Index(b, needle); i >= 0; {
			b[i+10] ^= 0x01
			found++
			j := bytes.Index(b[i+1:], needle)
			if j < 0 {
				break
			}
			i += 1 + j
		}
		if found > 0 {
			if err := os.WriteFile(f, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if found == 0 {
		t.Fatal("the stored value was not found on disk")
	}
	s = openStore(t, dir, Options{Codec: CodecF32})
	defer s.Close()
	_, err = s.Get(key("c"))
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Get after corrupting the file = %v, want ErrCorrupt", err)
	}
	if s.Has(key("c")) {
		t.Error("the corrupt chunk is still listed")
	}
}

// TestInterruptedPutIsNeverReadAsValid simulates crashes at each point of a
// Put: layers written but no metadata record (a first Put), and a re-Put
// that replaced some layers before dying with the old record in place.
func TestInterruptedPutIsNeverReadAsValid(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{Codec: CodecFP16})
	kv := synthKV(6, 3, 10, 64, 0)
	// Crash after the layers of a first Put.
	wb := s.db.NewWriteBatch()
	for l := range 2 {
		v, _ := encodeLayer(CodecFP16, l, 10, 64, kv.K[l], kv.V[l])
		wb.Set(dbKey(tagLayer, key("new"), CodecFP16, l), v)
	}
	if err := wb.Flush(); err != nil {
		t.Fatal(err)
	}
	if s.Has(key("new")) {
		t.Error("Has a chunk whose Put never finished")
	}
	if _, err := s.Get(key("new")); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of an unfinished Put = %v, want ErrNotFound", err)
	}
	// Crash in a re-Put: layer 2 already rewritten with other (valid) data.
	if err := s.Put(key("old"), kv); err != nil {
		t.Fatal(err)
	}
	other := synthKV(7, 3, 10, 64, 0)
	v, _ := encodeLayer(CodecFP16, 2, 10, 64, other.K[2], other.V[2])
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(dbKey(tagLayer, key("old"), CodecFP16, 2), v) }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(key("old")); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Get of a half-rewritten chunk = %v, want ErrCorrupt", err)
	}
	s.Close()
	// Reopening deletes the orphaned layers.
	s = openStore(t, dir, Options{Codec: CodecFP16})
	defer s.Close()
	n := 0
	s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	if n != 0 {
		t.Errorf("%d keys left after reopening, want 0", n)
	}
}

func TestEvictionDropsLeastRecentlyUsedAndOrderSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	kv := synthKV(8, 2, 16, 64, 0)
	probe := openStore(t, t.TempDir(), Options{Codec: CodecFP16})
	probe.Put(key("x"), kv)
	one, _ := probe.Usage()
	probe.Close()

	s := openStore(t, dir, Options{Codec: CodecFP16, DiskBudget: 3 * one})
	for _, c := range []string{"a", "b", "c"} {
		if err := s.Put(key(c), kv); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Get(key("a")); err != nil { // a is now the most recent
		t.Fatal(err)
	}
	if err := s.Put(key("d"), kv); err != nil {
		t.Fatal(err)
	}
	has := func(s *Store) string {
		out := ""
		for _, c := range []string{"a", "b", "c", "d", "e"} {
			if s.Has(key(c)) {
				out += c
			}
		}
		return out
	}
	if got := has(s); got != "acd" {
		t.Fatalf("stored %q after evicting, want acd (b least recently used)", got)
	}
	if used, _ := s.Usage(); used > 3*one {
		t.Errorf("usage %d over the budget %d", used, 3*one)
	}
	if _, err := s.Get(key("b")); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of an evicted chunk = %v, want ErrNotFound", err)
	}
	// Order now: c, a, d; by the time they were put, a would be oldest.
	for _, c := range []string{"a", "c"} {
		if _, err := s.Get(key(c)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s = openStore(t, dir, Options{Codec: CodecFP16, DiskBudget: 3 * one})
	defer s.Close()
	if err := s.Put(key("e"), kv); err != nil {
		t.Fatal(err)
	}
	if got := has(s); got != "ace" {
		t.Fatalf("stored %q after reopening and evicting, want ace (d least recently used)", got)
	}
	big := synthKV(9, 2, 64, 64, 0)
	if err := s.Put(key("big"), big); err == nil {
		t.Error("a chunk larger than the budget was stored")
	}
	// A smaller budget at open evicts at once.
	s.Close()
	s = openStore(t, dir, Options{Codec: CodecFP16, DiskBudget: one})
	if got := has(s); got != "e" {
		t.Fatalf("stored %q after reopening with a budget of one chunk, want e", got)
	}
}

func TestDeleteChunkDropsEveryModelSegmentAndCodec(t *testing.T) {
	dir := t.TempDir()
	kv := synthKV(10, 2, 8, 64, 0)
	s := openStore(t, dir, Options{Codec: CodecFP16})
	for _, k := range []Key{{"m1", "s1", "c"}, {"m2", "s1", "c"}, {"m1", "s2", "c"}, {"m1", "s1", "keep"}} {
		if err := s.Put(k, kv); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s = openStore(t, dir, Options{Codec: CodecInt8})
	if err := s.Put(Key{"m1", "s1", "c"}, kv); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteChunk("c"); err != nil {
		t.Fatal(err)
	}
	if _, n := s.Usage(); n != 1 {
		t.Errorf("%d chunks left, want 1", n)
	}
	s.Close()
	s = openStore(t, dir, Options{Codec: CodecFP16})
	defer s.Close()
	if s.Has(Key{"m1", "s1", "c"}) || s.Has(Key{"m2", "s1", "c"}) || !s.Has(Key{"m1", "s1", "keep"}) {
		t.Error("DeleteChunk left the chunk or removed another")
	}
	if _, n := s.Usage(); n != 1 {
		t.Errorf("%d chunks after reopening, want 1", n)
	}
}

func TestLoadNamesEveryMissingChunkAndLoadsInOrder(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{Codec: CodecF32})
	defer s.Close()
	a, b := synthKV(11, 3, 5, 64, 10), synthKV(12, 3, 9, 64, 15)
	s.Put(key("a"), a)
	s.Put(key("b"), b)
	_, err := s.Load(context.Background(), []Key{key("a"), key("x"), key("b"), key("y")})
	var ce *ChunkError
	if !errors.Is(err, ErrNotFound) || errors.Is(err, ErrCorrupt) || !errors.As(err, &ce) || fmt.Sprint(ce.Missing) != fmt.Sprint([]Key{key("x"), key("y")}) {
		t.Fatalf("Load = %v, want ErrNotFound naming x and y", err)
	}
	ld, err := s.Load(context.Background(), []Key{key("b"), key("a")})
	if err != nil {
		t.Fatal(err)
	}
	defer ld.Close()
	if m := ld.Meta(0); m.Rows != 9 || !slices.Equal(m.Pos, b.Pos) || !slices.Equal(m.Tokens, b.Tokens) {
		t.Errorf("Meta(0) = %+v", m)
	}
	if _, _, err := ld.LoadLayer(1); err == nil {
		t.Error("LoadLayer(1) before layer 0 succeeded")
	}
	for l := range 3 {
		k, v, err := ld.LoadLayer(l)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(k[0], b.K[l]) || !slices.Equal(v[1], a.V[l]) {
			t.Fatalf("layer %d differs", l)
		}
	}
	if _, _, err := ld.LoadLayer(3); err == nil {
		t.Error("LoadLayer past the last layer succeeded")
	}
}

// TestLoadReadsNextLayerWhileCallerWorks checks the overlap by event order:
// the caller's work on layer l waits until the reader has started layer
// l+1, which only a loader that reads ahead can satisfy.
func TestLoadReadsNextLayerWhileCallerWorks(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{Codec: CodecFP16})
	defer s.Close()
	const layers = 5
	for _, c := range []string{"a", "b"} {
		if err := s.Put(key(c), synthKV(13, layers, 6, 64, 0)); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var events []string
	record := func(e string) {
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	}
	started := make([]chan struct{}, layers)
	for i := range started {
		started[i] = make(chan struct{})
	}
	var startOnce [layers]sync.Once
	s.readValue = func(txn *badger.Txn, k []byte, l int, fn func([]byte) error) error {
		startOnce[l].Do(func() {
			record(fmt.Sprintf("read %d", l))
			close(started[l])
		})
		time.Sleep(2 * time.Millisecond) // a slow disk
		return readValue(txn, k, l, fn)
	}
	ld, err := s.Load(context.Background(), []Key{key("a"), key("b")})
	if err != nil {
		t.Fatal(err)
	}
	defer ld.Close()
	for l := range layers {
		if _, _, err := ld.LoadLayer(l); err != nil {
			t.Fatal(err)
		}
		record(fmt.Sprintf("got %d", l))
		if l+1 < layers {
			select {
			case <-started[l+1]:
			case <-time.After(10 * time.Second):
				t.Fatalf("layer %d was not read while the caller worked on layer %d; events %v", l+1, l, events)
			}
		}
		record(fmt.Sprintf("done %d", l))
	}
	mu.Lock()
	defer mu.Unlock()
	pos := map[string]int{}
	for i, e := range events {
		pos[e] = i
	}
	for l := 0; l+1 < layers; l++ {
		if pos[fmt.Sprintf("read %d", l+1)] > pos[fmt.Sprintf("done %d", l)] {
			t.Errorf("read of layer %d started after the work on layer %d finished: %v", l+1, l, events)
		}
	}
}

func TestLoaderCloseAndCancelStopTheReader(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{Codec: CodecFP16})
	defer s.Close()
	s.Put(key("a"), synthKV(14, 6, 4, 64, 0))
	ld, err := s.Load(context.Background(), []Key{key("a")})
	if err != nil {
		t.Fatal(err)
	}
	ld.Close() // with the reader blocked on a full channel
	ld.Close()
	ctx, cancel := context.WithCancel(context.Background())
	ld, err = s.Load(ctx, []Key{key("a")})
	if err != nil {
		t.Fatal(err)
	}
	defer ld.Close()
	cancel()
	var lerr error
	for l := 0; l < 6 && lerr == nil; l++ {
		_, _, lerr = ld.LoadLayer(l)
	}
	if !errors.Is(lerr, context.Canceled) {
		t.Errorf("LoadLayer after cancel = %v, want context.Canceled", lerr)
	}
}

func TestConcurrentLoadAndPutServeWholeChunks(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{Codec: CodecF32})
	defer s.Close()
	versions := []*model.KV{synthKV(20, 4, 6, 64, 0), synthKV(21, 4, 6, 64, 0)}
	if err := s.Put(key("c"), versions[0]); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 20 {
			if err := s.Put(key("c"), versions[i%2]); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 30 {
				got, err := s.Get(key("c"))
				if errors.Is(err, ErrNotFound) {
					continue // between a re-Put's delete and its record
				}
				if err != nil {
					t.Error(err)
					return
				}
				// Every layer comes from the same version.
				which := -1
				for i, v := range versions {
					if slices.Equal(got.K[0], v.K[0]) {
						which = i
					}
				}
				if which < 0 {
					t.Error("layer 0 matches no version")
					return
				}
				for l := range got.K {
					if !slices.Equal(got.V[l], versions[which].V[l]) {
						t.Errorf("layer %d mixes versions", l)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}

func TestPutRejectsMalformedKV(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{Codec: CodecQ4G64})
	defer s.Close()
	good := func() *model.KV { return synthKV(30, 2, 4, 64, 0) }
	cases := map[string]func(kv *model.KV) *model.KV{
		"no rows": func(*model.KV) *model.KV {
			return &model.KV{KVDim: 64, K: make([][]float32, 2), V: make([][]float32, 2)}
		},
		"short layer":      func(kv *model.KV) *model.KV { kv.K[1] = kv.K[1][:10]; return kv },
		"missing V layer":  func(kv *model.KV) *model.KV { kv.V = kv.V[:1]; return kv },
		"tokens mismatch":  func(kv *model.KV) *model.KV { kv.Tokens = kv.Tokens[:2]; return kv },
		"dim not in group": func(*model.KV) *model.KV { return synthKV(31, 2, 4, 96, 0) },
		"NaN value":        func(kv *model.KV) *model.KV { kv.V[0][3] = float32(nanf()); return kv },
	}
	for name, f := range cases {
		if err := s.Put(key(name), f(good())); err == nil {
			t.Errorf("%s: Put succeeded", name)
		}
		if s.Has(key(name)) {
			t.Errorf("%s: stored", name)
		}
	}
	// A refused Put leaves what was stored under the key alone.
	if err := s.Put(key("kept"), good()); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(key("kept"), cases["NaN value"](good())); err == nil || !s.Has(key("kept")) {
		t.Errorf("a refused Put (%v) dropped the stored chunk", err)
	}
	if _, err := s.Get(key("kept")); err != nil {
		t.Error(err)
	}
	if _, err := Open(t.TempDir(), Options{Codec: "zip", Logger: quiet}); err == nil {
		t.Error("Open accepted an unknown codec")
	}
}

func nanf() float64 { var z float64; return z / z }

// capture records the messages and levels of log records.
type capture struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (c *capture) Enabled(context.Context, slog.Level) bool { return true }
func (c *capture) Handle(_ context.Context, r slog.Record) error {
	c.mu.Lock()
	c.recs = append(c.recs, r)
	c.mu.Unlock()
	return nil
}
func (c *capture) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *capture) WithGroup(string) slog.Handler      { return c }

func TestBadgerLogsGoThroughLoggerWithInfoAsDebug(t *testing.T) {
	c := &capture{}
	s, err := Open(t.TempDir(), Options{Logger: slog.New(c), DiskBudget: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, r := range c.recs {
		if len(r.Message) > 7 && r.Message[:7] == "badger:" {
			n++
			if r.Level == slog.LevelInfo {
				t.Errorf("badger record at info: %q", r.Message)
			}
		}
	}
	if n == 0 {
		t.Error("no badger log records reached the logger")
	}
}

func TestLoaderReadTimeCountsReadsNotWaits(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{Codec: CodecFP16})
	defer s.Close()
	const layers = 4
	if err := s.Put(key("a"), synthKV(13, layers, 6, 64, 0)); err != nil {
		t.Fatal(err)
	}
	const slowRead = 10 * time.Millisecond
	s.readValue = func(txn *badger.Txn, k []byte, l int, fn func([]byte) error) error {
		time.Sleep(slowRead)
		return readValue(txn, k, l, fn)
	}
	ld, err := s.Load(context.Background(), []Key{key("a")})
	if err != nil {
		t.Fatal(err)
	}
	defer ld.Close()
	const callerWork = 150 * time.Millisecond
	for l := range layers {
		if _, _, err := ld.LoadLayer(l); err != nil {
			t.Fatal(err)
		}
		time.Sleep(callerWork) // the reader finishes the next layer, then waits on us
	}
	// Every read slept slowRead; the reader also sat idle ≈ callerWork per
	// layer waiting for the hand-over, which must not count.
	got := ld.ReadTime()
	if got < layers*slowRead {
		t.Errorf("ReadTime %v < %d reads × %v", got, layers, slowRead)
	}
	if got >= layers*callerWork/2 {
		t.Errorf("ReadTime %v includes the time the reader waited on the caller (%d × %v)", got, layers, callerWork)
	}
}
