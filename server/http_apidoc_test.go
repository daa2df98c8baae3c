package server

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// TestAPIDocExamplesRunAsWritten runs every sh block of docs/API.md, in
// order, in one bash, against a served Service (with the small generated
// generator), the address 127.0.0.1:8080 replaced by the test server's.
func TestAPIDocExamplesRunAsWritten(t *testing.T) {
	out := runShellExamples(t, "../docs/API.md", 10)
	// What each example must have printed.
	for _, want := range []string{
		`{"status":"ok"}`,                        // healthz
		`"ready":true`,                           // readyz
		`"job":{"id":"`,                          // uploads
		`"state":"done","progress":1`,            // the job
		`"total":3`,                              // the list
		`"file_name":"bridge.txt"`,               // one document
		`{"results":[{"chunk":`,                  // search
		`"citations":[{"index":1`,                // query
		"event: citations\ndata: [",              // streamed query
		"event: done\ndata: {",                   //
		`"object":"chat.completion"`,             // chat
		`"object":"chat.completion.chunk"`,       // streamed chat
		"data: [DONE]",                           //
		"204\n",                                  // delete
		`"status":400`,                           // errors
		`"status":404`,                           //
		`blendrag_queries_total{outcome="ok"} 4`, // metrics
		`"openapi": "3.`,                         // the API description
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}

// TestREADMEExamplesRunAsWritten runs the README's API example against a
// fresh server: upload, wait, search, query and chat all answer.
func TestREADMEExamplesRunAsWritten(t *testing.T) {
	out := runShellExamples(t, "../README.md", 1)
	for _, want := range []string{
		`{"status":"ok"}`,
		`"state":"done","progress":1`,
		`{"results":[{"chunk":`,
		`"citations":[{"index":1`,
		`"object":"chat.completion"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}

// runShellExamples runs every sh block of the Markdown file at path (at
// least min of them), in order, in one bash with set -eu, from an empty
// directory, against a fresh test server in place of 127.0.0.1:8080, and
// returns what they printed.
func runShellExamples(t *testing.T, path string, min int) string {
	t.Helper()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("no curl")
	}
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(string(doc), -1)
	if len(blocks) < min {
		t.Fatalf("%s has %d sh blocks, want at least %d", path, len(blocks), min)
	}
	var script strings.Builder
	script.WriteString("set -eu\n") // as a user would run them: no pipefail
	for _, b := range blocks {
		script.WriteString(b[1])
	}
	th := newTestHTTP(t, true, HTTPConfig{})
	addr := strings.TrimPrefix(th.srv.URL, "http://")
	cmd := exec.Command(bash, "-c", strings.ReplaceAll(script.String(), "127.0.0.1:8080", addr))
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the examples of %s failed: %v\n%s", path, err, out)
	}
	return string(out)
}
