package model

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/blendrag/blendrag/kernels"
)

// Backend runs a Model's forward pass on one compute device. Forward and
// Recompute have the contracts of Model.Forward and Model.Recompute: the KV
// cache stays in host memory and is the source of truth (a device backend
// copies each layer's keys and values in and writes the fresh rows back).
// A Backend is not safe for concurrent use.
type Backend interface {
	// Device names the device, e.g. "cpu" or "cuda:0".
	Device() string
	// Model is the model whose forward pass the backend runs.
	Model() *Model
	Forward(kv *KV, tokens, pos []int32, all bool) ([]float32, error)
	Recompute(kv *KV, rows []int, all bool) ([]float32, error)
	// NewPass starts a step-wise forward pass over cache rows rows
	// (ascending), as Model.NewPass does. A device backend has one live
	// pass at a time: a new pass supersedes the previous one.
	NewPass(kv *KV, rows []int) (LayerPass, error)
	// Close releases the device's copy of the weights. The Model stays
	// usable.
	Close() error
}

// ChunkTier is implemented by backends that keep chunks' KV in device
// memory across calls (the CUDA backend), so that a fused context's chunk
// rows are copied within the device instead of from host memory.
type ChunkTier interface {
	// PlaceChunk says that rows [row, row+n) of layer l of kv hold chunk
	// id's keys and values at layer l: k and v, n rows each as cached, the
	// keys rotated by delta positions (KV.Shift's rotation). The caller
	// writes the same rows of kv itself, as the host cache stays the
	// source of truth; the backend fills its device copy of those rows
	// from its tier (hit) or from k and v, which it then keeps while its
	// budget allows. id must name the same k and v whenever it is used
	// with this backend's model.
	PlaceChunk(kv *KV, l, row int, id string, k, v []float32, delta int) (hit bool, err error)
	// SetChunkBudget sets the device memory the tier may hold, in bytes;
	// ≤ 0 turns it off and frees what it held.
	SetChunkBudget(bytes int64) error
	// ChunkTierStats reports the tier's use since the backend opened.
	ChunkTierStats() ChunkTierStats
}

// ChunkTierStats is a ChunkTier's use: PlaceChunk calls served from the
// tier (Hits) and from host memory (Misses), and what it holds now.
type ChunkTierStats struct {
	Hits    int64 `json:"hits"`
	Misses  int64 `json:"misses"`
	Entries int   `json:"entries"` // (chunk, layer) pairs held
	Bytes   int64 `json:"bytes"`   // device bytes held
	Budget  int64 `json:"budget"`  // and allowed
}

// Profiler is implemented by device backends that can time their device
// work per operation (the CUDA backend), for benchmarks: profiling adds a
// little host time to every operation.
type Profiler interface {
	// StartProfile starts timing the device's operations.
	StartProfile() error
	// StopProfile waits for the device and returns the times since
	// StartProfile.
	StopProfile() (DeviceProfile, error)
}

// DeviceProfile is a device's work over a profiled interval: the host's
// time for the interval (WallMS), the device's time running operations
// (BusyMS; WallMS − BusyMS is time it waited for the host), and each kind
// of operation — a kernel by name, "cublas_sgemm", or a copy ("upload",
// "upload_async", "upload_queued", "download", "download_queued", "copy";
// see cuda.OpTime) — longest first.
type DeviceProfile struct {
	WallMS float64    `json:"wall_ms"`
	BusyMS float64    `json:"busy_ms"`
	Ops    []DeviceOp `json:"ops"`
}

// DeviceOp is one kind of operation in a DeviceProfile.
type DeviceOp struct {
	Name  string  `json:"name"`
	Calls int     `json:"calls"`
	MS    float64 `json:"ms"`              // device time, all calls
	Bytes int64   `json:"bytes,omitempty"` // moved, for copies
}

// DefaultChunkTierBytes is the device memory a CUDA backend's chunk tier
// may hold until SetChunkBudget says otherwise: about 22,000 rows of
// SmolLM2-135M's K and V over its 30 layers (e.g. 43 chunks of 512 tokens).
const DefaultChunkTierBytes = 1 << 30

