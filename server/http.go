package server

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/blendrag/blendrag/web"
)

// HTTPConfig configures the HTTP layer. Every zero field takes the default
// named in its comment; DefaultHTTPConfig returns them all.
type HTTPConfig struct {
	// MaxUploadBytes bounds a POST /v1/documents body (all files together);
	// default 32 MiB. Larger: 413.
	MaxUploadBytes int64
	// MaxFiles is the most files one upload may carry; default 32. More: 413.
	MaxFiles int
	// MaxJSONBytes bounds every JSON request body; default 1 MiB. Larger: 413.
	MaxJSONBytes int64
	// MaxQuestionBytes bounds a question (and a chat's rendered question);
	// default MaxQuestionBytes (2048), and never above it. Longer: 413.
	MaxQuestionBytes int
	// MaxTokens is the largest max_tokens a query may ask for; default
	// MaxMaxTokens (1024), and never above it. Larger: 400.
	MaxTokens int
	// MaxConcurrentQueries is how many /v1/query and /v1/chat/completions
	// requests run at once (the model serves one at a time; the others wait
	// their turn); default 4. Beyond it: 429 with Retry-After.
	MaxConcurrentQueries int
	// QueueLength is how many ingest jobs may wait behind the running one;
	// default 64. Full: 429 with Retry-After.
	QueueLength int
	// RequestTimeout bounds every request's work (streams included; an
	// ingest job runs on after its request has returned 202); default 5 min.
	RequestTimeout time.Duration
	// ShutdownTimeout is how long Serve lets in-flight requests and the
	// running ingest job finish after its context is cancelled; default 30 s.
	ShutdownTimeout time.Duration
	// APIKeys, when not empty, are the accepted bearer tokens: every route
	// but /healthz, /readyz and the web UI's files needs
	// "Authorization: Bearer KEY". Empty: no authentication.
	APIKeys []string
	// CORSOrigins are the origins allowed to call the API from a browser
	// ("*" allows any). Empty (the default): no CORS headers are sent.
	CORSOrigins []string
	// KeepJobs is how many finished ingest jobs are remembered for GET
	// /v1/jobs/{id}; default 1000. Jobs live only in memory: a restart
	// forgets them (the documents they ingested stay).
	KeepJobs int
	// Logger receives request errors; default the Service's logger.
	Logger *slog.Logger
}

// DefaultHTTPConfig returns the defaults HTTPConfig's zero fields take.
func DefaultHTTPConfig() HTTPConfig {
	return HTTPConfig{
		MaxUploadBytes:       32 << 20,
		MaxFiles:             32,
		MaxJSONBytes:         1 << 20,
		MaxQuestionBytes:     MaxQuestionBytes,
		MaxTokens:            MaxMaxTokens,
		MaxConcurrentQueries: 4,
		QueueLength:          64,
		RequestTimeout:       5 * time.Minute,
		ShutdownTimeout:      30 * time.Second,
		KeepJobs:             1000,
	}
}

// withDefaults fills zero fields and checks the rest.
func (c HTTPConfig) withDefaults(svc *Service) (HTTPConfig, error) {
	d := DefaultHTTPConfig()
	fill := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	fill(&c.MaxFiles, d.MaxFiles)
	fill(&c.MaxQuestionBytes, d.MaxQuestionBytes)
	fill(&c.MaxTokens, d.MaxTokens)
	fill(&c.MaxConcurrentQueries, d.MaxConcurrentQueries)
	fill(&c.QueueLength, d.QueueLength)
	fill(&c.KeepJobs, d.KeepJobs)
	if c.MaxUploadBytes == 0 {
		c.MaxUploadBytes = d.MaxUploadBytes
	}
	if c.MaxJSONBytes == 0 {
		c.MaxJSONBytes = d.MaxJSONBytes
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = d.RequestTimeout
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = d.ShutdownTimeout
	}
	if c.Logger == nil {
		c.Logger = svc.log
	}
	switch {
	case c.MaxUploadBytes < 0, c.MaxFiles < 0, c.MaxJSONBytes < 0, c.MaxConcurrentQueries < 0,
		c.QueueLength < 0, c.KeepJobs < 0, c.RequestTimeout < 0, c.ShutdownTimeout < 0:
		return c, fmt.Errorf("server: negative HTTP limit in %+v: %w", c, ErrBadRequest)
	case c.MaxQuestionBytes < 0 || c.MaxQuestionBytes > MaxQuestionBytes:
		return c, fmt.Errorf("server: MaxQuestionBytes %d outside 1..%d: %w", c.MaxQuestionBytes, MaxQuestionBytes, ErrBadRequest)
	case c.MaxTokens < 0 || c.MaxTokens > MaxMaxTokens:
		return c, fmt.Errorf("server: MaxTokens %d outside 1..%d: %w", c.MaxTokens, MaxMaxTokens, ErrBadRequest)
	}
	for _, k := range c.APIKeys {
		if strings.TrimSpace(k) == "" || strings.ContainsAny(k, " \t\r\n") {
			return c, fmt.Errorf("server: an API key is empty or holds white space: %w", ErrBadRequest)
		}
	}
	return c, nil
}

