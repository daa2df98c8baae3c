package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"
)

// Problem is an RFC 9457 problem details body (application/problem+json),
// the shape of every error the HTTP API returns. Type is "about:blank"
// (the status code says it all) and Title the status's text.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	// RetryAfter, in seconds, is also sent as the Retry-After header (429).
	RetryAfter int `json:"retry_after,omitempty"`
}

// Error returns the detail, so a *Problem is an error handlers can return.
func (p *Problem) Error() string { return fmt.Sprintf("%d %s: %s", p.Status, p.Title, p.Detail) }

// problemf returns a Problem with status and a formatted detail.
func problemf(status int, format string, args ...any) *Problem {
	return &Problem{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: fmt.Sprintf(format, args...)}
}

// tooMany returns a 429 Problem asking the client to retry after secs.
func tooMany(secs int, format string, args ...any) *Problem {
	p := problemf(http.StatusTooManyRequests, format, args...)
	p.RetryAfter = secs
	return p
}

// statusClientClosed is nginx's code for a request the client abandoned;
// it is only logged and counted (the client is gone).
const statusClientClosed = 499

// toProblem maps an error from a handler or the Service to a Problem.
func toProblem(err error) *Problem {
	var p *Problem
	var he *echo.HTTPError
	var mbe *http.MaxBytesError
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &p):
		return p
	case errors.As(err, &mbe):
		return problemf(http.StatusRequestEntityTooLarge, "the request body exceeds the limit of %d bytes", mbe.Limit)
	case errors.As(err, &se):
		return problemf(http.StatusBadRequest, "the body is not valid JSON: %v (at byte %d)", se, se.Offset)
	case errors.As(err, &te) && te.Field == "":
		return problemf(http.StatusBadRequest, "the body must be a JSON object, not a JSON %s", te.Value)
	case errors.As(err, &te):
		return problemf(http.StatusBadRequest, "field %q: want a JSON %s, got %s", te.Field, te.Type, te.Value)
	case errors.As(err, &he):
		p := problemf(he.Code, "%v", he.Message)
		if he.Code == http.StatusNotFound || he.Code == http.StatusMethodNotAllowed {
			p.Detail = http.StatusText(he.Code)
		}
		return p
	case errors.Is(err, ErrNotFound):
		return problemf(http.StatusNotFound, "%v", err)
	case errors.Is(err, ErrBadRequest), errors.Is(err, ErrNoCE):
		// The sentinel's text adds nothing to the status.
		return problemf(http.StatusBadRequest, "%s", strings.TrimSuffix(err.Error(), ": "+ErrBadRequest.Error()))
	case errors.Is(err, context.DeadlineExceeded):
		return problemf(http.StatusGatewayTimeout, "the request took longer than the server's time limit: %v", err)
	case errors.Is(err, context.Canceled):
		return problemf(statusClientClosed, "the request was cancelled: %v", err)
	}
	return problemf(http.StatusInternalServerError, "%v", err)
}

// handleError is echo's error handler: every error becomes a problem+json
// response (unless the response has started, e.g. a stream, where it is
// only logged).
func (h *HTTP) handleError(err error, c echo.Context) {
	p := toProblem(err)
	if p.Status >= 500 && p.Status != statusClientClosed {
		h.log.Error("request failed", "method", c.Request().Method, "path", c.Request().URL.Path, "status", p.Status, "err", err)
	}
	if c.Response().Committed {
		return
	}
	writeProblem(c, p)
}

// writeProblem sends p as application/problem+json.
func writeProblem(c echo.Context, p *Problem) {
	hdr := c.Response().Header()
	if p.RetryAfter > 0 {
		hdr.Set("Retry-After", strconv.Itoa(p.RetryAfter))
	}
	hdr.Set(echo.HeaderContentType, "application/problem+json")
	c.Response().WriteHeader(p.Status)
	if c.Request().Method == http.MethodHead {
		return
	}
	json.NewEncoder(c.Response()).Encode(p)
}
