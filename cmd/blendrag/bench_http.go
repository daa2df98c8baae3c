package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/blendrag/blendrag/server"
)

// httpBenchLevel is one (route, concurrency) cell of `bench http`.
type httpBenchLevel struct {
	Route       string  `json:"route"`
	Concurrency int     `json:"concurrency"`
	Seconds     float64 `json:"seconds"`
	OK          int     `json:"ok"`
	TooMany     int     `json:"429"`            // refused by a limit: counted apart, not errors
	ServerErr   int     `json:"5xx"`            // must be 0
	BrokenSSE   int     `json:"broken_streams"` // a 200 stream without its done event: must be 0
	OtherErr    int     `json:"other_errors"`   // transport errors, unexpected 4xx
	P50MS       float64 `json:"p50_ms"`
	P95MS       float64 `json:"p95_ms"`
	P99MS       float64 `json:"p99_ms"`
	// PerSecond is the sustained rate of successful requests.
	PerSecond float64 `json:"ok_per_s"`
	// FirstErr is the first error seen, for diagnosis.
	FirstErr string `json:"first_error,omitempty"`
}

// httpBenchResult is the JSON `bench http` prints.
type httpBenchResult struct {
	Dataset    string           `json:"dataset"`
	Documents  int              `json:"documents"`
	Queries    int              `json:"distinct_queries"`
	MaxTokens  int              `json:"max_tokens"`
	Mode       string           `json:"mode"`
	Limit      int              `json:"max_concurrent_queries"`
	CUR        bool             `json:"cur_columns"`
	Levels     []httpBenchLevel `json:"levels"`
	PeakRSSMiB float64          `json:"peak_rss_mib"` // this process: the server and the load generator
}

// addHTTPBenchCommand registers `bench http` under bench.
func addHTTPBenchCommand(bench *cobra.Command) {
	var df dataFlags
	var dataset, mode string
	var questions, maxTokens, maxQueries int
	var levels []int
	var searchFor, queryFor time.Duration
	var asJSON, withCUR bool
	cmd := &cobra.Command{
		Use:   "http --data DIR --dataset FILE [--concurrency 1,4,16] [--json]",
		Short: "Latency percentiles, errors and sustained rate of /v1/search and /v1/query under concurrent clients",
		Long: "http opens the store in --data, ingests the passages of the first --questions dataset\n" +
			"questions (those not there yet) and waits for their chunk KV, serves the HTTP API on a\n" +
			"loopback port in this process, then for each --concurrency level runs that many clients\n" +
			"back to back against POST /v1/search (for --search-duration) and POST /v1/query with\n" +
			"stream=true (for --query-duration), each asking the dataset's questions in turn. It\n" +
			"reports per level the latency p50/p95/p99 of successful requests, 5xx answers and broken\n" +
			"streams (both must be 0), 429s (a limit refusing work; counted apart), the sustained\n" +
			"rate and the process's peak RSS.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			items, err := loadDataset(dataset)
			if err != nil {
				return err
			}
			items = items[:min(questions, len(items))]
			// The background CUR columns (32 cross-encoder calls per chunk)
			// would compete with the load for the two cores; without them
			// hybrid search is BM25 + dense.
			df.noCURColumns = !withCUR
			svc, err := df.open(cmd)
			if err != nil {
				return err
			}
			defer svc.Close()
			ctx := cmd.Context()
			errw := cmd.ErrOrStderr()
			for i, it := range items {
				for j := range it.Ctxs {
					if _, err := svc.IngestText(ctx, passageTitle(it, i, j), it.Ctxs[j].Text, nil); err != nil {
						return err
					}
				}
				fmt.Fprintf(errw, "\ringest: %d/%d questions' passages", i+1, len(items))
			}
			fmt.Fprintln(errw)
			if err := waitKV(cmd, svc); err != nil {
				return err
			}
			hcfg := server.DefaultHTTPConfig()
			if maxQueries > 0 {
				hcfg.MaxConcurrentQueries = maxQueries
			}
			h, err := server.NewHTTP(svc, hcfg)
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			sctx, stop := context.WithCancel(ctx)
			served := make(chan error, 1)
			go func() { served <- h.Serve(sctx, ln) }()
			defer func() { stop(); <-served }()
			base := "http://" + ln.Addr().String()
			_, docs, err := svc.Documents(0, 1)
			if err != nil {
				return err
			}
			res := httpBenchResult{Dataset: dataset, Documents: docs, Queries: len(items), MaxTokens: maxTokens, Mode: mode, Limit: hcfg.MaxConcurrentQueries, CUR: withCUR}
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			for _, c := range levels {
				for _, route := range []string{"/v1/search", "/v1/query"} {
					d := searchFor
					if route == "/v1/query" {
						d = queryFor
					}
					fmt.Fprintf(errw, "%s × %d clients for %v\n", route, c, d)
					lv := runHTTPLevel(ctx, client, base, route, c, d, items, mode, maxTokens)
					res.Levels = append(res.Levels, lv)
				}
			}
			var ru syscall.Rusage
			if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
				res.PeakRSSMiB = float64(ru.Maxrss) / 1024 // Linux reports KiB
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			fmt.Fprintf(out, "%d documents, %d distinct questions, mode %s, max_tokens %d, ≤ %d concurrent queries; peak RSS %.0f MiB\n",
				res.Documents, res.Queries, res.Mode, res.MaxTokens, res.Limit, res.PeakRSSMiB)
			fmt.Fprintf(out, "%-11s %4s %6s %5s %4s %6s %5s %9s %9s %9s %8s\n", "route", "c", "ok", "429", "5xx", "broken", "other", "p50 ms", "p95 ms", "p99 ms", "ok/s")
			for _, l := range res.Levels {
				fmt.Fprintf(out, "%-11s %4d %6d %5d %4d %6d %5d %9.1f %9.1f %9.1f %8.2f\n", l.Route, l.Concurrency, l.OK, l.TooMany, l.ServerErr, l.BrokenSSE, l.OtherErr, l.P50MS, l.P95MS, l.P99MS, l.PerSecond)
			}
			return nil
		},
	}
	df.register(cmd)
	f := cmd.Flags()
	f.StringVar(&dataset, "dataset", "../shared/eval/musique_dev.json", "dataset JSON: its passages are the corpus, its questions the load")
	f.IntVar(&questions, "questions", 10, "use the first N questions (and their passages)")
	f.IntSliceVar(&levels, "concurrency", []int{1, 4, 16}, "concurrent clients per level")
	f.DurationVar(&searchFor, "search-duration", 15*time.Second, "how long each /v1/search level runs")
	f.DurationVar(&queryFor, "query-duration", 45*time.Second, "how long each /v1/query level runs")
	f.IntVar(&maxTokens, "max-tokens", 16, "max_tokens of each query")
	f.StringVar(&mode, "mode", "cacheblend", "fusion mode of each query")
	f.IntVar(&maxQueries, "max-concurrent-queries", 0, "the server's limit (default the server's default)")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	f.BoolVar(&withCUR, "with-cur", false, "compute CUR columns in the background during the load (hybrid then includes CUR once they are done)")
	bench.AddCommand(cmd)
}

