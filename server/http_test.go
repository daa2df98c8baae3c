package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/blendrag/blendrag/kernels"
	"github.com/blendrag/blendrag/model/fetch"
	"github.com/blendrag/blendrag/model/modeltest"
)

// testModelSpec is the small generated generator the HTTP tests answer
// with: random weights, so answers are gibberish, but every code path of a
// real answer (retrieval, chunk KV, fusion, decoding, streaming) runs.
var testModelSpec = modeltest.Spec{Name: "http", Layers: 2, Dim: 64, Heads: 4, KVHeads: 2, FFN: 128,
	Weights: kernels.F32, Seed: 7}

// testModelPaths caches the generated model per test binary run.
var testModelPaths sync.Map

// testGenerator writes the generated model once per process and returns its path.
func testGenerator(t testing.TB) string {
	t.Helper()
	if p, ok := testModelPaths.Load("gen"); ok {
		return p.(string)
	}
	dir, err := os.MkdirTemp("", "blendrag-http-test-*")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "model.gguf")
	if err := modeltest.Write(path, testModelSpec); err != nil {
		t.Fatal(err)
	}
	testModelPaths.Store("gen", path)
	return path
}

// testHTTP is a Service and its HTTP layer behind an httptest server.
type testHTTP struct {
	svc *Service
	h   *HTTP
	srv *httptest.Server
	key string // sent as the bearer token when not empty
}

// newTestHTTP opens a Service on a temporary directory (with the small
// generated generator when gen is true, else without one) and serves it.
// It skips the test when the default embedder has not been fetched.
func newTestHTTP(t *testing.T, gen bool, cfg HTTPConfig) *testHTTP {
	t.Helper()
	return newTestHTTPWith(t, gen, cfg, nil)
}

