package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/blendrag/blendrag/model/fetch"
	"github.com/blendrag/blendrag/server"
)

// TestBrowserUploadAskStreamsCitedAnswer drives the web UI in headless
// Chromium against the real HTTP API over a real Service with the default
// models: upload a file, wait for its ingest, ask, see the answer stream in
// with citations, open one, compare two modes, check a 360 px screen and
// delete the document. Screenshots go to $BLENDRAG_ARTIFACTS (else a temp
// dir); their paths are logged.
func TestBrowserUploadAskStreamsCitedAnswer(t *testing.T) {
	base := startUI(t, server.Config{Threads: 2}, server.HTTPConfig{})
	uiFlow(t, browser(t, 8*time.Minute), base)
}

// startUI serves the HTTP API and the web UI over a Service on a temp dir
// and returns its URL; everything closes when the test ends. It skips the
// test in -short mode, without chromium, or without the default models.
func startUI(t *testing.T, cfg server.Config, hcfg server.HTTPConfig) string {
	t.Helper()
	if testing.Short() {
		t.Skip("runs a browser over the real models")
	}
	chromium(t) // skips without chromium
	if _, err := os.Stat(fetch.GeneratorPath(fetch.Dir())); err != nil {
		t.Skip("default models not present: run `make models`")
	}
	cfg.DataDir = t.TempDir()
	svc, err := server.Open(cfg)
	if err != nil {
		t.Fatalf("open service: %v", err)
	}
	t.Cleanup(func() { svc.Close() })
	h, err := server.NewHTTP(svc, hcfg)
	if err != nil {
		t.Fatalf("NewHTTP: %v", err)
	}
	t.Cleanup(func() { h.Close() })
	ts := httptest.NewServer(h.Handler())
	t.Cleanup(ts.Close)
	return ts.URL
}

// TestBrowserShowsProblemsAndSendsAPIKey checks the page's error display
// and API key against the real HTTP API: without a key the document list
// shows the 401 problem; the key typed under Settings is kept in
// localStorage and sent as a bearer token; a question the server cannot
// answer (no generator loaded) shows the 400 problem's detail in its pane.
func TestBrowserShowsProblemsAndSendsAPIKey(t *testing.T) {
	const key = "ui-test-key"
	base := startUI(t, server.Config{Threads: 2, NoGenerator: true}, server.HTTPConfig{APIKeys: []string{key}})
	ctx := browser(t, 2*time.Minute)

	run(t, ctx, "open the page", chromedp.Navigate(base), chromedp.WaitVisible(chromedp.CSS("#docs-error")))
	if msg := eval[string](t, ctx, `document.querySelector('#docs-error').textContent`); !strings.Contains(msg, "401") || !strings.Contains(msg, "API key") {
		t.Errorf("without a key the page shows %q, want the 401 problem about the API key", msg)
	}

	run(t, ctx, "enter the API key",
		chromedp.Click(chromedp.CSS("details.settings summary")),
		chromedp.SendKeys(chromedp.CSS("#api-key"), key+kb.Tab))
	waitFor(t, ctx, "the list to load with the key",
		`document.querySelector('#docs-error').hidden && document.querySelector('#doc-list .empty') !== null`, 10*time.Second)
	if got := eval[string](t, ctx, `localStorage.getItem('blendrag.apiKey')`); got != key {
		t.Errorf("localStorage holds key %q, want %q", got, key)
	}

	run(t, ctx, "ask", chromedp.SendKeys(chromedp.CSS("#question"), "Is anyone there?"+kb.Enter))
	waitFor(t, ctx, "the answer to fail", `document.querySelector('#answers .pane')?.dataset.state === 'failed'`, 30*time.Second)
	if msg := eval[string](t, ctx, `document.querySelector('#answers .pane .error').textContent`); !strings.Contains(msg, "400") || !strings.Contains(msg, "generator") {
		t.Errorf("the failed answer shows %q, want the 400 problem's title and detail", msg)
	}

	// The upload (an XMLHttpRequest) and its job polling send the key too.
	file := filepath.Join(t.TempDir(), "note.txt")
	if err := os.WriteFile(file, []byte("A short note about keys and locks.\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, ctx, "upload with the key", chromedp.SetUploadFiles(chromedp.CSS("#file-input"), []string{file}))
	waitFor(t, ctx, "the upload to finish",
		`['done', 'failed'].includes(document.querySelector('#uploads .upload')?.dataset.state)`, time.Minute)
	if st := eval[string](t, ctx, `document.querySelector('#uploads .upload').dataset.state + ': ' + document.querySelector('#uploads .upload').textContent`); !strings.HasPrefix(st, "done") {
		t.Errorf("upload with the API key ended as %q", st)
	}

	// A reload keeps the key: the list loads without an error.
	run(t, ctx, "reload", chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("#doc-list .doc")))
	if got := eval[string](t, ctx, `document.querySelector('#api-key').value`); got != key {
		t.Errorf("after a reload the key field holds %q, want %q", got, key)
	}
	if !eval[bool](t, ctx, `document.querySelector('#docs-error').hidden`) {
		t.Error("after a reload with the stored key the list still shows an error")
	}
}

// chromium returns the Chromium binary, skipping the test when there is none.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "/usr/bin/chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("chromium is not installed (apt-get install chromium): the browser test needs it")
	return ""
}