// runHTTPLevel runs c clients against route for d and summarises them.
func runHTTPLevel(ctx context.Context, client *http.Client, base, route string, c int, d time.Duration, items []evalItem, mode string, maxTokens int) httpBenchLevel {
	lv := httpBenchLevel{Route: route, Concurrency: c}
	var mu sync.Mutex
	var lat []float64
	record := func(ok bool, status int, broken bool, took time.Duration, err error) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case ok:
			lv.OK++
			lat = append(lat, float64(took.Microseconds())/1000)
		case status == http.StatusTooManyRequests:
			lv.TooMany++
		case status >= 500:
			lv.ServerErr++
		case broken:
			lv.BrokenSSE++
		default:
			lv.OtherErr++
		}
		if err != nil && lv.FirstErr == "" {
			lv.FirstErr = err.Error()
		}
	}
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for w := range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; time.Now().Before(deadline) && ctx.Err() == nil; i += c {
				q := items[i%len(items)].Question
				var body any = map[string]any{"query": q, "k": 5}
				if route == "/v1/query" {
					body = map[string]any{"question": q, "mode": mode, "max_tokens": maxTokens, "stream": true}
				}
				t0 := time.Now()
				status, broken, err := doBenchRequest(ctx, client, base+route, body, route == "/v1/query")
				record(err == nil && status == http.StatusOK && !broken, status, broken, time.Since(t0), err)
				if status == http.StatusTooManyRequests {
					time.Sleep(100 * time.Millisecond) // back off a little, as a client honouring Retry-After would
				}
			}
		}()
	}
	wg.Wait()
	lv.Seconds = time.Since(start).Seconds()
	slices.Sort(lat)
	lv.P50MS, lv.P95MS, lv.P99MS = quantile(lat, 0.5), quantile(lat, 0.95), quantile(lat, 0.99)
	lv.PerSecond = float64(lv.OK) / lv.Seconds
	return lv
}

// doBenchRequest POSTs body as JSON. For a stream it reads the events to
// the end: broken is a 200 stream that ended without its done event (or
// with an error event).
func doBenchRequest(ctx context.Context, client *http.Client, url string, body any, stream bool) (status int, broken bool, err error) {
	b, err := json.Marshal(body)
	if err != nil {
		return 0, false, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return 0, false, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return resp.StatusCode, false, fmt.Errorf("%s: %d %s", url, resp.StatusCode, strings.TrimSpace(string(msg)))
	}
	if !stream {
		_, err = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, false, err
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	done := false
	for sc.Scan() {
		switch sc.Text() {
		case "event: done":
			done = true
		case "event: error":
			return resp.StatusCode, true, fmt.Errorf("%s: the stream sent an error event", url)
		}
	}
	if err := sc.Err(); err != nil {
		return resp.StatusCode, true, fmt.Errorf("%s: reading the stream: %w", url, err)
	}
	if !done {
		return resp.StatusCode, true, fmt.Errorf("%s: the stream ended without its done event", url)
	}
	return resp.StatusCode, false, nil
}
