package server

import (
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/blendrag/blendrag/blend"
)

// httpMetrics are the Prometheus metrics of one HTTP (in its own registry,
// so two servers in one process do not collide).
type httpMetrics struct {
	reg      *prometheus.Registry
	requests *prometheus.HistogramVec // by route, method, code
	ttft     *prometheus.HistogramVec // by mode
	tokensPS *prometheus.HistogramVec // by mode
	kvChunks *prometheus.CounterVec   // by result: hit, miss
	kvTiers  *prometheus.CounterVec   // chunks served by tier: host_ram, device
	queries  *prometheus.CounterVec   // by outcome: ok, error, cancelled
	jobs     *prometheus.CounterVec   // finished ingest jobs by state
	inFlight prometheus.Gauge
	handler  echo.HandlerFunc
}

func newHTTPMetrics(h *HTTP) *httpMetrics {
	m := &httpMetrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "blendrag_http_request_duration_seconds",
		Help:    "HTTP request latency (streams: until the stream ends) by route, method and status code.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
	}, []string{"route", "method", "code"})
	m.ttft = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "blendrag_time_to_first_token_seconds",
		Help:    "Time from a question's arrival to its first token's logits, by fusion mode.",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"mode"})
	m.tokensPS = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "blendrag_decode_tokens_per_second",
		Help:    "Decode speed of each answer, by fusion mode.",
		Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000},
	}, []string{"mode"})
	m.kvChunks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "blendrag_kv_chunks_total",
		Help: "Cited chunks whose KV a query needed, by result: hit (loaded from the KV store) or miss (computed on demand). The hit rate is hit / (hit + miss).",
	}, []string{"result"})
	m.kvTiers = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "blendrag_kv_tier_chunks_total",
		Help: "Cited chunks whose KV a fusion took from a tier, by tier: host_ram (the hot tier: no store read) or device (the GPU's tier: assembled within the device).",
	}, []string{"tier"})
	tierBytes := func(tier string, bytes func(KVTiers) int64) prometheus.GaugeFunc {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "blendrag_kv_tier_bytes",
			Help:        "Memory the tiers of chunk KV hold, by tier: host_ram, device (as of the last question).",
			ConstLabels: prometheus.Labels{"tier": tier},
		}, func() float64 { return float64(bytes(h.svc.KVTiers())) })
	}
	m.queries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "blendrag_queries_total",
		Help: "Answered questions (/v1/query and /v1/chat/completions) by outcome: ok, bad_request (4xx), error (5xx), cancelled (client gone or timed out), rejected (429: too many at once).",
	}, []string{"outcome"})
	m.jobs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "blendrag_ingest_jobs_total",
		Help: "Finished ingest jobs by state (done, failed).",
	}, []string{"state"})
	m.inFlight = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "blendrag_queries_in_flight",
		Help: "Questions being answered or waiting for the model now.",
	})
	queue := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "blendrag_ingest_queue_depth",
		Help: "Ingest jobs waiting behind the running one.",
	}, func() float64 { return float64(h.jobs.depth()) })
	kvPending := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "blendrag_kv_precompute_pending_chunks",
		Help: "Chunks whose KV the background precompute has still to compute.",
	}, func() float64 {
		p := h.svc.KVProgress()
		return float64(max(p.Total-p.Done, 0))
	})
	hostBytes := tierBytes("host_ram", func(t KVTiers) int64 { return t.HotBytes })
	deviceBytes := tierBytes("device", func(t KVTiers) int64 { return t.Device.Bytes })
	m.reg.MustRegister(m.requests, m.ttft, m.tokensPS, m.kvChunks, m.kvTiers, m.queries, m.jobs, m.inFlight, queue, kvPending,
		hostBytes, deviceBytes, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.handler = echo.WrapHandler(promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	return m
}

// observeAnswer records a finished answer's timings.
func (m *httpMetrics) observeAnswer(a Answer) {
	m.ttft.WithLabelValues(a.Mode).Observe(a.Timings.FirstToken.Seconds())
	if a.Timings.TokensPerS > 0 {
		m.tokensPS.WithLabelValues(a.Mode).Observe(a.Timings.TokensPerS)
	}
	// full and prefix prefill the chunks and never touch the KV store.
	if a.Mode == string(blend.ModeFull) || a.Mode == string(blend.ModePrefix) {
		return
	}
	m.kvTiers.WithLabelValues("host_ram").Add(float64(a.Timings.KVHot))
	m.kvTiers.WithLabelValues("device").Add(float64(a.Timings.KVDevice))
	miss := min(a.Timings.KVMissing, len(a.Citations))
	m.kvChunks.WithLabelValues("hit").Add(float64(len(a.Citations) - miss))
	m.kvChunks.WithLabelValues("miss").Add(float64(miss))
}

// measure records every request's latency by its route pattern (not its
// path, which would make a series per document id).
func (h *HTTP) measure(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		code := c.Response().Status
		if err != nil && !c.Response().Committed {
			code = toProblem(err).Status
		}
		route := c.Path()
		if route == "" {
			route = "unmatched"
		}
		h.metrics.requests.WithLabelValues(route, c.Request().Method, strconv.Itoa(code)).Observe(time.Since(start).Seconds())
		return err
	}
}

// serveMetrics serves the Prometheus text format.
func (h *HTTP) serveMetrics(c echo.Context) error { return h.metrics.handler(c) }
