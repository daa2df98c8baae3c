package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/blendrag/blendrag/retrieval"
	"github.com/blendrag/blendrag/retrieval/cur"
	"github.com/blendrag/blendrag/server"
)

// curEvalFlags are eval cur's options.
type curEvalFlags struct {
	dataset      string
	limit, pool  int
	anchors      int
	anchorSource string
	budgets      []int
	latencyKI    []int
	out          string
	asJSON       bool
}

// addEvalCurCommand registers eval cur (CUR against retrieve-then-rerank at
// equal cross-encoder budgets).
func addEvalCurCommand(eval *cobra.Command) {
	var df dataFlags
	var f curEvalFlags
	c := &cobra.Command{
		Use:   "cur --data DIR --dataset FILE",
		Short: "CUR vs BM25/dense-then-rerank at equal cross-encoder budgets, and hybrid-with-CUR latency",
		Long: "cur pools the passages of the first --pool questions into --data (ingesting and precomputing\n" +
			"chunk KV for those not there yet), then scores every pooled chunk with the KV-cached\n" +
			"cross-encoder against the anchor queries and the first --limit questions (one CE call per\n" +
			"pair; resumable through --out, one JSON line per chunk). From that matrix, per question:\n" +
			"the exhaustive CE top-10 is the reference; at each budget B, CUR (k_i = B/2 anchor chunks,\n" +
			"the top B − B/2 by the CUR estimate reranked), BM25-then-rerank and dense-then-rerank (top B\n" +
			"reranked) each return the top 10 by exact CE among the chunks they scored. Reported: overlap\n" +
			"of that top 10 with the exhaustive top 10, answer-recall@5 and CE calls. Last, hybrid search\n" +
			"with CUR is timed through the service at each --latency-ki.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runEvalCur(cmd, &df, &f) },
	}
	df.register(c)
	c.Flags().StringVar(&f.dataset, "dataset", "", "dataset JSON (e.g. ../shared/eval/musique_dev.json)")
	c.Flags().IntVar(&f.limit, "limit", 8, "evaluate the first N questions")
	c.Flags().IntVar(&f.pool, "pool", 0, "pool the passages of the first N questions (default --limit; at least --limit)")
	c.Flags().IntVar(&f.anchors, "anchors", 16, "k_q, the anchor queries")
	c.Flags().StringVar(&f.anchorSource, "anchor-source", "questions", "questions (dev questions after the evaluated ones, as real user questions replace sampled ones) or sampled (cur.SampleAnchors over the pooled chunks)")
	c.Flags().IntSliceVar(&f.budgets, "budgets", []int{16, 32, 64, 128}, "CE-call budgets")
	c.Flags().IntSliceVar(&f.latencyKI, "latency-ki", []int{server.DefaultKVCURAnchorChunks, 8}, "k_i values at which hybrid search latency is measured (none: skip)")
	c.Flags().StringVar(&f.out, "out", "", "JSONL file of per-chunk CE columns; a rerun resumes from it")
	c.Flags().BoolVar(&f.asJSON, "json", false, "print JSON")
	c.MarkFlagRequired("dataset")
	eval.AddCommand(c)
}

// curEval is eval cur's report.
type curEval struct {
	Dataset      string  `json:"dataset"`
	Questions    int     `json:"questions"`
	Passages     int     `json:"passages"`
	Chunks       int     `json:"chunks"`
	Anchors      int     `json:"anchor_queries"`
	AnchorSource string  `json:"anchor_source"`
	CECalls      int     `json:"ce_calls_this_run"`
	CEMS         float64 `json:"ms_per_ce_call"`
	// ExhaustiveRecall5 is answer-recall@5 of the exhaustive CE ranking;
	// BM25Recall5 and DenseRecall5 of the retrievers alone.
	ExhaustiveRecall5 float64 `json:"exhaustive_recall_at_5"`
	BM25Recall5       float64 `json:"bm25_recall_at_5"`
	DenseRecall5      float64 `json:"dense_recall_at_5"`
	// Budgets: per budget, per method (cur, bm25+rerank, dense+rerank).
	Budgets []curBudget  `json:"budgets"`
	Latency []curLatency `json:"hybrid_latency,omitempty"`
}

