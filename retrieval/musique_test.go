package retrieval

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/blendrag/blendrag/model/fetch"
	"github.com/blendrag/blendrag/model/tokenizer"
)

// loadSmolLM2 loads the default generator's tokenizer, skipping when the
// model file is absent.
func loadSmolLM2(tb testing.TB) *tokenizer.Tokenizer {
	tb.Helper()
	path := fetch.GeneratorPath(fetch.Dir())
	if _, err := os.Stat(path); err != nil {
		tb.Skip("SmolLM2 GGUF absent:", err)
	}
	tok, err := tokenizer.Load(path)
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// musiquePath is the shared MuSiQue dev sample (100 questions × 10
// passages), outside the repository; tests and benchmarks that use it skip
// when it is absent.
var musiquePath = filepath.Join("..", "..", "shared", "eval", "musique_dev.json")

// musiqueItem is one question of the MuSiQue sample with its passages.
type musiqueItem struct {
	Question string
	Ctxs     []struct{ Title, Text string }
}

func loadMusiqueItems(tb testing.TB) []musiqueItem {
	tb.Helper()
	data, err := os.ReadFile(musiquePath)
	if err != nil {
		tb.Skip("MuSiQue sample absent:", err)
	}
	var items []musiqueItem
	if err := json.Unmarshal(data, &items); err != nil {
		tb.Fatal(err)
	}
	return items
}

// loadMusique returns the texts of the first n passages (all when n ≤ 0).
func loadMusique(tb testing.TB, n int) []string {
	tb.Helper()
	items := loadMusiqueItems(tb)
	var out []string
	for _, it := range items {
		for _, c := range it.Ctxs {
			if n > 0 && len(out) == n {
				return out
			}
			out = append(out, c.Text)
		}
	}
	return out
}