// HTTP is the REST API, the Prometheus metrics and the web UI over a
// Service. Build it with NewHTTP, mount Handler or run Serve, and Close it
// when done (Serve closes it itself). It does not close the Service.
type HTTP struct {
	svc     *Service
	cfg     HTTPConfig
	log     *slog.Logger
	e       *echo.Echo
	jobs    *jobQueue
	metrics *httpMetrics
	queries chan struct{} // semaphore of MaxConcurrentQueries
	closing atomic.Bool   // set when shutdown starts: /readyz answers 503
}

// NewHTTP builds the HTTP layer over svc and starts its ingest worker.
func NewHTTP(svc *Service, cfg HTTPConfig) (*HTTP, error) {
	if svc == nil {
		return nil, fmt.Errorf("server: NewHTTP needs a Service: %w", ErrBadRequest)
	}
	cfg, err := cfg.withDefaults(svc)
	if err != nil {
		return nil, err
	}
	h := &HTTP{svc: svc, cfg: cfg, log: cfg.Logger, queries: make(chan struct{}, cfg.MaxConcurrentQueries)}
	h.metrics = newHTTPMetrics(h)
	h.jobs = newJobQueue(svc, cfg.QueueLength, cfg.KeepJobs, cfg.Logger,
		func(s JobState) { h.metrics.jobs.WithLabelValues(string(s)).Inc() })
	h.e = h.routes()
	return h, nil
}

// Handler returns the HTTP handler: the API under /v1, /healthz, /readyz,
// /metrics, /openapi.json and the web UI at /.
func (h *HTTP) Handler() http.Handler { return h.e }

// Serve serves Handler on ln until ctx is cancelled, then shuts down
// gracefully: it stops accepting connections, lets in-flight requests and
// the running ingest job finish for up to ShutdownTimeout, then cancels
// what is left (closing connections cancels their requests' work), drops
// queued ingest jobs and closes h. It returns nil after a shutdown caused
// by ctx, else the error that stopped the server. The caller closes the
// Service after Serve returns.
func (h *HTTP) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           h.e,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(h.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		h.Close()
		return fmt.Errorf("server: serve: %w", err)
	case <-ctx.Done():
	}
	h.closing.Store(true)
	sctx, cancel := context.WithTimeout(context.Background(), h.cfg.ShutdownTimeout)
	defer cancel()
	var errs []error
	if err := srv.Shutdown(sctx); err != nil {
		h.log.Warn("shutdown: requests still running after the timeout; closing them", "err", err)
		errs = append(errs, srv.Close())
	}
	errs = append(errs, h.jobs.close(sctx))
	<-errc // http.ErrServerClosed
	return errors.Join(errs...)
}

// Close stops the ingest worker at once (cancelling the running job and
// dropping queued ones). Use it when Handler was mounted elsewhere.
func (h *HTTP) Close() error {
	h.closing.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	h.jobs.close(ctx)
	return nil
}