type curBudget struct {
	Budget  int                  `json:"budget"`
	Methods map[string]curMethod `json:"methods"`
}

type curMethod struct {
	Overlap10 float64 `json:"top10_overlap"`  // mean |top10 ∩ exhaustive top10| / 10
	Recall5   float64 `json:"answer_recall5"` // share of questions with an answer in the top 5
	Calls     float64 `json:"ce_calls"`       // mean CE calls per question
}

type curLatency struct {
	AnchorChunks int     `json:"k_i"`
	P50MS        float64 `json:"p50_ms"`
	P95MS        float64 `json:"p95_ms"`
	Recall5      float64 `json:"answer_recall5"`
}

// curColumn is one line of --out: the CE of every row question over one chunk.
type curColumn struct {
	Rows   string    `json:"rows"` // hash of the row questions, to refuse a mismatched file
	Chunk  string    `json:"chunk"`
	Scores []float32 `json:"scores"`
}

func runEvalCur(cmd *cobra.Command, df *dataFlags, f *curEvalFlags) error {
	items, err := loadDataset(f.dataset)
	if err != nil {
		return err
	}
	if f.pool < f.limit {
		f.pool = f.limit
	}
	switch {
	case f.limit <= 0 || f.pool > len(items):
		return fmt.Errorf("eval cur: --limit %d and --pool %d must be 1..%d", f.limit, f.pool, len(items))
	case f.anchorSource == "questions" && f.pool+f.anchors > len(items):
		return fmt.Errorf("eval cur: %d anchor questions after the %d pooled ones exceed the dataset (%d)", f.anchors, f.pool, len(items))
	case f.anchorSource != "questions" && f.anchorSource != "sampled":
		return fmt.Errorf("eval cur: --anchor-source %q (want questions or sampled)", f.anchorSource)
	case len(f.budgets) == 0 || slices.ContainsFunc(f.budgets, func(b int) bool { return b < 2 }):
		return fmt.Errorf("eval cur: budgets %v: each must be ≥ 2", f.budgets)
	}
	stderr := cmd.ErrOrStderr()
	res := curEval{Dataset: f.dataset, Questions: f.limit, Anchors: f.anchors, AnchorSource: f.anchorSource}

	svc, err := openForCUR(cmd, df, cur.Options{})
	if err != nil {
		return err
	}
	defer func() {
		if svc != nil {
			svc.Close()
		}
	}()
	if svc.CrossEncoder() == nil {
		return errors.New("eval cur: the service has no cross-encoder (is the generator loaded?)")
	}
	for i, it := range items[:f.pool] {
		for j := range it.Ctxs {
			res.Passages++
			if _, err := svc.IngestText(cmd.Context(), passageTitle(it, i, j), it.Ctxs[j].Text, nil); err != nil {
				return err
			}
		}
		fmt.Fprintf(stderr, "\ringest: %d/%d questions' passages", i+1, f.pool)
	}
	fmt.Fprintln(stderr)
	if err := waitKV(cmd, svc); err != nil {
		return err
	}
	ids, texts, err := pooledChunks(svc)
	if err != nil {
		return err
	}
	res.Chunks = len(ids)

	questions := make([]string, f.limit)
	for i := range questions {
		questions[i] = items[i].Question
	}
	var anchors []string
	if f.anchorSource == "questions" {
		for _, it := range items[f.pool : f.pool+f.anchors] {
			anchors = append(anchors, it.Question)
		}
	} else {
		anchors = cur.SampleAnchors(texts, f.anchors, 1)
	}
	rows := slices.Concat(anchors, questions)
	table, calls, spent, err := ceMatrix(cmd.Context(), svc.CrossEncoder(), rows, ids, f.out, stderr)
	if err != nil {
		return err
	}
	res.CECalls = calls
	if calls > 0 {
		res.CEMS = ms(spent) / float64(calls)
	}

	if err := compareAtBudgets(cmd.Context(), svc, &res, items[:f.limit], anchors, ids, texts, table, f.budgets); err != nil {
		return err
	}
	if len(f.latencyKI) > 0 {
		// Install the CUR index the matrix gives (the same numbers the
		// background precompute would compute) and time hybrid search.
		err := svc.Close()
		svc = nil
		if err != nil {
			return err
		}
		if err := writeCURIndex(df.dir, anchors, ids, table); err != nil {
			return err
		}
		for _, ki := range f.latencyKI {
			lat, err := timeHybrid(cmd, df, ki, items[:f.limit])
			if err != nil {
				return err
			}
			res.Latency = append(res.Latency, lat)
		}
	}
	return printCurEval(cmd.OutOrStdout(), res, f.asJSON)
}