// newTestHTTPWith is newTestHTTP with the Service's Config changed by
// configure (when not nil) before it opens.
func newTestHTTPWith(t *testing.T, gen bool, cfg HTTPConfig, configure func(*Config)) *testHTTP {
	t.Helper()
	if _, err := os.Stat(fetch.EmbedderDir(fetch.Dir())); err != nil {
		t.Skip("default embedder not present: run `make models`")
	}
	scfg := Config{DataDir: t.TempDir(), Threads: 2, NoGenerator: !gen}
	if gen {
		scfg.GeneratorPath = testGenerator(t)
	}
	if configure != nil {
		configure(&scfg)
	}
	svc, err := Open(scfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	h, err := NewHTTP(svc, cfg)
	if err != nil {
		svc.Close()
		t.Fatalf("NewHTTP: %v", err)
	}
	srv := httptest.NewServer(h.Handler())
	t.Cleanup(func() {
		srv.Close()
		h.Close()
		svc.Close()
	})
	th := &testHTTP{svc: svc, h: h, srv: srv}
	if len(cfg.APIKeys) > 0 {
		th.key = cfg.APIKeys[0]
	}
	return th
}

// do sends a request with an optional body and content type.
func (th *testHTTP) do(t *testing.T, method, path, ctype string, body io.Reader) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, th.srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if th.key != "" {
		req.Header.Set("Authorization", "Bearer "+th.key)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return res
}

// call sends v as JSON (nil: no body) and decodes a JSON answer into out
// (when not nil), checking the status.
func (th *testHTTP) call(t *testing.T, method, path string, v any, want int, out any) {
	t.Helper()
	var body io.Reader
	ctype := ""
	if v != nil {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		body, ctype = bytes.NewReader(b), "application/json"
	}
	res := th.do(t, method, path, ctype, body)
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != want {
		t.Fatalf("%s %s: status %d, want %d; body %s", method, path, res.StatusCode, want, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
}

// multipartBody builds a multipart body with one file part per name.
func multipartBody(t *testing.T, files map[string]string) (string, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for name, content := range files {
		w, err := mw.CreateFormFile("file", name)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, content)
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return mw.FormDataContentType(), &buf
}

// waitJob polls a job until it has finished.
func (th *testHTTP) waitJob(t *testing.T, id string) Job {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		var j Job
		th.call(t, "GET", "/v1/jobs/"+id, nil, http.StatusOK, &j)
		if j.State == JobDone || j.State == JobFailed {
			return j
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("job %s did not finish in 2 minutes", id)
	return Job{}
}

// upload posts files as multipart and waits for the job.
func (th *testHTTP) upload(t *testing.T, files map[string]string) (UploadAccepted, Job) {
	t.Helper()
	ct, body := multipartBody(t, files)
	res := th.do(t, "POST", "/v1/documents", ct, body)
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusAccepted {
		t.Fatalf("upload: status %d: %s", res.StatusCode, b)
	}
	var acc UploadAccepted
	if err := json.Unmarshal(b, &acc); err != nil {
		t.Fatal(err)
	}
	return acc, th.waitJob(t, acc.Job.ID)
}

// sseEvent is one parsed Server-Sent Event.
type sseEvent struct {
	Name string
	Data string
}

// readSSE parses a Server-Sent Events stream until EOF.
func readSSE(t *testing.T, r io.Reader) []sseEvent {
	t.Helper()
	var evs []sseEvent
	var cur sseEvent
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if cur.Data != "" || cur.Name != "" {
				evs = append(evs, cur)
			}
			cur = sseEvent{}
		case strings.HasPrefix(line, "event: "):
			cur.Name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			cur.Data += strings.TrimPrefix(line, "data: ")
		default:
			t.Fatalf("unexpected SSE line %q", line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return evs
}

var bridgeDocs = map[string]string{
	"bridge.txt": "The Old Stone Bridge of Marlow was built in 1742 by the mason Edwin Clay. It has seven arches.",
	"heron.md":   "# Herons\n\nThe grey heron of Lake Umber nests in tall reeds. Each spring the herons return from the south.",
	"tea.txt":    "Green tea from the Kessel hills is picked in May and dried on bamboo trays in the sun.",
}

func TestHTTPUploadListSearchDeleteRoundTrip(t *testing.T) {
	th := newTestHTTP(t, false, HTTPConfig{})
	acc, job := th.upload(t, bridgeDocs)
	if job.State != JobDone || job.Progress != 1 || len(job.Files) != 3 {
		t.Fatalf("job %+v", job)
	}
	ids := map[string]string{} // name → id
	for _, d := range acc.Documents {
		ids[d.Name] = d.ID
	}
	for _, f := range job.Files {
		if f.State != JobDone || f.Error != "" || f.Chunks == 0 {
			t.Errorf("file %+v", f)
		}
		// The id promised in the 202 is the id the document got.
		if f.Document != ids[f.Name] {
			t.Errorf("%s: ingested as %s, 202 said %s", f.Name, f.Document, ids[f.Name])
		}
	}

	var list DocumentList
	th.call(t, "GET", "/v1/documents?limit=2", nil, http.StatusOK, &list)
	if list.Total != 3 || len(list.Documents) != 2 || list.Limit != 2 {
		t.Fatalf("list %+v", list)
	}
	var rest DocumentList
	th.call(t, "GET", "/v1/documents?offset=2&limit=2", nil, http.StatusOK, &rest)
	if len(rest.Documents) != 1 || rest.Documents[0].ID == list.Documents[0].ID || rest.Documents[0].ID == list.Documents[1].ID {
		t.Fatalf("second page %+v after %+v", rest, list)
	}

	var detail DocumentDetail
	th.call(t, "GET", "/v1/documents/"+ids["bridge.txt"], nil, http.StatusOK, &detail)
	if detail.Document.FileName != "bridge.txt" || len(detail.Chunks) == 0 || !strings.Contains(detail.Chunks[0].Text, "Edwin Clay") {
		t.Fatalf("detail %+v", detail)
	}

	var sr SearchResponse
	th.call(t, "POST", "/v1/search", SearchRequest{Query: "who built the stone bridge", K: 2, Retriever: "bm25"}, http.StatusOK, &sr)
	if len(sr.Results) == 0 || sr.Results[0].Chunk.Doc != ids["bridge.txt"] || sr.Results[0].Ranks["bm25"] != 1 {
		t.Fatalf("search: %+v", sr)
	}
	th.call(t, "POST", "/v1/search", SearchRequest{Query: "heron reeds"}, http.StatusOK, &sr)
	if len(sr.Results) == 0 || sr.Results[0].Chunk.Doc != ids["heron.md"] || len(sr.Results[0].Ranks) != 2 {
		t.Fatalf("hybrid search: %+v", sr)
	}

	// JSON text upload.
	var acc2 UploadAccepted
	th.call(t, "POST", "/v1/documents", textUpload{Title: "Owls", Text: "The barn owl hunts voles at dusk."}, http.StatusAccepted, &acc2)
	if j := th.waitJob(t, acc2.Job.ID); j.State != JobDone || j.Files[0].Document != acc2.Documents[0].ID {
		t.Fatalf("text job %+v", j)
	}

	th.call(t, "DELETE", "/v1/documents/"+ids["bridge.txt"], nil, http.StatusNoContent, nil)
	th.call(t, "GET", "/v1/documents/"+ids["bridge.txt"], nil, http.StatusNotFound, nil)
	th.call(t, "DELETE", "/v1/documents/"+ids["bridge.txt"], nil, http.StatusNotFound, nil)
	th.call(t, "GET", "/v1/documents", nil, http.StatusOK, &list)
	if list.Total != 3 {
		t.Fatalf("after delete: %+v", list)
	}
}

func TestJobRecordsPerFileErrors(t *testing.T) {
	th := newTestHTTP(t, false, HTTPConfig{})
	// A file of only white space parses to no text: that file fails, the
	// other is ingested, and the job is done.
	_, job := th.upload(t, map[string]string{"good.txt": "Quiet harbours shelter fishing boats.", "blank.txt": " \n\t \n"})
	if job.State != JobDone {
		t.Fatalf("job %+v", job)
	}
	for _, f := range job.Files {
		switch f.Name {
		case "good.txt":
			if f.State != JobDone {
				t.Errorf("good file: %+v", f)
			}
		case "blank.txt":
			if f.State != JobFailed || f.Error == "" {
				t.Errorf("blank file: %+v", f)
			}
		}
	}
	// Every file failing fails the job.
	_, job = th.upload(t, map[string]string{"blank.txt": "   "})
	if job.State != JobFailed || job.Files[0].Error == "" {
		t.Fatalf("job %+v", job)
	}
	th.call(t, "GET", "/v1/jobs/nosuchjob", nil, http.StatusNotFound, nil)
}

// problemOf reads a problem+json response.
func problemOf(t *testing.T, res *http.Response) Problem {
	t.Helper()
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if ct := res.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("status %d: content type %q, want application/problem+json; body %s", res.StatusCode, ct, b)
	}
	var p Problem
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("problem body %s: %v", b, err)
	}
	if p.Status != res.StatusCode || p.Title == "" || p.Detail == "" || p.Type == "" {
		t.Fatalf("problem %+v for status %d", p, res.StatusCode)
	}
	return p
}

func TestHTTPBadInputIsProblemJSON(t *testing.T) {
	th := newTestHTTP(t, false, HTTPConfig{MaxUploadBytes: 4096, MaxFiles: 2, MaxJSONBytes: 2048, MaxQuestionBytes: 100})
	big := strings.Repeat("word ", 1000)
	mp := func(files map[string]string) (string, io.Reader) { ct, b := multipartBody(t, files); return ct, b }
	threeCT, three := mp(map[string]string{"a.txt": "a", "b.txt": "b", "c.txt": "c"})
	bigCT, bigBody := mp(map[string]string{"big.txt": big})
	noFileCT, noFile := func() (string, io.Reader) {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		mw.WriteField("title", "x")
		mw.Close()
		return mw.FormDataContentType(), &buf
	}()
	for _, tc := range []struct {
		name, method, path, ctype, body string
		reader                          io.Reader
		want                            int
	}{
		{"bad JSON", "POST", "/v1/search", "application/json", `{"query": `, nil, 400},
		{"syntax error", "POST", "/v1/search", "application/json", `{"query" "x"}`, nil, 400},
		{"wrong type", "POST", "/v1/search", "application/json", `{"query": 5}`, nil, 400},
		{"empty body", "POST", "/v1/search", "application/json", ``, nil, 400},
		{"two values", "POST", "/v1/search", "application/json", `{"query":"a"} {}`, nil, 400},
		{"unknown field", "POST", "/v1/query", "application/json", `{"question": "x", "max_token": 5}`, nil, 400},
		{"JSON array", "POST", "/v1/search", "application/json", `["x"]`, nil, 400},
		{"missing query", "POST", "/v1/search", "application/json", `{"k": 3}`, nil, 400},
		{"unknown retriever", "POST", "/v1/search", "application/json", `{"query": "x", "retriever": "magic"}`, nil, 400},
		{"k too large", "POST", "/v1/search", "application/json", `{"query": "x", "k": 1000}`, nil, 400},
		{"rerank without CE", "POST", "/v1/search", "application/json", `{"query": "x", "rerank": true}`, nil, 400},
		{"JSON too large", "POST", "/v1/search", "application/json", `{"query": "` + big + `"}`, nil, 413},
		{"wrong content type", "POST", "/v1/search", "text/plain", `{"query": "x"}`, nil, 415},
		{"missing question", "POST", "/v1/query", "application/json", `{"k": 2}`, nil, 400},
		{"question too long", "POST", "/v1/query", "application/json", `{"question": "` + strings.Repeat("q", 101) + `"}`, nil, 413},
		{"max_tokens too large", "POST", "/v1/query", "application/json", `{"question": "x", "max_tokens": 5000}`, nil, 400},
		{"no generator", "POST", "/v1/query", "application/json", `{"question": "x"}`, nil, 400},
		{"chat without messages", "POST", "/v1/chat/completions", "application/json", `{"messages": []}`, nil, 400},
		{"chat last not user", "POST", "/v1/chat/completions", "application/json", `{"messages": [{"role": "assistant", "content": "hi"}]}`, nil, 400},
		{"chat bad role", "POST", "/v1/chat/completions", "application/json", `{"messages": [{"role": "wizard", "content": "hi"}, {"role": "user", "content": "x"}]}`, nil, 400},
		{"chat n", "POST", "/v1/chat/completions", "application/json", `{"n": 2, "messages": [{"role": "user", "content": "x"}]}`, nil, 400},
		{"chat question too long", "POST", "/v1/chat/completions", "application/json", `{"messages": [{"role": "user", "content": "` + strings.Repeat("q", 101) + `"}]}`, nil, 413},
		{"upload no content type", "POST", "/v1/documents", "", `x`, nil, 415},
		{"upload text without text", "POST", "/v1/documents", "application/json", `{"title": "t"}`, nil, 400},
		{"upload too many files", "POST", "/v1/documents", threeCT, "", three, 413},
		{"upload too large", "POST", "/v1/documents", bigCT, "", bigBody, 413},
		{"upload no file", "POST", "/v1/documents", noFileCT, "", noFile, 400},
		{"multipart without boundary", "POST", "/v1/documents", "multipart/form-data", "x", nil, 400},
		{"unknown document", "GET", "/v1/documents/nope", "", "", nil, 404},
		{"delete unknown document", "DELETE", "/v1/documents/nope", "", "", nil, 404},
		{"bad offset", "GET", "/v1/documents?offset=-1", "", "", nil, 400},
		{"bad limit", "GET", "/v1/documents?limit=x", "", "", nil, 400},
		{"unknown job", "GET", "/v1/jobs/nope", "", "", nil, 404},
		{"unknown API route", "GET", "/v1/nothing", "", "", nil, 404},
		{"wrong method", "PUT", "/v1/search", "", "", nil, 405},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.reader
			if r == nil {
				r = strings.NewReader(tc.body)
			}
			res := th.do(t, tc.method, tc.path, tc.ctype, r)
			if res.StatusCode != tc.want {
				b, _ := io.ReadAll(res.Body)
				t.Fatalf("status %d, want %d: %s", res.StatusCode, tc.want, b)
			}
			p := problemOf(t, res)
			t.Logf("%d %s: %s", p.Status, p.Title, p.Detail)
		})
	}
}

func TestHTTPIngestQueueFullIs429(t *testing.T) {
	th := newTestHTTP(t, false, HTTPConfig{QueueLength: 1})
	// Hold the Service's write lock so the worker blocks on its first
	// job: one job runs (blocked), one waits, the third is refused.
	th.svc.write.Lock()
	unlocked := false
	defer func() {
		if !unlocked {
			th.svc.write.Unlock()
		}
	}()
	var first UploadAccepted
	th.call(t, "POST", "/v1/documents", textUpload{Title: "a", Text: "alpha text"}, http.StatusAccepted, &first)
	// Wait until the worker has taken the first job off the queue.
	for deadline := time.Now().Add(time.Minute); th.h.jobs.depth() != 0; {
		if time.Now().After(deadline) {
			t.Fatal("the worker did not take the first job")
		}
		time.Sleep(5 * time.Millisecond)
	}
	th.call(t, "POST", "/v1/documents", textUpload{Title: "b", Text: "beta text"}, http.StatusAccepted, nil)
	res := th.do(t, "POST", "/v1/documents", "application/json", strings.NewReader(`{"title": "c", "text": "gamma text"}`))
	if res.StatusCode != http.StatusTooManyRequests || res.Header.Get("Retry-After") == "" {
		t.Fatalf("status %d, Retry-After %q: want 429 with Retry-After", res.StatusCode, res.Header.Get("Retry-After"))
	}
	problemOf(t, res)
	var j Job
	th.call(t, "GET", "/v1/jobs/"+first.Job.ID, nil, http.StatusOK, &j)
	if j.State != JobRunning {
		t.Fatalf("first job %+v, want running", j)
	}
	th.svc.write.Unlock()
	unlocked = true
	if j := th.waitJob(t, first.Job.ID); j.State != JobDone {
		t.Fatalf("first job %+v", j)
	}
}

func TestHTTPAPIKeys(t *testing.T) {
	th := newTestHTTP(t, false, HTTPConfig{APIKeys: []string{"k1", "k2"}})
	for _, tc := range []struct {
		path, auth string
		want       int
	}{
		{"/healthz", "", 200},
		{"/readyz", "", 200},
		{"/", "", 200},
		{"/v1/documents", "", 401},
		{"/v1/documents", "Bearer wrong", 401},
		{"/v1/documents", "Basic azE6", 401},
		{"/v1/documents", "Bearer k1", 200},
		{"/v1/documents", "Bearer k2", 200},
		{"/metrics", "", 401},
		{"/metrics", "Bearer k2", 200},
		{"/openapi.json", "", 401},
	} {
		req, _ := http.NewRequest("GET", th.srv.URL+tc.path, nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != tc.want {
			t.Errorf("GET %s with %q: status %d, want %d", tc.path, tc.auth, res.StatusCode, tc.want)
		}
		if res.StatusCode == 401 {
			if res.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("GET %s: 401 without WWW-Authenticate", tc.path)
			}
			problemOf(t, res)
		}
		res.Body.Close()
	}
	// Without keys configured everything is open.
	open := newTestHTTP(t, false, HTTPConfig{})
	open.call(t, "GET", "/v1/documents", nil, http.StatusOK, nil)
}

func TestHTTPCORSOffByDefault(t *testing.T) {
	for _, tc := range []struct {
		origins []string
		want    string
	}{
		{nil, ""},
		{[]string{"http://ui.example"}, "http://ui.example"},
	} {
		th := newTestHTTP(t, false, HTTPConfig{CORSOrigins: tc.origins})
		req, _ := http.NewRequest("GET", th.srv.URL+"/v1/documents", nil)
		req.Header.Set("Origin", "http://ui.example")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if got := res.Header.Get("Access-Control-Allow-Origin"); got != tc.want {
			t.Errorf("origins %v: Access-Control-Allow-Origin %q, want %q", tc.origins, got, tc.want)
		}
	}
}

func TestHTTPHealthReadyMetricsAndUI(t *testing.T) {
	th := newTestHTTP(t, false, HTTPConfig{})
	th.call(t, "GET", "/healthz", nil, http.StatusOK, nil)
	var r Readiness
	th.call(t, "GET", "/readyz", nil, http.StatusOK, &r)
	if !r.Ready || !r.Stores || r.Generator != "disabled" {
		t.Fatalf("readyz %+v", r)
	}
	th.upload(t, map[string]string{"a.txt": "Amber lanterns glow over the quay."})
	res := th.do(t, "GET", "/metrics", "", nil)
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{
		`blendrag_http_request_duration_seconds_count{code="202",method="POST",route="/v1/documents"} 1`,
		`blendrag_ingest_queue_depth 0`,
		`blendrag_ingest_jobs_total{state="done"} 1`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	res = th.do(t, "GET", "/", "", nil)
	page, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(strings.ToLower(string(page)), "<html") {
		t.Errorf("GET /: %d %.80s", res.StatusCode, page)
	}
	th.h.closing.Store(true)
	th.call(t, "GET", "/readyz", nil, http.StatusServiceUnavailable, &r)
	if r.Ready || !r.ShuttingDown {
		t.Fatalf("readyz while shutting down %+v", r)
	}
}

func TestHTTPRecoversFromPanic(t *testing.T) {
	th := newTestHTTP(t, false, HTTPConfig{})
	th.h.e.GET("/v1/panic", func(c echo.Context) error { panic("boom") })
	res := th.do(t, "GET", "/v1/panic", "", nil)
	if res.StatusCode != http.StatusInternalServerError {
		t.Fatalf("status %d", res.StatusCode)
	}
	problemOf(t, res)
	th.call(t, "GET", "/healthz", nil, http.StatusOK, nil)
}

func TestServeShutsDownGracefully(t *testing.T) {
	if _, err := os.Stat(fetch.EmbedderDir(fetch.Dir())); err != nil {
		t.Skip("default embedder not present: run `make models`")
	}
	svc, err := Open(Config{DataDir: t.TempDir(), Threads: 2, NoGenerator: true})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	h, err := NewHTTP(svc, HTTPConfig{ShutdownTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Serve(ctx, ln) }()
	url := "http://" + ln.Addr().String()
	res, err := http.Get(url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if _, err := http.Get(url + "/healthz"); err == nil {
		t.Fatal("the server still accepts connections after shutdown")
	}
	if _, err := h.jobs.enqueue([]upload{{title: "x", text: "y", isText: true}}); err == nil {
		t.Fatal("the job queue still takes jobs after shutdown")
	}
}