// ErrNoCUDA is returned by OpenBackend for a CUDA device in a binary built
// without CUDA support (the default; build with -tags cuda and cgo).
var ErrNoCUDA = errors.New("model: this binary was built without CUDA support (rebuild with -tags cuda, CGO_ENABLED=1)")

// OpenBackend returns the backend for device (see ParseDevice): "cpu" (the
// Model's own kernels and forward pass, bit for bit; Close does nothing) or
// "cuda" / "cuda:N" (GPU N, default 0; the weights are uploaded once here),
// optionally with "+blas" (cuda only: see DeviceSpec.BLAS). A CUDA device
// needs a binary built with the cuda tag (otherwise the error wraps
// ErrNoCUDA) and a working GPU.
func (m *Model) OpenBackend(device string) (Backend, error) {
	spec, err := ParseDevice(device)
	if err != nil {
		return nil, err
	}
	if spec.Kind == "cpu" {
		return cpuBackend{m}, nil
	}
	b, err := openCUDA(m, spec)
	if err != nil {
		return nil, fmt.Errorf("model: device %s: %w", device, err)
	}
	return b, nil
}

// LayerPass is Pass's step-wise forward pass on any backend, with errors
// instead of panics: QKV → WriteKV → (Keep) → AttendMLP per layer (or Layer),
// then Logits. Steps of one layer must follow each other (a device backend
// holds one layer of the cache at a time, copied in by QKV).
type LayerPass interface {
	// N is the number of rows under computation.
	N() int
	// Rows holds the cache row of each row under computation, ascending.
	// The slice belongs to the pass and changes with Keep.
	Rows() []int
	// SetGroups sets the key groups attention uses (APE); nil: none. They
	// must cover every cache row when AttendMLP runs.
	SetGroups(g *kernels.KeyGroups)
	// QKV computes the fresh queries, keys and values of layer l.
	QKV(l int) error
	// FreshK and FreshV are the fresh keys and values after QKV,
	// [N() × KVDim], read-only.
	FreshK() []float32
	FreshV() []float32
	// WriteKV stores the fresh keys and values of rows sel (indices into
	// Rows; nil: every row) into layer l of the cache.
	WriteKV(l int, sel []int) error
	// Keep narrows the pass to rows keep (ascending indices into Rows).
	Keep(keep []int) error
	// AttendMLP finishes layer l for every row.
	AttendMLP(l int) error
	// Layer runs layer l completely: QKV, WriteKV of every row, AttendMLP.
	Layer(l int) error
	// Logits writes the logits of rows sel (indices into Rows) into dst,
	// [len(sel) × Vocab], after the final norm.
	Logits(dst []float32, sel []int) error
}

// cpuPass adapts Pass to LayerPass.
type cpuPass struct{ p *Pass }

func (c cpuPass) N() int                         { return c.p.N() }
func (c cpuPass) Rows() []int                    { return c.p.Rows }
func (c cpuPass) SetGroups(g *kernels.KeyGroups) { c.p.Groups = g }
func (c cpuPass) FreshK() []float32              { return c.p.K[:c.p.N()*c.p.kv.KVDim] }
func (c cpuPass) FreshV() []float32              { return c.p.V[:c.p.N()*c.p.kv.KVDim] }

// layer checks a layer index.
func (c cpuPass) layer(l int) error {
	if l < 0 || l >= len(c.p.m.Layers) {
		return fmt.Errorf("model: layer %d of %d", l, len(c.p.m.Layers))
	}
	return nil
}

func (c cpuPass) QKV(l int) error {
	if err := c.layer(l); err != nil {
		return err
	}
	c.p.QKV(l)
	return nil
}

func (c cpuPass) AttendMLP(l int) error {
	if err := c.layer(l); err != nil {
		return err
	}
	return c.p.AttendMLP(l)
}

func (c cpuPass) Layer(l int) error {
	if err := c.layer(l); err != nil {
		return err
	}
	return c.p.Layer(l)
}

