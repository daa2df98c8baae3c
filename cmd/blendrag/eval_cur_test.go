package main

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
)

// countingCE scores by a fixed formula, counts its calls and fails on a
// chosen chunk.
type countingCE struct {
	calls int
	fail  string
}

func (c *countingCE) score(q, id string) float32 {
	return float32(len(q)*7%11) - float32(len(id)+int(id[0])%5)
}

func (c *countingCE) ScoreChunks(_ context.Context, q string, ids []string) ([]float32, error) {
	out := make([]float32, len(ids))
	for i, id := range ids {
		out[i] = c.score(q, id)
	}
	c.calls += len(ids)
	return out, nil
}

func (c *countingCE) ScoreQuestions(_ context.Context, qs []string, id string) ([]float32, error) {
	if id == c.fail {
		return nil, errors.New("boom")
	}
	out := make([]float32, len(qs))
	for i, q := range qs {
		out[i] = c.score(q, id)
	}
	c.calls += len(qs)
	return out, nil
}

func TestCEMatrixResumesFromItsFile(t *testing.T) {
	ctx := context.Background()
	out := filepath.Join(t.TempDir(), "cols.jsonl")
	rows := []string{"anchor one?", "a question?", "another question here?"}
	ids := []string{"a1", "b22", "c333", "d4444"}

	// The first run dies at the third chunk, after writing two columns.
	ce := &countingCE{fail: "c333"}
	if _, _, _, err := ceMatrix(ctx, ce, rows, ids, out, io.Discard); err == nil {
		t.Fatal("no error from a failing cross-encoder")
	}
	// The rerun computes only the two missing columns.
	ce = &countingCE{}
	table, calls, _, err := ceMatrix(ctx, ce, rows, ids, out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if calls != 2*len(rows) || ce.calls != calls {
		t.Errorf("resumed run made %d calls (counted %d), want %d", calls, ce.calls, 2*len(rows))
	}
	for r, q := range rows {
		for j, id := range ids {
			if want := ce.score(q, id); table[r][j] != want {
				t.Errorf("table[%d][%d] = %v, want %v", r, j, table[r][j], want)
			}
		}
	}
	// Other questions must not reuse the file.
	if _, _, _, err := ceMatrix(ctx, ce, rows[:2], ids, out, io.Discard); err == nil || !strings.Contains(err.Error(), "new --out") {
		t.Errorf("mismatched rows: %v", err)
	}
}

func TestTopByCEOrdersByScoreThenID(t *testing.T) {
	tce := &tableCE{
		row:   map[string]int{"q": 0},
		col:   map[string]int{"a": 0, "b": 1, "c": 2, "d": 3},
		table: [][]float32{{1, 3, 3, -2}},
	}
	got := topByCE([]string{"d", "c", "b", "a"}, tce, "q", 3)
	if strings.Join(got, "") != "bca" {
		t.Errorf("top 3 = %v, want [b c a]", got)
	}
}