// routes builds the echo instance with every route and middleware.
func (h *HTTP) routes() *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = h.handleError
	e.Use(h.measure)
	e.Use(h.recover)
	if len(h.cfg.CORSOrigins) > 0 {
		e.Use(middleware.CORSWithConfig(middleware.CORSConfig{
			AllowOrigins:  h.cfg.CORSOrigins,
			AllowMethods:  []string{http.MethodGet, http.MethodPost, http.MethodDelete},
			AllowHeaders:  []string{echo.HeaderAuthorization, echo.HeaderContentType},
			ExposeHeaders: []string{"Retry-After"},
		}))
	}
	e.Use(h.authenticate)
	e.Use(h.timeout)

	e.GET("/healthz", h.healthz)
	e.GET("/readyz", h.readyz)
	e.GET("/metrics", h.serveMetrics)
	e.GET("/openapi.json", h.openAPI)

	v1 := e.Group("/v1")
	v1.POST("/documents", h.postDocuments)
	v1.GET("/documents", h.listDocuments)
	v1.GET("/documents/:id", h.getDocument)
	v1.DELETE("/documents/:id", h.deleteDocument)
	v1.GET("/jobs/:id", h.getJob)
	v1.POST("/search", h.search)
	v1.POST("/query", h.query)
	v1.POST("/chat/completions", h.chatCompletions)

	ui := echo.WrapHandler(web.Handler())
	e.GET("/", ui)
	e.GET("/*", func(c echo.Context) error {
		p := c.Request().URL.Path
		if isAPIPath(p) {
			return problemf(http.StatusNotFound, "no route %s %s", c.Request().Method, p)
		}
		return ui(c)
	})
	return e
}

// isAPIPath reports whether p belongs to the API rather than the UI.
func isAPIPath(p string) bool {
	return p == "/v1" || strings.HasPrefix(p, "/v1/") || p == "/metrics" || p == "/openapi.json"
}

// publicPath reports whether p is served without an API key: the health
// checks and the web UI's files (the UI sends the key the user pastes as a
// bearer token on its API calls).
func publicPath(p string) bool {
	return p == "/healthz" || p == "/readyz" || !isAPIPath(p)
}

// authenticate enforces the API keys, when there are any.
func (h *HTTP) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	if len(h.cfg.APIKeys) == 0 {
		return next
	}
	keys := make([][]byte, len(h.cfg.APIKeys))
	for i, k := range h.cfg.APIKeys {
		keys[i] = []byte(k)
	}
	return func(c echo.Context) error {
		r := c.Request()
		if r.Method == http.MethodOptions || publicPath(r.URL.Path) {
			return next(c)
		}
		auth := r.Header.Get(echo.HeaderAuthorization)
		token, ok := strings.CutPrefix(auth, "Bearer ")
		if ok {
			ok = false
			for _, k := range keys {
				// Compare every key so timing does not tell which matched.
				if subtle.ConstantTimeCompare([]byte(strings.TrimSpace(token)), k) == 1 {
					ok = true
				}
			}
		}
		if !ok {
			c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="blendrag"`)
			if auth == "" {
				return problemf(http.StatusUnauthorized, "this server needs an API key: send Authorization: Bearer KEY")
			}
			return problemf(http.StatusUnauthorized, "the API key is not valid")
		}
		return next(c)
	}
}

// timeout bounds each request's context by RequestTimeout.
func (h *HTTP) timeout(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		ctx, cancel := context.WithTimeout(c.Request().Context(), h.cfg.RequestTimeout)
		defer cancel()
		c.SetRequest(c.Request().WithContext(ctx))
		return next(c)
	}
}

// recover turns a panic in a handler into a 500 problem (and a log line
// with the stack) instead of a dropped connection.
func (h *HTTP) recover(next echo.HandlerFunc) echo.HandlerFunc {
	rec := middleware.RecoverWithConfig(middleware.RecoverConfig{
		LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
			h.log.Error("panic in handler", "path", c.Request().URL.Path, "err", err, "stack", string(stack))
			return problemf(http.StatusInternalServerError, "internal error (logged on the server)")
		},
	})
	return rec(next)
}

// limitBody caps the request body at n bytes; reading past it fails with
// *http.MaxBytesError, which handleError answers with 413.
func limitBody(c echo.Context, n int64) io.Reader {
	r := c.Request()
	r.Body = http.MaxBytesReader(c.Response(), r.Body, n)
	return r.Body
}
