package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/blendrag/blendrag/server"
)

// askRemote asks a running blendrag server (serverURL, e.g.
// http://127.0.0.1:8080) through POST /v1/query. Unless asJSON it streams
// the answer (Server-Sent Events) and writes each piece of text to out as it
// arrives; with asJSON it asks for one JSON answer and writes nothing. It
// returns the Answer (text, citations, timings) for the caller to print as
// the local ask does. apiKey, when not empty, is sent as a bearer token. An
// error answer from the server becomes an error carrying its problem's
// status and detail; cancelling ctx abandons the request (and so cancels
// the server's work).
func askRemote(ctx context.Context, out io.Writer, serverURL, apiKey string, req server.AskRequest, asJSON bool) (server.Answer, error) {
	body, err := json.Marshal(server.QueryRequest{AskRequest: req, Stream: !asJSON})
	if err != nil {
		return server.Answer{}, fmt.Errorf("ask --server: %w", err)
	}
	url := strings.TrimRight(serverURL, "/") + "/v1/query"
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return server.Answer{}, fmt.Errorf("ask --server: %w", err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	if asJSON {
		hreq.Header.Set("Accept", "application/json")
	} else {
		hreq.Header.Set("Accept", "text/event-stream")
	}
	if apiKey != "" {
		hreq.Header.Set("Authorization", "Bearer "+apiKey)
	}
	res, err := http.DefaultClient.Do(hreq)
	if err != nil {
		return server.Answer{}, fmt.Errorf("ask --server: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return server.Answer{}, fmt.Errorf("ask --server %s: %w", url, problemError(res))
	}
	if asJSON {
		var ans server.Answer
		if err := json.NewDecoder(res.Body).Decode(&ans); err != nil {
			return server.Answer{}, fmt.Errorf("ask --server: reading the answer: %w", err)
		}
		return ans, nil
	}
	ans, err := readAnswerStream(res.Body, out)
	if err != nil {
		return ans, fmt.Errorf("ask --server %s: %w", url, err)
	}
	return ans, nil
}

// problemError turns an error response into an error: its problem+json
// title and detail, or the status and the start of the body.
func problemError(res *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	var p server.Problem
	if json.Unmarshal(b, &p) == nil && p.Status != 0 {
		return &p
	}
	return fmt.Errorf("%s: %.200s", res.Status, strings.TrimSpace(string(b)))
}

// readAnswerStream reads /v1/query's event stream: token events go to out
// as they arrive; citations, timings and done fill the Answer; an error
// event ends it with the server's problem.
func readAnswerStream(r io.Reader, out io.Writer) (server.Answer, error) {
	var ans server.Answer
	var text strings.Builder
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20) // the citations event carries chunk texts
	var name, data string
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "event:"); ok {
			name = strings.TrimSpace(v)
			continue
		}
		if v, ok := strings.CutPrefix(line, "data:"); ok {
			data += strings.TrimPrefix(v, " ")
			continue
		}
		if line != "" || data == "" {
			continue // comments and unknown fields; blank lines between events
		}
		ev, payload := name, []byte(data)
		name, data = "", ""
		var err error
		switch ev {
		case server.EventToken:
			var t server.TokenEvent
			if err = json.Unmarshal(payload, &t); err == nil {
				text.WriteString(t.Text)
				_, err = io.WriteString(out, t.Text)
			}
		case server.EventCitations:
			err = json.Unmarshal(payload, &ans.Citations)
		case server.EventTimings:
			err = json.Unmarshal(payload, &ans.Timings)
		case server.EventDone:
			var d server.DoneEvent
			if err = json.Unmarshal(payload, &d); err == nil {
				ans.Text, ans.Mode, ans.Stop = d.Answer, d.Mode, d.Stop
				return ans, nil
			}
		case server.EventError:
			var p server.Problem
			if err = json.Unmarshal(payload, &p); err == nil {
				err = &p
			}
			ans.Text = text.String()
			return ans, fmt.Errorf("the answer failed after %d bytes: %w", text.Len(), err)
		}
		if err != nil {
			return ans, fmt.Errorf("%s event: %w", ev, err)
		}
	}
	ans.Text = text.String()
	if err := sc.Err(); err != nil {
		return ans, fmt.Errorf("reading the stream: %w", err)
	}
	return ans, errors.New("the stream ended before its done event")
}