// openForCUR opens the store on --data with the generator and the
// KV-cached cross-encoder, without background CUR columns (the evaluation
// computes its own matrix).
func openForCUR(cmd *cobra.Command, df *dataFlags, opt cur.Options) (*server.Service, error) {
	cfg := df.config(cmd)
	cfg.NoCURColumns, cfg.CUR = true, opt
	return server.Open(cfg)
}

// pooledChunks lists the committed chunks, sorted by id, with their texts.
func pooledChunks(svc *server.Service) (ids, texts []string, err error) {
	docs, _, err := svc.Documents(0, 0)
	if err != nil {
		return nil, nil, err
	}
	seen := map[string]string{}
	for _, d := range docs {
		_, chunks, err := svc.Document(d.ID)
		if err != nil {
			return nil, nil, err
		}
		for _, c := range chunks {
			seen[c.ID] = c.Text
		}
	}
	for id := range seen {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		texts = append(texts, seen[id])
	}
	return ids, texts, nil
}

// rowsKey identifies a list of row questions.
func rowsKey(rows []string) string {
	return retrieval.ChunkID(strings.Join(rows, "\x00"))[:16]
}

// ceMatrix returns CE(rows[r], ids[j]) as table[r][j]: one ScoreQuestions
// call (all rows over one chunk's KV) per chunk, resuming from and
// appending to the JSONL file out. It returns how many CE calls it made
// and the time they took.
func ceMatrix(ctx context.Context, ce cur.CrossEncoder, rows, ids []string, out string, progress io.Writer) (table [][]float32, calls int, spent time.Duration, err error) {
	key := rowsKey(rows)
	col := make(map[string]int, len(ids))
	for j, id := range ids {
		col[id] = j
	}
	table = make([][]float32, len(rows))
	for r := range table {
		table[r] = make([]float32, len(ids))
	}
	done := map[string]bool{}
	var w *os.File
	if out != "" {
		cols, err := readJSONL[curColumn](out)
		if err != nil {
			return nil, 0, 0, err
		}
		for _, c := range cols {
			j, ok := col[c.Chunk]
			if c.Rows != key || !ok || len(c.Scores) != len(rows) {
				return nil, 0, 0, fmt.Errorf("%s holds columns of other questions or chunks: use a new --out", out)
			}
			for r, v := range c.Scores {
				table[r][j] = v
			}
			done[c.Chunk] = true
		}
		if w, err = openJSONL(out); err != nil {
			return nil, 0, 0, err
		}
		defer w.Close()
	}
	for j, id := range ids {
		if done[id] {
			continue
		}
		start := time.Now()
		s, err := ce.ScoreQuestions(ctx, rows, id)
		if err != nil {
			return nil, calls, spent, fmt.Errorf("chunk %s: %w", id, err)
		}
		spent += time.Since(start)
		calls += len(rows)
		for r, v := range s {
			table[r][j] = v
		}
		if w != nil {
			if err := appendJSONL(w, curColumn{Rows: key, Chunk: id, Scores: s}); err != nil {
				return nil, calls, spent, fmt.Errorf("%s: %w", out, err)
			}
		}
		fmt.Fprintf(progress, "\rCE matrix: chunk %d/%d, %.0f ms per CE call   ", j+1, len(ids), ms(spent)/float64(calls))
	}
	fmt.Fprintln(progress)
	return table, calls, spent, nil
}

// tableCE serves cross-encoder scores from the matrix and records which
// chunks were scored for the current question.
type tableCE struct {
	row    map[string]int
	col    map[string]int
	table  [][]float32
	scored map[string]bool
}

func (t *tableCE) score(q, id string) (float32, error) {
	r, ok := t.row[q]
	j, ok2 := t.col[id]
	if !ok || !ok2 {
		return 0, fmt.Errorf("no CE score for %q over chunk %s", q, id)
	}
	return t.table[r][j], nil
}

