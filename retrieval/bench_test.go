package retrieval

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// benchPassages is how many MuSiQue passages the ingest benchmarks use.
const benchPassages = 300

// musiqueChunks parses and chunks the first n passages with SmolLM2's
// tokenizer at the default budget, one document per passage.
func musiqueChunks(b *testing.B, n int) [][]Chunk {
	c, err := NewChunker(loadSmolLM2(b), ChunkOptions{})
	if err != nil {
		b.Fatal(err)
	}
	var docs [][]Chunk
	for i, text := range loadMusique(b, n) {
		p, err := ParseText(fmt.Sprintf("passage %d", i), text)
		if err != nil {
			b.Fatal(err)
		}
		docs = append(docs, c.Split(p))
	}
	return docs
}

// BenchmarkParseChunkMusique measures ParseText + Split (SmolLM2
// tokenizer, 384-token chunks) over benchPassages MuSiQue passages;
// ns/chunk is the ingest cost per chunk.
func BenchmarkParseChunkMusique(b *testing.B) {
	texts := loadMusique(b, benchPassages)
	c, err := NewChunker(loadSmolLM2(b), ChunkOptions{})
	if err != nil {
		b.Fatal(err)
	}
	chunks := 0
	b.ResetTimer()
	for b.Loop() {
		chunks = 0
		for i, text := range texts {
			p, err := ParseText(fmt.Sprintf("passage %d", i), text)
			if err != nil {
				b.Fatal(err)
			}
			chunks += len(c.Split(p))
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*chunks), "ns/chunk")
	b.ReportMetric(float64(chunks), "chunks/op")
}

// BenchmarkBM25AddMusique measures indexing benchPassages passages' chunks
// into a fresh on-disk index up to a durable Close: one batch per passage
// (as ingest does, one per document) and all in one batch. Every batch
// waits for its segment to be persisted, a fixed cost per batch.
func BenchmarkBM25AddMusique(b *testing.B) {
	docs := musiqueChunks(b, benchPassages)
	var all []Chunk
	for _, d := range docs {
		all = append(all, d...)
	}
	for _, bench := range []struct {
		name    string
		batches [][]Chunk
	}{{"batch=passage", docs}, {"batch=all", [][]Chunk{all}}} {
		b.Run(bench.name, func(b *testing.B) {
			var total time.Duration
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				idx, err := OpenBM25(filepath.Join(b.TempDir(), fmt.Sprint(i)))
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				start := time.Now()
				for _, batch := range bench.batches {
					if err := idx.Add(batch); err != nil {
						b.Fatal(err)
					}
				}
				if err := idx.Close(); err != nil {
					b.Fatal(err)
				}
				total += time.Since(start)
			}
			b.ReportMetric(float64(total.Nanoseconds())/float64(b.N*len(all)), "ns/chunk")
			b.ReportMetric(float64(len(bench.batches)), "batches/op")
		})
	}
}

// BenchmarkBM25SearchMusique measures one top-10 search over the chunks of
// all 1,000 MuSiQue passages, cycling through the 100 questions.
func BenchmarkBM25SearchMusique(b *testing.B) {
	items := loadMusiqueItems(b)
	docs := musiqueChunks(b, 0)
	idx, err := OpenBM25(filepath.Join(b.TempDir(), "bm25"))
	if err != nil {
		b.Fatal(err)
	}
	defer idx.Close()
	for _, d := range docs {
		if err := idx.Add(d); err != nil {
			b.Fatal(err)
		}
	}
	n, _ := idx.Count()
	b.ReportMetric(float64(n), "chunks")
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := idx.Search(items[i%len(items)].Question, 10); err != nil {
			b.Fatal(err)
		}
	}
}