func (c cpuPass) WriteKV(l int, sel []int) error {
	if err := c.layer(l); err != nil {
		return err
	}
	for _, i := range sel {
		if i < 0 || i >= c.p.N() {
			return fmt.Errorf("model: WriteKV row index %d outside the pass's %d rows", i, c.p.N())
		}
	}
	c.p.WriteKV(l, sel)
	return nil
}

func (c cpuPass) Keep(keep []int) error {
	if err := checkKeep(keep, c.p.N()); err != nil {
		return err
	}
	c.p.Keep(keep)
	return nil
}

func (c cpuPass) Logits(dst []float32, sel []int) error {
	if len(dst) != len(sel)*c.p.m.Config.Vocab {
		return fmt.Errorf("model: Logits of %d rows into %d floats, want %d", len(sel), len(dst), len(sel)*c.p.m.Config.Vocab)
	}
	for _, i := range sel {
		if i < 0 || i >= c.p.N() {
			return fmt.Errorf("model: Logits row index %d outside the pass's %d rows", i, c.p.N())
		}
	}
	c.p.Logits(dst, sel)
	return nil
}

// checkKeep reports whether keep holds ascending indices below n.
func checkKeep(keep []int, n int) error {
	for j, i := range keep {
		if i < 0 || i >= n || (j > 0 && i <= keep[j-1]) {
			return fmt.Errorf("model: Keep indices must be ascending and < %d (index %d is %d)", n, j, i)
		}
	}
	return nil
}

// checkPassRows reports whether rows can start a pass over kv: ascending
// cache rows whose tokens and positions fit the model.
func checkPassRows(c Config, kv *KV, rows []int) error {
	if kv.KVDim != c.KVDim() || kv.Layers() != c.Layers {
		return fmt.Errorf("model: KV of %d layers × %d does not fit model (%d × %d)", kv.Layers(), kv.KVDim, c.Layers, c.KVDim())
	}
	if len(rows) == 0 {
		return fmt.Errorf("model: a pass needs at least one row")
	}
	for i, r := range rows {
		if r < 0 || r >= kv.Len() || (i > 0 && r <= rows[i-1]) {
			return fmt.Errorf("model: pass rows must be ascending cache rows < %d (row %d is %d)", kv.Len(), i, r)
		}
		if t := kv.Tokens[r]; t < 0 || int(t) >= c.Vocab {
			return fmt.Errorf("model: token %d out of vocabulary (%d)", t, c.Vocab)
		}
		if p := kv.Pos[r]; p < 0 || int(p) >= c.Context {
			return fmt.Errorf("model: position %d outside the model's context length %d", p, c.Context)
		}
	}
	return nil
}

// recomputeWith runs every layer of p and returns the logits of its last
// row, or of every row when all is true (Model.Recompute over a LayerPass).
func recomputeWith(m *Model, p LayerPass, all bool) ([]float32, error) {
	for l := range m.Layers {
		if err := p.Layer(l); err != nil {
			return nil, err
		}
	}
	sel := []int{p.N() - 1}
	if all {
		sel = make([]int, p.N())
		for i := range sel {
			sel[i] = i
		}
	}
	logits := make([]float32, len(sel)*m.Config.Vocab)
	if err := p.Logits(logits, sel); err != nil {
		return nil, err
	}
	return logits, nil
}

// DeviceSpec is a parsed device name.
type DeviceSpec struct {
	Kind    string // "cpu" or "cuda"
	Ordinal int    // the GPU's ordinal (cuda)
	// BLAS ("+blas", cuda only) runs the matrix products of batches of at
	// least BLASMinRows rows (prefill) through cuBLAS SGEMM on float32
	// copies of the weights, dequantised at start-up: faster than the
	// exact kernels but not bitwise the CPU's (cuBLAS picks its own
	// summation order, and the activations are not quantised to 8 bits as
	// the CPU's quantised products do), and it keeps a float32 copy of
	// every weight matrix on the GPU (about 4× a Q8_0 model's size).
	BLAS bool
}