// browser starts headless Chromium and returns a tab's context; the browser
// stops when the test ends, or after limit.
func browser(t *testing.T, limit time.Duration) context.Context {
	t.Helper()
	exe := chromium(t)
	parent, cancelTime := context.WithTimeout(context.Background(), limit)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.NoSandbox, // CI runs as root
		chromedp.WindowSize(1280, 900),
		chromedp.UserDataDir(t.TempDir()),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(parent, opts...)
	ctx, cancelTab := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancelTab(); cancelAlloc(); cancelTime() })
	// Any uncaught exception in the page fails the test.
	var mu sync.Mutex
	var exceptions []string
	if err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*runtime.EventExceptionThrown); ok {
			mu.Lock()
			exceptions = append(exceptions, (&chromedp.ExceptionError{ExceptionDetails: e.ExceptionDetails}).Error())
			mu.Unlock()
		}
	}); err != nil {
		t.Fatalf("start chromium %s: %v", exe, err)
	}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range exceptions {
			t.Errorf("uncaught exception in the page: %s", e)
		}
	})
	return ctx
}

// artifactDir is where screenshots go: $BLENDRAG_ARTIFACTS, else a temp dir.
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("BLENDRAG_ARTIFACTS")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("artifact dir: %v", err)
	}
	return dir
}

// screenshot saves the whole page as a PNG under dir and logs its path.
func screenshot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	t.Logf("screenshot: %s", path)
}

// run runs browser steps, failing the test with what was being done.
func run(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitFor polls a JavaScript predicate until it holds.
func waitFor(t *testing.T, ctx context.Context, what, predicate string, limit time.Duration) {
	t.Helper()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](predicate,
		chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(limit)))
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// paneState is what a test reads from an answer pane.
type paneState struct {
	Mode   string `json:"mode"`
	State  string `json:"state"`
	Status string `json:"status"`
	Text   string `json:"text"`
	Error  string `json:"error"`
	Chips  int    `json:"chips"`
	Bars   int    `json:"bars"`
	Totals string `json:"totals"`
}

const readPanes = `[...document.querySelectorAll('#answers .pane')].map(p => ({
	mode: p.querySelector('.pane-mode').textContent,
	state: p.dataset.state,
	status: p.querySelector('.pane-status').textContent,
	text: p.querySelector('.answer-text').textContent,
	error: p.querySelector('.error').hidden ? '' : p.querySelector('.error').textContent,
	chips: p.querySelectorAll('.chip').length,
	bars: p.querySelectorAll('.timing:not([hidden]) .seg').length,
	totals: p.querySelector('.totals').textContent,
}))`

