package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/blendrag/blendrag/model"
)

// newAnsweringHTTP serves a Service with the generated generator and the
// bridge documents ingested; it returns the document ids by file name.
func newAnsweringHTTP(t *testing.T, cfg HTTPConfig) (*testHTTP, map[string]string) {
	t.Helper()
	th := newTestHTTP(t, true, cfg)
	acc, job := th.upload(t, bridgeDocs)
	if job.State != JobDone {
		t.Fatalf("ingest job %+v", job)
	}
	ids := map[string]string{}
	for _, d := range acc.Documents {
		ids[d.Name] = d.ID
	}
	return th, ids
}

// postStream posts v as JSON and returns the (possibly streamed) response.
func (th *testHTTP) postStream(t *testing.T, ctx context.Context, path string, v any) *http.Response {
	t.Helper()
	res, err := th.post(ctx, path, v)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// post posts v as JSON (for goroutines, which must not call t.Fatal).
func (th *testHTTP) post(ctx context.Context, path string, v any) (*http.Response, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, "POST", th.srv.URL+path, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	return http.DefaultClient.Do(req)
}

const bridgeQuestion = "Who built the Old Stone Bridge of Marlow?"

func TestHTTPQueryStreamMatchesJSONAnswer(t *testing.T) {
	th, ids := newAnsweringHTTP(t, HTTPConfig{})
	req := QueryRequest{AskRequest: AskRequest{Question: bridgeQuestion, K: 2, MaxTokens: 12}}

	var ans Answer
	th.call(t, "POST", "/v1/query", req, http.StatusOK, &ans)
	if ans.Mode != "cacheblend" || ans.Timings.Tokens == 0 || ans.Timings.FirstToken <= 0 || ans.Stop == "" {
		t.Fatalf("answer %+v", ans)
	}
	if len(ans.Citations) != 2 || ans.Citations[0].Index != 1 {
		t.Fatalf("citations %+v", ans.Citations)
	}
	known := map[string]bool{}
	for _, id := range ids {
		known[id] = true
	}
	for _, c := range ans.Citations {
		if !known[c.Chunk.Doc] || c.Chunk.Text == "" || c.Title == "" {
			t.Errorf("citation %+v does not point into an uploaded document", c)
		}
	}

	req.Stream = true
	res := th.postStream(t, context.Background(), "/v1/query", req)
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: status %d, content type %q", res.StatusCode, res.Header.Get("Content-Type"))
	}
	evs := readSSE(t, res.Body)
	// token*, citations, timings, done — in that order.
	var text strings.Builder
	i := 0
	for ; i < len(evs) && evs[i].Name == EventToken; i++ {
		var tok TokenEvent
		if err := json.Unmarshal([]byte(evs[i].Data), &tok); err != nil {
			t.Fatal(err)
		}
		text.WriteString(tok.Text)
	}
	if i == 0 || len(evs) != i+3 || evs[i].Name != EventCitations || evs[i+1].Name != EventTimings || evs[i+2].Name != EventDone {
		names := make([]string, len(evs))
		for k, e := range evs {
			names[k] = e.Name
		}
		t.Fatalf("event order %v, want token…, citations, timings, done", names)
	}
	var cites []Citation
	var tim Timings
	var done DoneEvent
	for _, d := range []struct {
		data string
		v    any
	}{{evs[i].Data, &cites}, {evs[i+1].Data, &tim}, {evs[i+2].Data, &done}} {
		if err := json.Unmarshal([]byte(d.data), d.v); err != nil {
			t.Fatal(err)
		}
	}
	// Greedy decoding: the streamed answer is the JSON answer, token for token.
	if text.String() != ans.Text || done.Answer != ans.Text || done.Mode != ans.Mode || done.Stop != ans.Stop {
		t.Errorf("streamed %q (done %+v), JSON answer %q", text.String(), done, ans.Text)
	}
	if len(cites) != len(ans.Citations) || cites[0].Chunk.ID != ans.Citations[0].Chunk.ID || tim.Tokens != ans.Timings.Tokens {
		t.Errorf("streamed citations %+v / timings %+v differ from the JSON answer's", cites, tim)
	}

	// The metrics saw two answered questions, with every cited chunk's KV
	// counted as a hit or a miss.
	if got := testutil.ToFloat64(th.h.metrics.queries.WithLabelValues("ok")); got != 2 {
		t.Errorf("queries ok = %v, want 2", got)
	}
	hits := testutil.ToFloat64(th.h.metrics.kvChunks.WithLabelValues("hit"))
	miss := testutil.ToFloat64(th.h.metrics.kvChunks.WithLabelValues("miss"))
	if hits+miss != 4 {
		t.Errorf("KV hits %v + misses %v, want 4 cited chunks", hits, miss)
	}
	if n := testutil.CollectAndCount(th.h.metrics.ttft); n != 1 {
		t.Errorf("TTFT series = %d, want 1 (mode cacheblend)", n)
	}
	// The second question found its chunks in the host RAM tier, which
	// the metrics count and whose memory they report; no device tier.
	hot := testutil.ToFloat64(th.h.metrics.kvTiers.WithLabelValues("host_ram"))
	if want := float64(ans.Timings.KVHot + tim.KVHot); hot != want || want == 0 {
		t.Errorf("host RAM tier chunks = %v, want %v (> 0)", hot, want)
	}
	tiers := th.svc.KVTiers()
	if tiers.HotChunks == 0 || tiers.HotBytes == 0 || tiers.Device != (model.ChunkTierStats{}) {
		t.Errorf("tiers %+v: want chunks in host RAM and no device tier", tiers)
	}
	mres := th.do(t, "GET", "/metrics", "", nil)
	body, _ := io.ReadAll(mres.Body)
	mres.Body.Close()
	if line := fmt.Sprintf(`blendrag_kv_tier_bytes{tier="host_ram"} %d`, tiers.HotBytes); !strings.Contains(string(body), line) {
		t.Errorf("/metrics lacks %q", line)
	}
}

