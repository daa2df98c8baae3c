package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blendrag/blendrag/model/fetch"
)

// openTest opens a Service on dir with the default models, skipping the test
// when they have not been fetched (`make models`).
func openTest(t testing.TB, dir string) *Service {
	t.Helper()
	if _, err := os.Stat(fetch.GeneratorPath(fetch.Dir())); err != nil {
		t.Skip("default models not present: run `make models`")
	}
	s, err := Open(Config{DataDir: dir, Threads: 2, NoGenerator: true})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

// topicText builds a multi-paragraph document about a made-up subject named
// by marker, long enough for several chunks when paras is large.
func topicText(marker string, paras int) string {
	var b strings.Builder
	for i := range paras {
		fmt.Fprintf(&b, "The %s festival of year %d gathered weavers, potters and glassblowers from the valley. "+
			"Visitors to %s admired lanterns shaped like herons, and the council counted %d stalls along the river. "+
			"Each evening the %s choir sang old harvest songs while the bakers sold honey bread.\n\n",
			marker, 1900+i, marker, 40+i, marker)
	}
	return b.String()
}

// checkConsistent asserts the store's invariants: no half-done document,
// every index holds exactly the chunks of committed documents, and every
// committed document's chunks are marked in every index.
func checkConsistent(t *testing.T, s *Service) (committed []DocumentInfo) {
	t.Helper()
	want := map[string]bool{}
	err := s.cat.docs(func(rec docRecord) bool {
		if rec.State != stateCommitted {
			t.Errorf("document %s left in state %s", rec.Doc.ID, rec.State)
		}
		committed = append(committed, rec.Doc)
		for _, id := range rec.Chunks {
			want[id] = true
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.cat.chunks(func(rec chunkRecord) bool {
		if !want[rec.ID] {
			t.Errorf("chunk record %s belongs to no committed document", rec.ID)
		}
		for _, ix := range s.indexNames() {
			if !rec.Indexes[ix] {
				t.Errorf("chunk %s not marked in %s", rec.ID, ix)
			}
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	bm, err := s.bm25.IDs()
	if err != nil {
		t.Fatal(err)
	}
	for name, have := range map[string][]string{"bm25": bm, "dense": s.dense.IDs()} {
		set := map[string]bool{}
		for _, id := range have {
			set[id] = true
			if !want[id] {
				t.Errorf("%s holds chunk %s of no committed document", name, id)
			}
		}
		for id := range want {
			if !set[id] {
				t.Errorf("%s lacks chunk %s of a committed document", name, id)
			}
		}
	}
	return committed
}

func TestIngestSearchDeleteSharesChunks(t *testing.T) {
	s := openTest(t, t.TempDir())
	defer s.Close()
	ctx := context.Background()

	shared := "The lighthouse keeper Ormsby recorded every storm in a green ledger for forty years."
	a, err := s.IngestText(ctx, "Herons", topicText("heronsville", 3)+shared, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.IngestText(ctx, "Pottery", topicText("claymarsh", 3)+shared, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.Doc.ID == b.Doc.ID || a.Doc.Chunks == 0 {
		t.Fatalf("documents: %+v %+v", a.Doc, b.Doc)
	}
	again, err := s.IngestText(ctx, "Herons", topicText("heronsville", 3)+shared, nil)
	if err != nil || !again.Existing || again.Doc.ID != a.Doc.ID {
		t.Fatalf("re-ingest: %+v, %v; want the existing document", again, err)
	}
	checkConsistent(t, s)

	for _, retr := range []string{RetrieverBM25, RetrieverDense, RetrieverHybrid} {
		res, err := s.Search(ctx, SearchRequest{Query: "claymarsh festival stalls", K: 3, Retriever: retr})
		if err != nil {
			t.Fatalf("%s: %v", retr, err)
		}
		if len(res) == 0 || res[0].Chunk.Doc != b.Doc.ID || res[0].Title != "Pottery" {
			t.Errorf("%s: top result %+v, want a chunk of %s", retr, res, b.Doc.ID)
		}
		if res[0].Ranks[retr] != 1 && retr != RetrieverHybrid {
			t.Errorf("%s: ranks %v", retr, res[0].Ranks)
		}
	}
	_, chunks, err := s.Document(a.Doc.ID)
	if err != nil || len(chunks) != a.Doc.Chunks {
		t.Fatalf("Document: %d chunks, %v; want %d", len(chunks), err, a.Doc.Chunks)
	}
	for _, c := range chunks {
		if c.Doc != a.Doc.ID || c.End <= c.Start {
			t.Errorf("chunk ref %+v", c.ChunkRef)
		}
	}

	// Deleting A keeps the chunk B shares; deleting B empties the store.
	if err := s.Delete(ctx, a.Doc.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, a.Doc.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete: %v, want ErrNotFound", err)
	}
	checkConsistent(t, s)
	res, err := s.Search(ctx, SearchRequest{Query: "Ormsby lighthouse ledger", K: 5, Retriever: RetrieverBM25})
	if err != nil || len(res) == 0 || res[0].Chunk.Doc != b.Doc.ID {
		t.Fatalf("shared chunk after deleting A: %+v, %v", res, err)
	}
	res, err = s.Search(ctx, SearchRequest{Query: "heronsville", K: 5, Retriever: RetrieverBM25})
	if err != nil || len(res) != 0 {
		t.Fatalf("deleted document still searchable: %+v, %v", res, err)
	}
	if err := s.Delete(ctx, b.Doc.ID); err != nil {
		t.Fatal(err)
	}
	if docs := checkConsistent(t, s); len(docs) != 0 {
		t.Fatalf("documents left: %v", docs)
	}
}

func TestBadInputLeavesStoreUnchanged(t *testing.T) {
	s := openTest(t, t.TempDir())
	defer s.Close()
	ctx := context.Background()
	if _, err := s.IngestText(ctx, "ok", topicText("goodtown", 2), nil); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		data []byte
	}{
		{"empty.txt", nil},
		{"blank.txt", []byte(" \n\t \n")},
		{"binary.bin", []byte{0x7f, 'E', 'L', 'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0x3e, 0, 1, 0, 0, 0}},
		{"broken.pdf", []byte("%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R >>\nendobj\ntrailer")},
	}
	for _, c := range cases {
		_, err := s.Ingest(ctx, c.name, c.data, nil)
		if !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), c.name) {
			t.Errorf("%s: err = %v; want ErrBadRequest naming the file", c.name, err)
		}
	}
	if _, err := s.Search(ctx, SearchRequest{Query: "  "}); !errors.Is(err, ErrBadRequest) {
		t.Errorf("empty query: %v", err)
	}
	if _, err := s.Search(ctx, SearchRequest{Query: "x", Retriever: "magic"}); !errors.Is(err, ErrBadRequest) {
		t.Errorf("unknown retriever: %v", err)
	}
	if _, err := s.Search(ctx, SearchRequest{Query: "x", Retriever: RetrieverCUR}); !errors.Is(err, ErrNoCE) {
		t.Errorf("cur without a cross-encoder: %v", err)
	}
	if docs := checkConsistent(t, s); len(docs) != 1 {
		t.Fatalf("%d documents, want 1", len(docs))
	}
}

func TestCancelledIngestRollsBack(t *testing.T) {
	s := openTest(t, t.TempDir())
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	progress := func(p Progress) {
		if p.Stage == "embed" { // after BM25 committed: a real rollback
			cancel()
		}
	}
	_, err := s.IngestText(ctx, "long", topicText("cancelburg", 12), progress)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if docs := checkConsistent(t, s); len(docs) != 0 {
		t.Fatalf("cancelled document committed: %v", docs)
	}
}

// crashEnv names the data dir of the child process TestKill9DuringIngest
// starts; the child ingests documents until it is killed.
const crashEnv = "BLENDRAG_TEST_CRASH_DIR"

func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashEnv)
	if dir == "" {
		t.Skip("helper process for TestKill9DuringIngestLeavesConsistentStore")
	}
	s, err := Open(Config{DataDir: dir, Threads: 1, NoGenerator: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(3)
	}
	fmt.Println("ready")
	for i := 0; ; i++ {
		marker := fmt.Sprintf("crashmark%dx%d", os.Getpid()%1000, i)
		if _, err := s.IngestText(context.Background(), marker, topicText(marker, 2+i%5), nil); err != nil {
			fmt.Fprintln(os.Stderr, "child ingest:", err)
			os.Exit(4)
		}
		if i%3 == 2 { // deletes are interrupted too
			docs, _, _ := s.Documents(0, 1)
			if len(docs) > 0 {
				s.Delete(context.Background(), docs[0].ID)
			}
		}
	}
}

func TestKill9DuringIngestLeavesConsistentStore(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills processes")
	}
	dir := t.TempDir()
	openTest(t, dir).Close() // skips without models; creates the store
	rng := rand.New(rand.NewPCG(7, 11))
	interrupted := 0
	for round := range 6 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashEnv+"="+dir)
		out, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64) // wait until the child has opened the store
		if n, _ := out.Read(buf); !strings.Contains(string(buf[:n]), "ready") {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("round %d: child did not start: %q", round, buf[:n])
		}
		time.Sleep(time.Duration(300+rng.IntN(3000)) * time.Millisecond)
		cmd.Process.Kill() // SIGKILL: no deferred cleanup, no Close
		cmd.Wait()

		// What the kill interrupted, seen in the catalog before recovery.
		cat, err := openCatalog(filepath.Join(dir, "catalog"), CatalogOptions{}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		cat.docs(func(rec docRecord) bool {
			if rec.State != stateCommitted {
				interrupted++
				t.Logf("round %d: killed with %s in state %s", round, rec.Doc.Title, rec.State)
			}
			return true
		})
		cat.close()

		s := openTest(t, dir)
		docs := checkConsistent(t, s)
		// Every committed document is findable by its marker; nothing else is.
		for _, d := range docs {
			res, err := s.Search(context.Background(), SearchRequest{Query: d.Title, K: 3, Retriever: RetrieverBM25})
			if err != nil || len(res) == 0 || res[0].Chunk.Doc != d.ID {
				t.Errorf("round %d: committed %s not found first: %+v %v", round, d.Title, res, err)
			}
		}
		t.Logf("round %d: %d committed documents after kill", round, len(docs))
		s.Close()
		if t.Failed() {
			return
		}
	}
	if interrupted == 0 {
		t.Fatal("no kill landed inside an ingest or delete: the test exercised no recovery")
	}
}
