package server

import (
	_ "embed"
	"net/http"

	"github.com/labstack/echo/v4"
)

// Readiness is the answer to GET /readyz.
type Readiness struct {
	Ready bool `json:"ready"`
	// Generator is "loaded", or "disabled" when the Service was opened
	// with NoGenerator (it searches but cannot answer).
	Generator string `json:"generator"`
	// Stores is true when the catalog answered a read.
	Stores    bool `json:"stores"`
	Documents int  `json:"documents"`
	// KV is the background precompute of chunk KV (questions are answered
	// meanwhile; chunks not precomputed yet are computed on demand).
	KV          KVProgress `json:"kv_precompute"`
	IngestQueue int        `json:"ingest_queue"`
	// KVTiers is what the tiers of chunk KV hold (host RAM, and the
	// device's with a GPU).
	KVTiers KVTiers `json:"kv_tiers"`
	// Calibration is the fidelity gate's record (blendrag calibrate), or
	// null when the store is not calibrated for the loaded generator (the
	// built-in defaults apply).
	Calibration  *Calibration `json:"calibration"`
	ShuttingDown bool         `json:"shutting_down,omitempty"`
	Error        string       `json:"error,omitempty"`
}

// readiness checks the Service.
func (h *HTTP) readiness() Readiness {
	r := Readiness{Generator: "loaded", KV: h.svc.KVProgress(), IngestQueue: h.jobs.depth(), KVTiers: h.svc.KVTiers(),
		ShuttingDown: h.closing.Load(), Calibration: h.svc.Calibration()}
	if h.svc.eng == nil {
		r.Generator = "disabled"
	}
	_, n, err := h.svc.Documents(0, 1)
	if err != nil {
		r.Error = err.Error()
	}
	r.Stores, r.Documents = err == nil, n
	r.Ready = r.Stores && !r.ShuttingDown
	return r
}

// healthz answers 200 while the process serves HTTP (liveness).
func (h *HTTP) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// readyz answers 200 when the stores answer and the server is not shutting
// down, else 503; the body is a Readiness either way.
func (h *HTTP) readyz(c echo.Context) error {
	r := h.readiness()
	code := http.StatusOK
	if !r.Ready {
		code = http.StatusServiceUnavailable
	}
	return c.JSON(code, r)
}

//go:embed openapi.json
var openAPIDoc []byte

// openAPI serves the OpenAPI 3 description of the API.
func (h *HTTP) openAPI(c echo.Context) error {
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, openAPIDoc)
}
