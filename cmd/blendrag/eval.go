package main

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/blendrag/blendrag/server"
)

// evalItem is one question of an evaluation dataset in the CacheBlend
// MuSiQue format (../shared/eval/README.md).
type evalItem struct {
	Question string   `json:"question"`
	Answers  []string `json:"answers"`
	Ctxs     []struct {
		Title string `json:"title"`
		Text  string `json:"text"`
	} `json:"ctxs"`
}

func loadDataset(path string) ([]evalItem, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var items []evalItem
	if err := json.Unmarshal(b, &items); err != nil {
		return nil, fmt.Errorf("dataset %s: %w", path, err)
	}
	if len(items) == 0 {
		return nil, fmt.Errorf("dataset %s: no questions", path)
	}
	return items, nil
}

// passageTitle names passage j of question i when the dataset gives none.
func passageTitle(it evalItem, i, j int) string {
	if t := strings.TrimSpace(it.Ctxs[j].Title); t != "" {
		return t
	}
	return fmt.Sprintf("q%03d passage %d", i, j)
}

// normalizeAnswer is SQuAD's answer normalisation: lower case, punctuation
// and the articles a/an/the removed, whitespace collapsed.
func normalizeAnswer(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsPunct(r) || unicode.IsSymbol(r) {
			return -1
		}
		return unicode.ToLower(r)
	}, s)
	words := strings.Fields(s)
	words = slices.DeleteFunc(words, func(w string) bool { return w == "a" || w == "an" || w == "the" })
	return strings.Join(words, " ")
}

// containsAnswer reports whether text contains any gold answer, both
// normalised, on word boundaries.
func containsAnswer(text string, answers []string) bool {
	t := " " + normalizeAnswer(text) + " "
	for _, a := range answers {
		if a = normalizeAnswer(a); a != "" && strings.Contains(t, " "+a+" ") {
			return true
		}
	}
	return false
}

type retrievalEval struct {
	Dataset    string                    `json:"dataset"`
	Questions  int                       `json:"questions"`
	Passages   int                       `json:"passages"`
	Documents  int                       `json:"documents"`
	Ingest     *ingestCost               `json:"ingest,omitempty"`
	Retrievers map[string]retrieverScore `json:"retrievers"`
}

type ingestCost struct {
	Documents  int     `json:"documents"`
	Chunks     int     `json:"chunks"`
	ParseMS    float64 `json:"parse_ms_per_chunk"`
	EmbedMS    float64 `json:"embed_ms_per_chunk"`
	BM25MS     float64 `json:"bm25_ms_per_chunk"`
	TotalS     float64 `json:"total_s"`
	ChunksPerS float64 `json:"chunks_per_s"`
}

type retrieverScore struct {
	RecallAt map[string]float64 `json:"answer_recall"` // "1","5","10"
	P50MS    float64            `json:"latency_p50_ms"`
	P95MS    float64            `json:"latency_p95_ms"`
}

