package retrieval

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// musiquePath is the shared MuSiQue dev sample (100 questions × 10
// passages), outside the repository; tests and benchmarks that use it skip
// when it is absent.
var musiquePath = filepath.Join("..", "..", "shared", "eval", "musique_dev.json")

// loadMusique returns the texts of the first n passages (all when n ≤ 0).
func loadMusique(tb testing.TB, n int) []string {
	tb.Helper()
	data, err := os.ReadFile(musiquePath)
	if err != nil {
		tb.Skip("MuSiQue sample absent:", err)
	}
	var items []struct {
		Ctxs []struct{ Title, Text string }
	}
	if err := json.Unmarshal(data, &items); err != nil {
		tb.Fatal(err)
	}
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