// recordStreaming makes the page log the first pane's state and answer
// length on every DOM change, so the test can tell a streamed answer from
// one that appeared all at once.
const recordStreaming = `(() => {
	window.__seen = [];
	const box = document.querySelector('#answers');
	new MutationObserver(() => {
		const p = box.querySelector('.pane');
		if (p) window.__seen.push([p.dataset.state, p.querySelector('.answer-text').textContent.length]);
	}).observe(box, {subtree: true, childList: true, characterData: true, attributes: true});
})()`

// unlabelled lists the form controls and buttons that have neither a
// label, an aria-label nor text.
const unlabelled = `[...document.querySelectorAll('input, select, textarea, button')]
	.filter(e => !(e.labels?.length || e.getAttribute('aria-label') || e.textContent.trim()))
	.map(e => e.outerHTML)`

// overflowing lists the visible elements that reach past the viewport's
// right edge, and the page's horizontal overflow.
const overflowing = `(() => {
	const w = document.documentElement.clientWidth;
	const out = [];
	if (document.documentElement.scrollWidth > w) out.push('document scrollWidth ' + document.documentElement.scrollWidth + ' > ' + w);
	for (const e of document.querySelectorAll('body *')) {
		const r = e.getBoundingClientRect();
		if (r.width === 0 || r.height === 0 || getComputedStyle(e).visibility === 'hidden') continue;
		if (r.right > w + 0.5 || r.left < -0.5) out.push(e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className ? '.' + String(e.className).replace(/ /g, '.') : '') + ' spans ' + Math.round(r.left) + '..' + Math.round(r.right));
	}
	return out;
})()`