func TestHTTPQueryBadModeBeforeStreamIsProblem(t *testing.T) {
	th, _ := newAnsweringHTTP(t, HTTPConfig{})
	for _, stream := range []bool{false, true} {
		res := th.postStream(t, context.Background(), "/v1/query",
			QueryRequest{AskRequest: AskRequest{Question: bridgeQuestion, Mode: "magic"}, Stream: stream})
		if res.StatusCode != http.StatusBadRequest {
			t.Fatalf("stream=%v: status %d, want 400", stream, res.StatusCode)
		}
		problemOf(t, res)
	}
}

func TestHTTPChatCompletionsMatchQuery(t *testing.T) {
	th, _ := newAnsweringHTTP(t, HTTPConfig{})
	var ans Answer
	th.call(t, "POST", "/v1/query", QueryRequest{AskRequest: AskRequest{Question: bridgeQuestion, K: 2, MaxTokens: 10}}, http.StatusOK, &ans)

	chat := map[string]any{
		"model":      "gpt-4o-mini",
		"messages":   []map[string]any{{"role": "system", "content": "Be brief."}, {"role": "user", "content": bridgeQuestion}},
		"max_tokens": 10, "k": 2,
	}
	var cc ChatCompletion
	th.call(t, "POST", "/v1/chat/completions", chat, http.StatusOK, &cc)
	if cc.Object != "chat.completion" || cc.Model != "gpt-4o-mini" || !strings.HasPrefix(cc.ID, "chatcmpl-") || cc.Created == 0 {
		t.Fatalf("completion %+v", cc)
	}
	if len(cc.Choices) != 1 || cc.Choices[0].Message.Role != "assistant" || cc.Choices[0].FinishReason == "" {
		t.Fatalf("choices %+v", cc.Choices)
	}
	// One user message (system messages are ignored) is the same question.
	if cc.Choices[0].Message.Content != ans.Text || len(cc.Citations) != len(ans.Citations) {
		t.Errorf("chat answer %q with %d citations, query answer %q with %d", cc.Choices[0].Message.Content, len(cc.Citations), ans.Text, len(ans.Citations))
	}
	wantFinish := map[string]string{"eos": "stop", "stop": "stop", "max_tokens": "length", "context": "length"}[ans.Stop]
	if cc.Choices[0].FinishReason != wantFinish {
		t.Errorf("finish_reason %q for stop %q", cc.Choices[0].FinishReason, ans.Stop)
	}

	chat["stream"] = true
	res := th.postStream(t, context.Background(), "/v1/chat/completions", chat)
	defer res.Body.Close()
	evs := readSSE(t, res.Body)
	if len(evs) < 3 || evs[len(evs)-1].Data != "[DONE]" {
		t.Fatalf("stream of %d events, last %+v: want chunks then [DONE]", len(evs), evs[len(evs)-1])
	}
	var text strings.Builder
	var last ChatChunk
	for k, ev := range evs[:len(evs)-1] {
		if ev.Name != "" {
			t.Fatalf("event %d named %q: OpenAI streams are unnamed", k, ev.Name)
		}
		var ch ChatChunk
		if err := json.Unmarshal([]byte(ev.Data), &ch); err != nil {
			t.Fatal(err)
		}
		if ch.Object != "chat.completion.chunk" || ch.ID == "" || len(ch.Choices) != 1 {
			t.Fatalf("chunk %+v", ch)
		}
		if k == 0 && ch.Choices[0].Delta.Role != "assistant" {
			t.Errorf("first chunk's delta %+v: want the assistant role", ch.Choices[0].Delta)
		}
		if fr := ch.Choices[0].FinishReason; (fr != nil) != (k == len(evs)-2) {
			t.Errorf("chunk %d: finish_reason %v (only the last chunk has one)", k, fr)
		}
		text.WriteString(ch.Choices[0].Delta.Content)
		last = ch
	}
	if text.String() != ans.Text || len(last.Citations) != len(ans.Citations) || last.Timings == nil || *last.Choices[0].FinishReason != wantFinish {
		t.Errorf("streamed %q, last chunk %+v; want %q with %d citations", text.String(), last, ans.Text, len(ans.Citations))
	}
}

