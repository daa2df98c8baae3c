package retrieval

import (
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// bm25Corpus uses words the English analyzer keeps (no stop words) and
// stems apart, so the test can count terms with strings.Fields.
var bm25Corpus = []string{
	"apple banana cherry",
	"banana banana banana grape",
	"cherry lemon mango peach plum grape lemon mango",
	"apple apple",
	"plum",
	"banana mango peach plum grape lemon cherry apple banana lemon mango peach",
}

func chunksOf(texts []string) []Chunk {
	out := make([]Chunk, len(texts))
	for i, t := range texts {
		out[i] = Chunk{ID: ChunkID(t), Text: t}
	}
	return out
}

func openTestBM25(t *testing.T, dir string) *BM25 {
	t.Helper()
	b, err := OpenBM25(dir)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBM25ScoresAreBM25 recomputes every hit's score from term and length
// statistics counted here, with bleve's BM25 (k1 = 1.2, b = 0.75, its idf,
// √tf, ceil(avgdl), query norm and coordination for several terms; see
// search/scorer/scorer_term.go and search/searcher/search_term.go in
// bleve v2.6.3), and checks the scores are not bleve's TF-IDF.
func TestBM25ScoresAreBM25(t *testing.T) {
	b := openTestBM25(t, filepath.Join(t.TempDir(), "bm25"))
	defer b.Close()
	// Two batches (two segments), and a chunk added and deleted: the
	// statistics must be those of the six live chunks.
	all := chunksOf(append(slices.Clone(bm25Corpus), "banana kiwi kiwi kiwi kiwi kiwi"))
	for _, batch := range [][]Chunk{all[:3], all[3:]} {
		if err := b.Add(batch); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Delete([]string{all[6].ID}); err != nil {
		t.Fatal(err)
	}
	const k1, bb = 1.2, 0.75
	n := float64(len(bm25Corpus))
	df := map[string]float64{}
	total := 0
	for _, d := range bm25Corpus {
		seen := map[string]bool{}
		for _, w := range strings.Fields(d) {
			if !seen[w] {
				df[w]++
				seen[w] = true
			}
			total++
		}
	}
	avgdl := math.Ceil(float64(total) / n)
	idf := func(w string) float64 { return math.Log(1 + (n-df[w]+0.5)/(df[w]+0.5)) }
	sat := func(w, doc string) float64 { // bleve's per-term BM25 without idf
		tf := termFreq(w, doc)
		if tf == 0 {
			return 0
		}
		dl := float64(len(strings.Fields(doc)))
		return math.Sqrt(tf) * k1 / (math.Sqrt(tf) + k1*(1-bb+bb*dl/avgdl))
	}
	tfidf := func(w, doc string) float64 {
		tf := termFreq(w, doc)
		return math.Sqrt(tf) / math.Sqrt(float64(len(strings.Fields(doc)))) * (1 + math.Log(n/(df[w]+1)))
	}
	for _, query := range []string{"banana", "plum", "lemon", "banana cherry", "apple plum mango"} {
		terms := strings.Fields(query)
		hits, err := b.Search(query, 10)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]float64{}
		var norm float64
		for _, w := range terms {
			norm += idf(w) * idf(w)
		}
		for _, doc := range bm25Corpus {
			var s float64
			matched := 0
			for _, w := range terms {
				if v := sat(w, doc); v > 0 {
					matched++
					if len(terms) == 1 {
						s += idf(w) * v
					} else {
						s += idf(w) * v * idf(w) / math.Sqrt(norm)
					}
				}
			}
			if matched > 0 {
				want[ChunkID(doc)] = s * float64(matched) / float64(len(terms))
			}
		}
		if len(hits) != len(want) {
			t.Fatalf("%q: %d hits, want %d", query, len(hits), len(want))
		}
		differs := false
		for i, h := range hits {
			w, ok := want[h.ID]
			if !ok || math.Abs(h.Score-w) > 1e-6*w {
				t.Errorf("%q hit %d: score %.9g, want BM25 %.9g", query, i, h.Score, w)
			}
			if i > 0 && hits[i-1].Score < h.Score {
				t.Errorf("%q: hits not best first", query)
			}
			if len(terms) == 1 {
				for _, doc := range bm25Corpus {
					if ChunkID(doc) == h.ID && math.Abs(h.Score-tfidf(terms[0], doc)) > 1e-3 {
						differs = true
					}
				}
			}
		}
		if len(terms) == 1 && !differs {
			t.Errorf("%q: scores equal TF-IDF", query)
		}
	}
}

func TestBM25AddDeleteReopenPersists(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nested", "bm25")
	b := openTestBM25(t, dir)
	var texts []string
	for i := range 50 {
		texts = append(texts, fmt.Sprintf("chunk number %d about topic%d and the river%d", i, i%7, i%3))
	}
	chunks := chunksOf(texts)
	if err := b.Add(chunks); err != nil {
		t.Fatal(err)
	}
	if err := b.Add(chunks[:10]); err != nil { // idempotent by ID
		t.Fatal(err)
	}
	if n, err := b.Count(); err != nil || n != 50 {
		t.Fatalf("Count = %d, %v; want 50", n, err)
	}
	if err := b.Delete([]string{chunks[3].ID, "no-such-id", chunks[10].ID}); err != nil {
		t.Fatal(err)
	}
	before, err := b.Search("topic3 river1", 5)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	b = openTestBM25(t, dir)
	defer b.Close()
	wantIDs := []string{}
	for i, c := range chunks {
		if i != 3 && i != 10 {
			wantIDs = append(wantIDs, c.ID)
		}
	}
	slices.Sort(wantIDs)
	ids, err := b.IDs()
	if err != nil || !slices.Equal(ids, wantIDs) {
		t.Fatalf("IDs after reopen: %d ids, %v; want %d", len(ids), err, len(wantIDs))
	}
	if n, _ := b.Count(); n != 48 {
		t.Errorf("Count after reopen %d, want 48", n)
	}
	for _, c := range []struct {
		id   string
		want bool
	}{{chunks[0].ID, true}, {chunks[3].ID, false}, {chunks[10].ID, false}, {"no-such-id", false}} {
		if got, err := b.Has(c.id); err != nil || got != c.want {
			t.Errorf("Has(%.8s) = %v, %v; want %v", c.id, got, err, c.want)
		}
	}
	after, err := b.Search("topic3 river1", 5)
	if err != nil || !slices.Equal(before, after) || len(after) != 5 {
		t.Errorf("search after reopen %v, before %v (%v)", after, before, err)
	}
	for _, h := range after {
		if h.ID == chunks[3].ID || h.ID == chunks[10].ID {
			t.Errorf("deleted chunk %s found", h.ID)
		}
	}
	// Chunk 10 is about topic3 and river1: the best match, deleted.
	top, _ := b.Search("number 10 topic3 river1", 1)
	if len(top) != 1 || top[0].ID == chunks[10].ID {
		t.Errorf("top hit %v", top)
	}
}

func TestBM25SearchEdgeCases(t *testing.T) {
	b := openTestBM25(t, filepath.Join(t.TempDir(), "bm25"))
	defer b.Close()
	if hits, err := b.Search("anything", 5); err != nil || len(hits) != 0 {
		t.Errorf("empty index: %v %v", hits, err)
	}
	if err := b.Add(chunksOf(bm25Corpus)); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"", "   ", "the and of", "zebra"} {
		if hits, err := b.Search(q, 5); err != nil || len(hits) != 0 {
			t.Errorf("Search(%q) = %v, %v; want no hits", q, hits, err)
		}
	}
	if hits, _ := b.Search("banana", 0); len(hits) != 0 {
		t.Errorf("k = 0 gave %v", hits)
	}
	if hits, _ := b.Search("Bananas!", 1); len(hits) != 1 || hits[0].ID != ChunkID(bm25Corpus[1]) {
		t.Errorf("stemmed query: %v", hits)
	}
}

// termFreq counts the occurrences of word w in doc.
func termFreq(w, doc string) float64 {
	n := 0.0
	for _, f := range strings.Fields(doc) {
		if f == w {
			n++
		}
	}
	return n
}