// uiFlow drives the page at base through a user's session: upload a file,
// wait for its ingest, ask a question and watch the answer stream in, open
// a citation, compare two modes, check a 360 px wide screen, delete the
// document.
func uiFlow(t *testing.T, ctx context.Context, base string) {
	arts := artifactDir(t)
	doc := "The lighthouse of Port Avel stands on a basalt cliff above the harbour. " +
		"It was lit for the first time in 1862 by the keeper Mara Quell, and its lamp burns whale oil no longer: " +
		"since 1931 it has used an electric lamp visible for twenty-two nautical miles. " +
		"The tower is painted in red and white bands, and it has one hundred and twelve steps.\n"
	harbour := "# The harbour\n\nThe harbour of Port Avel freezes every February, and the fishing boats wait " +
		"at the quay of Saint Lenn until the ice breaks.\n"
	file := filepath.Join(t.TempDir(), "lighthouse.txt")
	if err := os.WriteFile(file, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}

	run(t, ctx, "open the page", chromedp.Navigate(base), chromedp.WaitVisible(chromedp.CSS("#drop")))
	if got := eval[string](t, ctx, `document.title`); got != "blendrag" {
		t.Errorf("page title %q, want blendrag", got)
	}
	if unnamed := eval[[]string](t, ctx, unlabelled); len(unnamed) > 0 {
		t.Errorf("controls without a label or name:\n%s", strings.Join(unnamed, "\n"))
	}

	// Upload through the file input; the row shows the upload, then the job.
	run(t, ctx, "choose the file", chromedp.SetUploadFiles(chromedp.CSS("#file-input"), []string{file}))
	waitFor(t, ctx, "the ingest to finish",
		`['done', 'failed'].includes(document.querySelector('#uploads .upload')?.dataset.state)`, 3*time.Minute)
	if st := eval[[]string](t, ctx, `[...document.querySelector('#uploads .upload').children].map(e => e.textContent).concat(document.querySelector('#uploads .upload').dataset.state)`); st[len(st)-1] != "done" {
		t.Fatalf("upload row ended as %q", st)
	}
	waitFor(t, ctx, "the document in the list",
		`[...document.querySelectorAll('#doc-list .doc')].some(d => d.textContent.includes('lighthouse'))`, 10*time.Second)

	// Drop a second file on the drop zone: a drop event carrying a
	// DataTransfer with the file, as a drag from the desktop delivers.
	js, err := json.Marshal(harbour)
	if err != nil {
		t.Fatal(err)
	}
	eval[chromedp.Void](t, ctx, `(() => {
		const dt = new DataTransfer();
		dt.items.add(new File([`+string(js)+`], 'harbour.md', {type: 'text/markdown'}));
		document.querySelector('#drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
	})()`)
	waitFor(t, ctx, "an upload row for the dropped file", `document.querySelectorAll('#uploads .upload').length === 2`, 10*time.Second)
	waitFor(t, ctx, "the dropped file's ingest to finish",
		`(() => { const u = [...document.querySelectorAll('#uploads .upload')]; return u.length === 2 && u.every(e => ['done', 'failed'].includes(e.dataset.state)); })()`,
		3*time.Minute)
	if st := eval[[]string](t, ctx, `[...document.querySelectorAll('#uploads .upload')].map(e => e.dataset.state + ': ' + e.textContent)`); !strings.HasPrefix(st[0], "done") {
		t.Fatalf("the dropped file's upload row ended as %q", st[0])
	}
	waitFor(t, ctx, "both documents in the list", `document.querySelectorAll('#doc-list .doc').length === 2`, 10*time.Second)

	// Ask with Enter in the question box, answers kept short.
	run(t, ctx, "set max tokens",
		chromedp.Click(chromedp.CSS("details.advanced summary")),
		chromedp.SetValue(chromedp.CSS("#max-tokens"), "24"))
	eval[chromedp.Void](t, ctx, recordStreaming)
	run(t, ctx, "ask", chromedp.SendKeys(chromedp.CSS("#question"), "When was the lighthouse of Port Avel first lit?"+kb.Enter))
	waitFor(t, ctx, "the answer", `['done', 'failed'].includes(document.querySelector('#answers .pane')?.dataset.state)`, 3*time.Minute)
	panes := eval[[]paneState](t, ctx, readPanes)
	if len(panes) != 1 {
		t.Fatalf("%d answer panes after Ask, want 1: %+v", len(panes), panes)
	}
	p := panes[0]
	t.Logf("answer (%s, %s): %q", p.Mode, p.Status, p.Text)
	if p.State != "done" || p.Error != "" {
		t.Fatalf("answer pane ended %s: %s", p.State, p.Error)
	}
	if strings.TrimSpace(p.Text) == "" {
		t.Error("the answer is empty")
	}
	if p.Chips < 1 {
		t.Error("no citation chips")
	}
	if p.Bars < 1 {
		t.Error("no timing bar segments")
	}
	// Streamed: the text grew over several DOM updates while the pane was
	// still streaming.
	partial := eval[int](t, ctx, `new Set(window.__seen.filter(s => s[0] === 'streaming' && s[1] > 0).map(s => s[1])).size`)
	if partial < 2 {
		t.Errorf("the answer did not stream: %d distinct partial lengths while streaming, want at least 2", partial)
	}

	// A citation chip opens the passage: text from the uploaded file.
	run(t, ctx, "open a citation",
		chromedp.Click(chromedp.CSS("#answers .chip")),
		chromedp.WaitVisible(chromedp.CSS("#passage[open]")))
	passage := eval[string](t, ctx, `document.querySelector('#passage-text').textContent`)
	title := eval[string](t, ctx, `document.querySelector('#passage-title').textContent`)
	inFile := func(text string) bool {
		return strings.Contains(strings.Join(strings.Fields(text), " "), strings.Join(strings.Fields(passage), " "))
	}
	if passage == "" || !inFile(doc) && !inFile(harbour) {
		t.Errorf("the cited passage %q is text of neither uploaded file", passage)
	}
	t.Logf("citation %s: %q", title, passage)
	screenshot(t, ctx, arts, "ui-answer.png")
	run(t, ctx, "close the citation", chromedp.Click(chromedp.CSS("#passage-close")), chromedp.WaitNotVisible(chromedp.CSS("#passage")))

	// Compare: the same question in two modes, side by side, with RAPID.
	run(t, ctx, "compare", chromedp.SetValue(chromedp.CSS("#max-tokens"), "8"),
		chromedp.Click(chromedp.CSS("#rapid")), chromedp.Click(chromedp.CSS("#compare-btn")))
	waitFor(t, ctx, "both answers",
		`(() => { const s = [...document.querySelectorAll('#answers .pane')].map(p => p.dataset.state); return s.length === 2 && s.every(x => x === 'done' || x === 'failed'); })()`,
		3*time.Minute)
	panes = eval[[]paneState](t, ctx, readPanes)
	if len(panes) != 2 || panes[0].Mode == panes[1].Mode {
		t.Fatalf("compare made panes %+v, want two of different modes", panes)
	}
	for _, p := range panes {
		if p.State != "done" || strings.TrimSpace(p.Text) == "" || p.Chips < 1 {
			t.Errorf("compare pane %s: state %s, text %q, %d chips, error %q", p.Mode, p.State, p.Text, p.Chips, p.Error)
		}
		if !strings.Contains(p.Mode, "RAPID") || !strings.Contains(p.Totals, "RAPID") {
			t.Errorf("compare pane %q with RAPID on: totals %q say nothing of RAPID", p.Mode, p.Totals)
		}
		t.Logf("compare %s: %q; %s", p.Mode, p.Text, p.Totals)
	}
	// The question was asked before: its fusion found the chunks' KV in the
	// host RAM tier, and says so.
	if !slices.ContainsFunc(panes, func(p paneState) bool { return strings.Contains(p.Totals, "from host RAM") }) {
		t.Errorf("no compare pane says its chunks' KV came from host RAM: %+v", panes)
	}
	if left := eval[[]float64](t, ctx, `[...document.querySelectorAll('#answers .pane')].map(p => p.getBoundingClientRect().left)`); left[0] == left[1] {
		t.Errorf("compare panes are not side by side on a wide screen: left edges %v", left)
	}
	screenshot(t, ctx, arts, "ui-compare.png")

	// A 360 px wide screen: nothing reaches past the right edge.
	run(t, ctx, "narrow the viewport", chromedp.EmulateViewport(360, 800, chromedp.EmulateMobile))
	waitFor(t, ctx, "the narrow layout", `document.documentElement.clientWidth === 360`, 5*time.Second)
	if over := eval[[]string](t, ctx, overflowing); len(over) > 0 {
		t.Errorf("at 360 px, elements overflow horizontally:\n%s", strings.Join(over, "\n"))
	}
	run(t, ctx, "open a citation at 360 px",
		chromedp.Click(chromedp.CSS("#answers .chip")),
		chromedp.WaitVisible(chromedp.CSS("#passage[open]")))
	if over := eval[[]string](t, ctx, overflowing); len(over) > 0 {
		t.Errorf("at 360 px with the passage open, elements overflow horizontally:\n%s", strings.Join(over, "\n"))
	}
	screenshot(t, ctx, arts, "ui-narrow.png")
	run(t, ctx, "close the citation", chromedp.Click(chromedp.CSS("#passage-close")))

	// Delete both documents from the list, one after the other.
	for left := 1; left >= 0; left-- {
		run(t, ctx, "delete", chromedp.Click(chromedp.CSS("#doc-list .doc button")))
		waitFor(t, ctx, "the list to shrink", fmt.Sprintf(`document.querySelectorAll('#doc-list .doc').length === %d`, left), 30*time.Second)
	}
}