// BLASMinRows is the batch size from which a "+blas" CUDA backend runs a
// matrix product through cuBLAS; smaller batches (decode) keep the exact
// quantised kernels, which read 4–8× fewer weight bytes.
const BLASMinRows = 32

// ParseDevice parses a device name: "cpu", "cuda" (ordinal 0) or "cuda:N",
// and for cuda optionally the suffix "+blas" (e.g. "cuda:1+blas").
func ParseDevice(device string) (DeviceSpec, error) {
	name, blas := strings.CutSuffix(device, "+blas")
	switch {
	case name == "cpu" && !blas:
		return DeviceSpec{Kind: "cpu"}, nil
	case name == "cuda":
		return DeviceSpec{Kind: "cuda", BLAS: blas}, nil
	case strings.HasPrefix(name, "cuda:"):
		n, err := strconv.Atoi(name[len("cuda:"):])
		if err != nil || n < 0 {
			return DeviceSpec{}, fmt.Errorf("model: device %q: want cuda:N with N ≥ 0", device)
		}
		return DeviceSpec{Kind: "cuda", Ordinal: n, BLAS: blas}, nil
	}
	return DeviceSpec{}, fmt.Errorf("model: unknown device %q (want cpu, cuda or cuda:N, the last two optionally with +blas)", device)
}

// cpuBackend is the Model's own forward pass.
type cpuBackend struct{ m *Model }

func (b cpuBackend) Device() string { return "cpu" }

func (b cpuBackend) Model() *Model { return b.m }

// Forward is Model.Forward (the append loop every backend shares), called
// directly so that the CPU backend stays Model.Forward whatever it becomes.
func (b cpuBackend) Forward(kv *KV, tokens, pos []int32, all bool) ([]float32, error) {
	return b.m.Forward(kv, tokens, pos, all)
}

// Recompute is Model.Recompute (the layer loop every backend shares).
func (b cpuBackend) Recompute(kv *KV, rows []int, all bool) ([]float32, error) {
	return b.m.Recompute(kv, rows, all)
}

// NewPass is Model.NewPass behind the LayerPass interface.
func (b cpuBackend) NewPass(kv *KV, rows []int) (LayerPass, error) {
	p, err := b.m.NewPass(kv, rows)
	if err != nil {
		return nil, err
	}
	return cpuPass{p}, nil
}

func (b cpuBackend) Close() error { return nil }

// appendRows is Model.Forward over any Recompute: it appends tokens at
// positions pos to kv and recomputes the new rows — in batches of
// prefillBatch when the positions ascend (each batch sees the ones before
// it), otherwise all together — returning the last row's logits or, when
// all is true, every new row's. On error kv is left as it was.
//
// It is Model.Forward's loop with the recomputation as a parameter, so that
// every backend appends rows the same way.
func (m *Model) appendRows(kv *KV, tokens, pos []int32, all bool, recompute func(kv *KV, rows []int, all bool) ([]float32, error)) ([]float32, error) {
	if len(tokens) == 0 || len(tokens) != len(pos) {
		return nil, fmt.Errorf("model: Forward needs as many positions as tokens (got %d and %d)", len(tokens), len(pos))
	}
	ascending := true
	for i, p := range pos {
		if p < 0 || int(p) >= m.Config.Context {
			return nil, fmt.Errorf("model: position %d exceeds the model's context length %d", p, m.Config.Context)
		}
		if i > 0 && p <= pos[i-1] {
			ascending = false
		}
	}
	batch := len(tokens)
	if ascending {
		batch = prefillBatch
	}
	start := kv.Len()
	var out []float32
	for lo := 0; lo < len(tokens); lo += batch {
		hi := min(lo+batch, len(tokens))
		first := kv.Grow(tokens[lo:hi], pos[lo:hi])
		rows := make([]int, hi-lo)
		for i := range rows {
			rows[i] = first + i
		}
		logits, err := recompute(kv, rows, all)
		if err != nil {
			kv.Truncate(start)
			return nil, err
		}
		if all {
			out = append(out, logits...)
		} else {
			out = logits
		}
	}
	return out, nil
}
