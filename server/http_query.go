package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
)

// QueryRequest is the body of POST /v1/query: every AskRequest field plus
// stream (Server-Sent Events instead of one JSON answer).
type QueryRequest struct {
	AskRequest
	Stream bool `json:"stream,omitempty"`
}

// SearchResponse is the answer to POST /v1/search.
type SearchResponse struct {
	Results []SearchResult `json:"results"`
}

// Server-Sent Event names of a streamed /v1/query, in the order sent:
// token (many), citations, timings, done — or error, last, when the
// answer fails after the stream has started.
const (
	EventToken     = "token"
	EventCitations = "citations"
	EventTimings   = "timings"
	EventDone      = "done"
	EventError     = "error"
)

// TokenEvent is the data of a token event: the next piece of the answer.
type TokenEvent struct {
	Text string `json:"text"`
}

// DoneEvent is the data of the done event.
type DoneEvent struct {
	Answer string `json:"answer"`
	Mode   string `json:"mode"`
	Stop   string `json:"stop"`
}

// search runs a search.
func (h *HTTP) search(c echo.Context) error {
	var req SearchRequest
	if err := h.decodeJSON(c, &req, true); err != nil {
		return err
	}
	if strings.TrimSpace(req.Query) == "" {
		return problemf(http.StatusBadRequest, "field \"query\" is missing or empty")
	}
	res, err := h.svc.Search(c.Request().Context(), req)
	if err != nil {
		return err
	}
	if res == nil {
		res = []SearchResult{}
	}
	return c.JSON(http.StatusOK, SearchResponse{Results: res})
}

// checkQuestion applies the HTTP limits to an AskRequest.
func (h *HTTP) checkQuestion(req AskRequest) error {
	switch {
	case strings.TrimSpace(req.Question) == "":
		return problemf(http.StatusBadRequest, "the question is missing or empty")
	case len(req.Question) > h.cfg.MaxQuestionBytes:
		return problemf(http.StatusRequestEntityTooLarge, "the question is %d bytes, the limit is %d", len(req.Question), h.cfg.MaxQuestionBytes)
	case req.MaxTokens < 0 || req.MaxTokens > h.cfg.MaxTokens:
		return problemf(http.StatusBadRequest, "max_tokens %d outside 1..%d", req.MaxTokens, h.cfg.MaxTokens)
	}
	return nil
}

// ask answers req under the concurrent-query limit and records metrics.
// emit is as for Service.Ask.
func (h *HTTP) ask(ctx context.Context, req AskRequest, emit func(string) error) (Answer, error) {
	select {
	case h.queries <- struct{}{}:
	default:
		h.metrics.queries.WithLabelValues("rejected").Inc()
		return Answer{}, tooMany(1, "%d questions are being answered already: retry shortly", h.cfg.MaxConcurrentQueries)
	}
	defer func() { <-h.queries }()
	h.metrics.inFlight.Inc()
	defer h.metrics.inFlight.Dec()
	ans, err := h.svc.Ask(ctx, req, emit)
	switch {
	case err == nil:
		h.metrics.queries.WithLabelValues("ok").Inc()
		h.metrics.observeAnswer(ans)
	case ctx.Err() != nil:
		h.metrics.queries.WithLabelValues("cancelled").Inc()
	case toProblem(err).Status < 500:
		h.metrics.queries.WithLabelValues("bad_request").Inc()
	default:
		h.metrics.queries.WithLabelValues("error").Inc()
	}
	return ans, err
}

// query answers a question, as one JSON Answer or as a stream.
func (h *HTTP) query(c echo.Context) error {
	var req QueryRequest
	if err := h.decodeJSON(c, &req, true); err != nil {
		return err
	}
	if err := h.checkQuestion(req.AskRequest); err != nil {
		return err
	}
	ctx := c.Request().Context()
	if !req.Stream {
		ans, err := h.ask(ctx, req.AskRequest, nil)
		if err != nil {
			return err
		}
		if ans.Citations == nil {
			ans.Citations = []Citation{}
		}
		return c.JSON(http.StatusOK, ans)
	}
	sse := &sseWriter{c: c}
	ans, err := h.ask(ctx, req.AskRequest, func(piece string) error {
		return sse.event(EventToken, TokenEvent{Text: piece})
	})
	if err != nil {
		return sse.fail(err)
	}
	if ans.Citations == nil {
		ans.Citations = []Citation{}
	}
	for _, ev := range []struct {
		name string
		data any
	}{
		{EventCitations, ans.Citations},
		{EventTimings, ans.Timings},
		{EventDone, DoneEvent{Answer: ans.Text, Mode: ans.Mode, Stop: ans.Stop}},
	} {
		if err := sse.event(ev.name, ev.data); err != nil {
			return fmt.Errorf("stream: %w", err)
		}
	}
	return nil
}

// sseWriter writes Server-Sent Events. The response starts with the first
// event, so an error before any event is still an ordinary problem+json
// response with its status code.
type sseWriter struct {
	c       echo.Context
	started bool
}

// event writes one event named name (none when empty) with data as JSON
// and flushes it.
func (w *sseWriter) event(name string, data any) error {
	b, err := json.Marshal(data)
	if err != nil {
		return fmt.Errorf("event %s: %w", name, err)
	}
	return w.write(name, b)
}

// data writes an unnamed event with v as JSON (OpenAI's stream format).
func (w *sseWriter) data(v any) error { return w.event("", v) }

// raw writes an unnamed event whose data is s as is.
func (w *sseWriter) raw(s string) error { return w.write("", []byte(s)) }

// write sends one event; payload must not hold a newline.
func (w *sseWriter) write(name string, payload []byte) error {
	res := w.c.Response()
	if !w.started {
		w.started = true
		hdr := res.Header()
		hdr.Set(echo.HeaderContentType, "text/event-stream")
		hdr.Set(echo.HeaderCacheControl, "no-cache")
		hdr.Set("X-Accel-Buffering", "no")
		res.WriteHeader(http.StatusOK)
	}
	var err error
	if name != "" {
		_, err = fmt.Fprintf(res, "event: %s\ndata: %s\n\n", name, payload)
	} else {
		_, err = fmt.Fprintf(res, "data: %s\n\n", payload)
	}
	if err != nil {
		return fmt.Errorf("event %s: %w", name, err)
	}
	return http.NewResponseController(res.Writer).Flush()
}

// fail ends the stream with an error event carrying a problem body, or,
// before the stream has started, returns err for the error handler.
func (w *sseWriter) fail(err error) error {
	if !w.started {
		return err
	}
	p := toProblem(err)
	if werr := w.event(EventError, p); werr != nil {
		return errors.Join(err, werr)
	}
	return err
}