func (t *tableCE) ScoreChunks(_ context.Context, q string, ids []string) ([]float32, error) {
	out := make([]float32, len(ids))
	for i, id := range ids {
		v, err := t.score(q, id)
		if err != nil {
			return nil, err
		}
		out[i] = v
		t.scored[id] = true
	}
	return out, nil
}

func (t *tableCE) ScoreQuestions(_ context.Context, qs []string, id string) ([]float32, error) {
	out := make([]float32, len(qs))
	for i, q := range qs {
		v, err := t.score(q, id)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

// topByCE returns the k ids of highest CE for question row r (ties: id).
func topByCE(ids []string, ce *tableCE, q string, k int) []string {
	out := slices.Clone(ids)
	slices.SortFunc(out, func(a, b string) int {
		sa, _ := ce.score(q, a)
		sb, _ := ce.score(q, b)
		if c := cmp.Compare(sb, sa); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	return out[:min(k, len(out))]
}

// compareAtBudgets fills res.Budgets and the recall baselines.
func compareAtBudgets(ctx context.Context, svc *server.Service, res *curEval, items []evalItem, anchors, ids, texts []string, table [][]float32, budgets []int) error {
	text := make(map[string]string, len(ids))
	tce := &tableCE{row: map[string]int{}, col: map[string]int{}, table: table}
	for j, id := range ids {
		tce.col[id] = j
		text[id] = texts[j]
	}
	for r, q := range anchors {
		tce.row[q] = r
	}
	for i, it := range items {
		tce.row[it.Question] = len(anchors) + i
	}
	hasAnswer := func(top []string, answers []string) bool {
		for _, id := range top[:min(5, len(top))] {
			if containsAnswer(text[id], answers) {
				return true
			}
		}
		return false
	}
	overlap := func(a, b []string) float64 {
		n := 0
		for _, id := range a {
			if slices.Contains(b, id) {
				n++
			}
		}
		return float64(n) / float64(len(b))
	}
	nq := float64(len(items))
	exhaustive := make([][]string, len(items))
	for i, it := range items {
		exhaustive[i] = topByCE(ids, tce, it.Question, 10)
		if hasAnswer(exhaustive[i], it.Answers) {
			res.ExhaustiveRecall5 += 1 / nq
		}
		for _, name := range []string{server.RetrieverBM25, server.RetrieverDense} {
			top, err := svc.Rank(ctx, name, it.Question, 5)
			if err != nil {
				return err
			}
			if hasAnswer(top, it.Answers) {
				if name == server.RetrieverBM25 {
					res.BM25Recall5 += 1 / nq
				} else {
					res.DenseRecall5 += 1 / nq
				}
			}
		}
	}
	tmp, err := os.MkdirTemp("", "blendrag-evalcur")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	for _, b := range budgets {
		cb := curBudget{Budget: b, Methods: map[string]curMethod{}}
		ki, kr := b/2, b-b/2
		idx, err := cur.Open(filepath.Join(tmp, fmt.Sprintf("cur%d.idx", b)), tce, cur.Options{AnchorQueries: len(anchors), AnchorChunks: ki, TopK: kr, Rerank: true})
		if err != nil {
			return err
		}
		if err := idx.SetAnchors(ctx, anchors); err != nil {
			return err
		}
		for _, id := range ids {
			if err := idx.AddChunk(ctx, id); err != nil {
				return err
			}
		}
		methods := map[string]func(q string) ([]string, error){
			"cur": func(q string) ([]string, error) {
				_, err := idx.Search(ctx, q, kr)
				return nil, err
			},
			"bm25+rerank":  func(q string) ([]string, error) { return svc.Rank(ctx, server.RetrieverBM25, q, b) },
			"dense+rerank": func(q string) ([]string, error) { return svc.Rank(ctx, server.RetrieverDense, q, b) },
		}
		for name, run := range methods {
			var m curMethod
			for i, it := range items {
				tce.scored = map[string]bool{}
				cand, err := run(it.Question)
				if err != nil {
					return fmt.Errorf("budget %d, %s: %w", b, name, err)
				}
				if _, err := tce.ScoreChunks(ctx, it.Question, cand); err != nil {
					return err
				}
				var scored []string
				for id := range tce.scored {
					scored = append(scored, id)
				}
				top := topByCE(scored, tce, it.Question, 10)
				m.Overlap10 += overlap(top, exhaustive[i]) / nq
				m.Calls += float64(len(scored)) / nq
				if hasAnswer(top, it.Answers) {
					m.Recall5 += 1 / nq
				}
			}
			cb.Methods[name] = m
		}
		res.Budgets = append(res.Budgets, cb)
	}
	return nil
}

// writeCURIndex writes DIR/cur.idx from the matrix: the anchor queries and
// every chunk's column, as the background precompute would.
func writeCURIndex(dir string, anchors, ids []string, table [][]float32) error {
	tce := &tableCE{row: map[string]int{}, col: map[string]int{}, table: table}
	for r, q := range anchors {
		tce.row[q] = r
	}
	for j, id := range ids {
		tce.col[id] = j
	}
	path := filepath.Join(dir, "cur.idx")
	os.Remove(path)
	idx, err := cur.Open(path, tce, cur.Options{})
	if err != nil {
		return err
	}
	ctx := context.Background()
	if err := idx.SetAnchors(ctx, anchors); err != nil {
		return err
	}
	for _, id := range ids {
		if err := idx.AddChunk(ctx, id); err != nil {
			return err
		}
	}
	return idx.Save()
}

// timeHybrid times hybrid search (BM25 + dense + CUR with k_i anchor
// chunks, RRF) through the service over the installed CUR index.
func timeHybrid(cmd *cobra.Command, df *dataFlags, ki int, items []evalItem) (curLatency, error) {
	svc, err := openForCUR(cmd, df, cur.Options{AnchorChunks: ki})
	if err != nil {
		return curLatency{}, err
	}
	defer svc.Close()
	lat := curLatency{AnchorChunks: ki}
	// CUR must be one of the fused lists: the index is ready.
	if _, err := svc.Rank(cmd.Context(), server.RetrieverCUR, items[0].Question, 1); err != nil {
		return lat, err
	}
	var ts []time.Duration
	for _, it := range items {
		start := time.Now()
		res, err := svc.Search(cmd.Context(), server.SearchRequest{Query: it.Question, K: 5, Retriever: server.RetrieverHybrid})
		if err != nil {
			return lat, err
		}
		ts = append(ts, time.Since(start))
		for _, r := range res {
			if containsAnswer(r.Chunk.Text, it.Answers) {
				lat.Recall5 += 1 / float64(len(items))
				break
			}
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "\rhybrid latency k_i=%d: %d/%d   ", ki, len(ts), len(items))
	}
	fmt.Fprintln(cmd.ErrOrStderr())
	slices.Sort(ts)
	lat.P50MS = ms(ts[len(ts)/2])
	lat.P95MS = ms(ts[min(len(ts)-1, len(ts)*95/100)])
	return lat, nil
}

func printCurEval(w io.Writer, res curEval, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	fmt.Fprintf(w, "%d questions over %d chunks (%d passages), %d anchor queries (%s), %.0f ms per CE call\n",
		res.Questions, res.Chunks, res.Passages, res.Anchors, res.AnchorSource, res.CEMS)
	fmt.Fprintf(w, "answer-recall@5: exhaustive CE %.2f, bm25 %.2f, dense %.2f\n", res.ExhaustiveRecall5, res.BM25Recall5, res.DenseRecall5)
	fmt.Fprintf(w, "%-7s %-13s %8s %8s %8s\n", "budget", "method", "ovl@10", "R@5", "calls")
	for _, b := range res.Budgets {
		for _, name := range []string{"cur", "bm25+rerank", "dense+rerank"} {
			m := b.Methods[name]
			fmt.Fprintf(w, "%-7s %-13s %8.3f %8.2f %8.1f\n", strconv.Itoa(b.Budget), name, m.Overlap10, m.Recall5, m.Calls)
		}
	}
	for _, l := range res.Latency {
		fmt.Fprintf(w, "hybrid with CUR, k_i=%d: p50 %.0f ms, p95 %.0f ms, answer-recall@5 %.2f\n", l.AnchorChunks, l.P50MS, l.P95MS, l.Recall5)
	}
	return nil
}