func TestChatQuestionRendersEarlierTurnsWithinLimit(t *testing.T) {
	msg := func(role, content string) ChatMessage {
		b, _ := json.Marshal(content)
		return ChatMessage{Role: role, Content: b}
	}
	parts := ChatMessage{Role: "user", Content: json.RawMessage(`[{"type":"text","text":"When was "},{"type":"image_url"},{"type":"text","text":"it built?"}]`)}
	for _, tc := range []struct {
		name  string
		msgs  []ChatMessage
		limit int
		want  string
	}{
		{"one message", []ChatMessage{msg("user", "  Who built it? ")}, 100, "Who built it?"},
		{"content parts", []ChatMessage{parts}, 100, "When was it built?"},
		{"history", []ChatMessage{msg("system", "sys"), msg("user", "Tell me about the bridge."), msg("assistant", "It has\nseven arches."), msg("user", "Who built it?")}, 200,
			"Earlier in this conversation:\nUser: Tell me about the bridge.\nAssistant: It has seven arches.\n\nCurrent question: Who built it?"},
		// Only the most recent turn fits: the oldest is dropped whole.
		{"history cut", []ChatMessage{msg("user", "Tell me about the bridge."), msg("assistant", "It has seven arches."), msg("user", "Who built it?")}, 100,
			"Earlier in this conversation:\nAssistant: It has seven arches.\n\nCurrent question: Who built it?"},
		{"no history fits", []ChatMessage{msg("user", "Tell me about the bridge."), msg("user", "Who built it?")}, 40, "Who built it?"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := chatQuestion(tc.msgs, tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
			if len(got) > tc.limit {
				t.Errorf("%d bytes over the limit %d", len(got), tc.limit)
			}
		})
	}
}

func TestHTTPConcurrentQueryLimitIs429(t *testing.T) {
	th, _ := newAnsweringHTTP(t, HTTPConfig{MaxConcurrentQueries: 1})
	th.svc.eng.mu.Lock() // the first question waits for the model
	first := make(chan int, 1)
	go func() {
		res, err := th.post(context.Background(), "/v1/query", QueryRequest{AskRequest: AskRequest{Question: bridgeQuestion, MaxTokens: 4}})
		if err != nil {
			first <- 0
			return
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		first <- res.StatusCode
	}()
	waitGauge(t, th, 1)
	res := th.postStream(t, context.Background(), "/v1/chat/completions",
		map[string]any{"messages": []map[string]string{{"role": "user", "content": "hello"}}})
	if res.StatusCode != http.StatusTooManyRequests || res.Header.Get("Retry-After") == "" {
		t.Errorf("second question: status %d, Retry-After %q; want 429 with Retry-After", res.StatusCode, res.Header.Get("Retry-After"))
	}
	problemOf(t, res)
	th.svc.eng.mu.Unlock()
	if code := <-first; code != http.StatusOK {
		t.Errorf("first question: status %d", code)
	}
}

// waitGauge waits until n questions are in flight.
func waitGauge(t *testing.T, th *testHTTP, n float64) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); testutil.ToFloat64(th.h.metrics.inFlight) != n; {
		if time.Now().After(deadline) {
			t.Fatalf("in-flight questions did not reach %v", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestHTTPClientDisconnectCancelsQuestion(t *testing.T) {
	// Without a stream only the request's context can stop the answer; a
	// stream also stops when writing to the closed connection fails.
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprintf("stream=%v", stream), func(t *testing.T) {
			th, _ := newAnsweringHTTP(t, HTTPConfig{})
			th.svc.eng.mu.Lock() // hold the question before its prefill
			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error, 1)
			go func() {
				b, _ := json.Marshal(QueryRequest{AskRequest: AskRequest{Question: bridgeQuestion, MaxTokens: MaxMaxTokens}, Stream: stream})
				req, _ := http.NewRequestWithContext(ctx, "POST", th.srv.URL+"/v1/query", bytes.NewReader(b))
				req.Header.Set("Content-Type", "application/json")
				res, err := http.DefaultClient.Do(req)
				if err == nil {
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
				}
				errc <- err
			}()
			waitGauge(t, th, 1)
			cancel() // the client goes away
			if err := <-errc; !errors.Is(err, context.Canceled) {
				t.Fatalf("client: %v", err)
			}
			time.Sleep(200 * time.Millisecond) // the server notices the closed connection
			th.svc.eng.mu.Unlock()
			waitGauge(t, th, 0)
			if got := testutil.ToFloat64(th.h.metrics.queries.WithLabelValues("cancelled")); got != 1 {
				t.Fatalf("cancelled questions = %v, want 1 (ok: %v)", got, testutil.ToFloat64(th.h.metrics.queries.WithLabelValues("ok")))
			}
		})
	}
}