func addEvalCommands(root *cobra.Command) {
	eval := &cobra.Command{Use: "eval", Short: "Evaluations on a dataset (print JSON; long ones take --limit)"}
	var df dataFlags
	var dataset string
	var limit int
	var retrievers []string
	var asJSON bool
	retr := &cobra.Command{
		Use:   "retrieval --data DIR --dataset FILE",
		Short: "Answer-recall@1/5/10 and latency of each retriever on a pooled dataset",
		Long: "retrieval pools every question's passages into one corpus in --data (ingesting those not\n" +
			"there yet, so an interrupted run resumes), then asks each question against it. A chunk is a\n" +
			"hit when it contains a gold answer (SQuAD-normalised); answer-recall@k is the share of\n" +
			"questions with a hit in the top k.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			items, err := loadDataset(dataset)
			if err != nil {
				return err
			}
			df.noGenerator = true // retrieval only
			svc, err := df.open(cmd)
			if err != nil {
				return err
			}
			defer svc.Close()
			res := retrievalEval{Dataset: dataset, Retrievers: map[string]retrieverScore{}}
			cost := &ingestCost{}
			start := time.Now()
			for i, it := range items {
				for j := range it.Ctxs {
					res.Passages++
					r, err := svc.IngestText(cmd.Context(), passageTitle(it, i, j), it.Ctxs[j].Text, nil)
					if err != nil {
						return err
					}
					if r.Existing {
						continue
					}
					cost.add(r)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "\ringest: %d/%d questions' passages", i+1, len(items))
			}
			fmt.Fprintln(cmd.ErrOrStderr())
			if cost.Documents > 0 {
				cost.finish(time.Since(start))
				res.Ingest = cost
			}
			_, res.Documents, err = svc.Documents(0, 0)
			if err != nil {
				return err
			}
			if limit > 0 && limit < len(items) {
				items = items[:limit]
			}
			res.Questions = len(items)
			for _, name := range retrievers {
				score, err := evalRetriever(cmd, svc, name, items)
				if err != nil {
					return err
				}
				res.Retrievers[name] = score
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			fmt.Fprintf(out, "%d questions over %d documents (%d passages)\n", res.Questions, res.Documents, res.Passages)
			fmt.Fprintf(out, "%-8s %6s %6s %6s %9s %9s\n", "", "R@1", "R@5", "R@10", "p50 ms", "p95 ms")
			for _, name := range retrievers {
				sc := res.Retrievers[name]
				fmt.Fprintf(out, "%-8s %6.2f %6.2f %6.2f %9.1f %9.1f\n", name, sc.RecallAt["1"], sc.RecallAt["5"], sc.RecallAt["10"], sc.P50MS, sc.P95MS)
			}
			return nil
		},
	}
	df.register(retr)
	retr.Flags().StringVar(&dataset, "dataset", "", "dataset JSON (e.g. ../shared/eval/musique_dev.json)")
	retr.Flags().IntVar(&limit, "limit", 0, "evaluate only the first N questions (all passages are still pooled)")
	retr.Flags().StringSliceVar(&retrievers, "retrievers", []string{"bm25", "dense", "hybrid"}, "retrievers to evaluate")
	retr.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	retr.MarkFlagRequired("dataset")
	eval.AddCommand(retr)
	addEvalBlendCommand(eval)
	addEvalRapidCommand(eval)
	addEvalCurCommand(eval)
	root.AddCommand(eval)
}

func (c *ingestCost) add(r server.IngestResult) {
	c.Documents++
	c.Chunks += r.NewChunks
	c.ParseMS += ms(r.Parse)
	c.EmbedMS += ms(r.Embed)
	c.BM25MS += ms(r.BM25)
}

func (c *ingestCost) finish(total time.Duration) {
	n := float64(max(c.Chunks, 1))
	c.ParseMS /= n
	c.EmbedMS /= n
	c.BM25MS /= n
	c.TotalS = total.Seconds()
	c.ChunksPerS = float64(c.Chunks) / total.Seconds()
}

// evalRetriever asks every question with one retriever.
func evalRetriever(cmd *cobra.Command, svc *server.Service, name string, items []evalItem) (retrieverScore, error) {
	ks := []int{1, 5, 10}
	hits := make([]int, len(ks))
	var lat []time.Duration
	for _, it := range items {
		start := time.Now()
		res, err := svc.Search(cmd.Context(), server.SearchRequest{Query: it.Question, K: 10, Retriever: name})
		if err != nil {
			return retrieverScore{}, fmt.Errorf("%s: %w", name, err)
		}
		lat = append(lat, time.Since(start))
		first := -1
		for r, x := range res {
			if containsAnswer(x.Chunk.Text, it.Answers) {
				first = r
				break
			}
		}
		for i, k := range ks {
			if first >= 0 && first < k {
				hits[i]++
			}
		}
	}
	score := retrieverScore{RecallAt: map[string]float64{}}
	for i, k := range ks {
		score.RecallAt[fmt.Sprint(k)] = float64(hits[i]) / float64(len(items))
	}
	slices.Sort(lat)
	score.P50MS = ms(lat[len(lat)/2])
	score.P95MS = ms(lat[min(len(lat)-1, len(lat)*95/100)])
	return score, nil
}