func TestHTTPRequestTimeoutIs504(t *testing.T) {
	th, _ := newAnsweringHTTP(t, HTTPConfig{RequestTimeout: 100 * time.Millisecond})
	th.svc.eng.mu.Lock() // the question waits for the model past its deadline
	done := make(chan *http.Response, 1)
	go func() {
		res, err := th.post(context.Background(), "/v1/query", QueryRequest{AskRequest: AskRequest{Question: bridgeQuestion, MaxTokens: 4}})
		if err != nil {
			res = &http.Response{StatusCode: 0, Body: io.NopCloser(strings.NewReader(err.Error()))}
		}
		done <- res
	}()
	waitGauge(t, th, 1)
	time.Sleep(200 * time.Millisecond)
	th.svc.eng.mu.Unlock()
	res := <-done
	if res.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("status %d, want 504", res.StatusCode)
	}
	problemOf(t, res)
}

func TestHTTPConcurrentRequestsShareTheEngine(t *testing.T) {
	th, _ := newAnsweringHTTP(t, HTTPConfig{MaxConcurrentQueries: 4})
	req := QueryRequest{AskRequest: AskRequest{Question: bridgeQuestion, K: 2, MaxTokens: 8}}
	var want Answer
	th.call(t, "POST", "/v1/query", req, http.StatusOK, &want)

	// Four questions (two streamed), searches and an upload at once: every
	// question gets the answer it gets alone (greedy decoding).
	type result struct {
		what string
		err  error
	}
	results := make(chan result, 16)
	for i := range 4 {
		go func() {
			r := req
			r.Stream = i%2 == 1
			res, err := th.post(context.Background(), "/v1/query", r)
			if err != nil {
				results <- result{"query", err}
				return
			}
			defer res.Body.Close()
			if res.StatusCode != http.StatusOK {
				results <- result{"query", fmt.Errorf("status %d", res.StatusCode)}
				return
			}
			var text string
			if r.Stream {
				for _, ev := range readSSEBody(res.Body) {
					if ev.Name == EventDone {
						var d DoneEvent
						json.Unmarshal([]byte(ev.Data), &d)
						text = d.Answer
					}
				}
			} else {
				var a Answer
				json.NewDecoder(res.Body).Decode(&a)
				text = a.Text
			}
			if text != want.Text {
				results <- result{"query", fmt.Errorf("answer %q, alone %q", text, want.Text)}
				return
			}
			results <- result{"query", nil}
		}()
	}
	for range 3 {
		go func() {
			res, err := th.post(context.Background(), "/v1/search", SearchRequest{Query: "heron reeds", K: 2})
			if err != nil {
				results <- result{"search", err}
				return
			}
			res.Body.Close()
			if res.StatusCode != http.StatusOK {
				results <- result{"search", fmt.Errorf("status %d", res.StatusCode)}
				return
			}
			results <- result{"search", nil}
		}()
	}
	go func() {
		res, err := th.post(context.Background(), "/v1/documents", textUpload{Title: "Owls", Text: "The barn owl hunts voles at dusk."})
		if err != nil {
			results <- result{"upload", err}
			return
		}
		res.Body.Close()
		if res.StatusCode != http.StatusAccepted {
			results <- result{"upload", fmt.Errorf("status %d", res.StatusCode)}
			return
		}
		results <- result{"upload", nil}
	}()
	for range 8 {
		if r := <-results; r.err != nil {
			t.Errorf("%s: %v", r.what, r.err)
		}
	}
}

// readSSEBody parses a Server-Sent Events stream (for goroutines, which
// must not call t.Fatal).
func readSSEBody(r io.Reader) []sseEvent {
	var evs []sseEvent
	var cur sseEvent
	b, _ := io.ReadAll(r)
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case line == "" && cur.Name != "":
			evs = append(evs, cur)
			cur = sseEvent{}
		case strings.HasPrefix(line, "event: "):
			cur.Name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			cur.Data += strings.TrimPrefix(line, "data: ")
		}
	}
	return evs
}
