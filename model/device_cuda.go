//go:build (cuda || cudaemu) && cgo

package model

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/blendrag/blendrag/kernels"
	"github.com/blendrag/blendrag/kernels/cuda"
)

// cudaBuilt reports whether this build includes the CUDA backend.
const cudaBuilt = true

// cudaLayer is one layer's weights on the GPU.
type cudaLayer struct {
	attnNorm, ffnNorm          *cuda.Buffer
	q, k, v, o, gate, up, down cudaWeight
}

// cudaWeight is a weight matrix on the GPU as stored in the model (exact)
// and, for a "+blas" backend, as float32 for cuBLAS (f; nil otherwise, and
// exact itself for float32 weights).
type cudaWeight struct {
	exact, f *cuda.Matrix
}

// cudaBackend runs the forward pass of a Model on a GPU with the kernels of
// package kernels/cuda. The weights are uploaded once (OpenBackend). The KV
// cache's source of truth stays on the host, and the backend keeps a copy
// of the last cache it ran on in device memory (every layer): a call
// uploads only the rows that copy lacks or that changed since (KV's mirror
// record: appended rows, and rows lowered by Truncate, Shift or Changed),
// and the fresh rows a pass computes are scattered into the device copy and
// written back to the host cache. Decoding one token over a long context
// therefore moves one row per layer, not the whole cache. Matrix products
// and RMSNorm are bitwise the CPU's; attention and SwiGLU round
// differently, so logits agree with the CPU within a tolerance, not bit
// for bit.
type cudaBackend struct {
	m       *Model
	d       *cuda.Device
	name    string
	blas    bool // batches of ≥ BLASMinRows rows go through cuBLAS
	rope    *cuda.RoPE
	layers  []cudaLayer
	outNorm *cuda.Buffer
	output  cudaWeight

	// Work buffers, grown on demand: rowCap computed rows, keyCap cache
	// rows, logitCap logit rows. The live pass (generation gen) owns them.
	rowCap, keyCap, logitCap     int
	h, x, q, k, v, att, gate, up *cuda.Buffer
	rowPos, selK, selV           *cuda.Buffer
	targets                      cuda.RowIndex // the cache rows WriteKV writes, uploaded when they change
	keyPos, logitBuf             *cuda.Buffer
	groups                       *cuda.KeyGroups
	gen                          uint64
	pass                         *cudaPass // the live pass (generation gen)

	// Every layer's fresh keys and values of the live pass, [layer][row],
	// kept on the device until the pass writes them to the host cache at
	// its end (flush); freshCap is their capacity in float32s.
	freshK, freshV *cuda.Buffer
	freshCap       int

	// Device copies of the host caches used last (devCache), and the
	// count of bindings, which orders them by use.
	caches []*devCache
	binds  uint64
	// uploadedRows counts the cache rows copied to the device (per layer),
	// for tests and benchmarks.
	uploadedRows int64

	tier chunkTier // chunks' KV kept on the device (ChunkTier)
}

// openCUDA opens the GPU of spec and uploads m's weights (and, for
// spec.BLAS, their float32 copies).
func openCUDA(m *Model, spec DeviceSpec) (Backend, error) {
	c := m.Config
	for i, ly := range m.Layers {
		if ly.QBias != nil || ly.KBias != nil || ly.VBias != nil {
			return nil, fmt.Errorf("layer %d has Q/K/V biases, which the CUDA backend does not implement: %w", i, kernels.ErrUnsupported)
		}
	}
	d, err := cuda.Open(spec.Ordinal)
	if err != nil {
		return nil, err
	}
	b := &cudaBackend{m: m, d: d, blas: spec.BLAS, tier: newChunkTier(DefaultChunkTierBytes), name: fmt.Sprintf("cuda:%d (%s)", spec.Ordinal, d.Name())}
	if spec.BLAS {
		b.name = fmt.Sprintf("cuda:%d+blas (%s)", spec.Ordinal, d.Name())
	}
	up := uploader{d: d, f32: spec.BLAS}
	b.layers = make([]cudaLayer, len(m.Layers))
	for i := range m.Layers {
		ly, g := &m.Layers[i], &b.layers[i]
		g.attnNorm, g.ffnNorm = up.vec(ly.AttnNorm), up.vec(ly.FFNNorm)
		g.q, g.k, g.v, g.o = up.mat(ly.Q), up.mat(ly.K), up.mat(ly.V), up.mat(ly.O)
		g.gate, g.up, g.down = up.mat(ly.Gate), up.mat(ly.Up), up.mat(ly.Down)
	}
	b.outNorm, b.output = up.vec(m.OutNorm), up.mat(m.Output)
	if up.err == nil {
		b.rope, up.err = d.NewRoPE(m.rope)
	}
	if up.err != nil {
		return nil, errors.Join(fmt.Errorf("uploading the %s weights: %w", c.Name, up.err), b.Close())
	}
	return b, nil
}

// uploader copies weights to the device, keeping the first error; with
// f32 it also uploads a float32 copy of every quantised matrix.
type uploader struct {
	d   *cuda.Device
	f32 bool
	err error
}

func (u *uploader) mat(m kernels.Matrix) cudaWeight {
	var w cudaWeight
	if u.err != nil {
		return w
	}
	if w.exact, u.err = u.d.UploadMatrix(m); u.err != nil || !u.f32 {
		return w
	}
	if m.Type == kernels.F32 {
		w.f = w.exact
		return w
	}
	f, err := dequantizeMatrix(m)
	if err != nil {
		u.err = err
		return w
	}
	w.f, u.err = u.d.UploadMatrix(f)
	return w
}

// matmul is dst = x·Wᵀ for n rows: through cuBLAS on w's float32 copy for
// a "+blas" backend and n ≥ BLASMinRows, else with the exact kernel.
func (b *cudaBackend) matmul(dst *cuda.Buffer, w cudaWeight, x *cuda.Buffer, n int) error {
	if b.blas && n >= BLASMinRows && w.f != nil {
		return b.d.MatMulBLAS(dst, w.f, x, n)
	}
	return b.d.MatMul(dst, w.exact, x, n)
}

// matmuls computes dsts[i] = ws[i]·x for weights that share their input:
// through cuBLAS as matmul would, else with the exact kernels, the
// activations quantised once for all of them.
func (b *cudaBackend) matmuls(dsts []*cuda.Buffer, ws []cudaWeight, x *cuda.Buffer, n int) error {
	if b.blas && n >= BLASMinRows {
		for i, w := range ws {
			if err := b.matmul(dsts[i], w, x, n); err != nil {
				return err
			}
		}
		return nil
	}
	ms := make([]*cuda.Matrix, len(ws))
	for i, w := range ws {
		ms[i] = w.exact
	}
	return b.d.MatMulMulti(dsts, ms, x, n)
}

// free frees w's matrices.
func (w cudaWeight) free(d *cuda.Device) error {
	err := d.FreeMatrix(w.exact)
	if w.f != w.exact {
		err = errors.Join(err, d.FreeMatrix(w.f))
	}
	return err
}

func (u *uploader) vec(v []float32) *cuda.Buffer {
	if u.err != nil {
		return nil
	}
	var b *cuda.Buffer
	b, u.err = u.d.NewF32(v)
	return b
}

// Device names the GPU.
func (b *cudaBackend) Device() string { return b.name }

func (b *cudaBackend) Model() *Model { return b.m }

// StartProfile starts timing the backend's device operations (Profiler).
func (b *cudaBackend) StartProfile() error { return b.d.StartProfile() }

// StopProfile returns the device operations' times since StartProfile.
func (b *cudaBackend) StopProfile() (DeviceProfile, error) {
	p, err := b.d.StopProfile()
	if err != nil {
		return DeviceProfile{}, err
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	out := DeviceProfile{WallMS: ms(p.Wall), BusyMS: ms(p.Busy), Ops: make([]DeviceOp, len(p.Ops))}
	for i, op := range p.Ops {
		out.Ops[i] = DeviceOp{Name: op.Name, Calls: op.Calls, MS: ms(op.Device), Bytes: op.Bytes}
	}
	return out, nil
}

// CacheUploads reports how many cache rows the backend has copied from
// the host cache to its device copy since it opened, summed over layers.
// Rows a pass computes itself are written on the device, not uploaded.
func (b *cudaBackend) CacheUploads() int64 { return b.uploadedRows }

// Close frees the device's weights and buffers and closes the device.
func (b *cudaBackend) Close() error {
	if b.d == nil {
		return nil
	}
	var errs []error
	for _, g := range b.layers {
		for _, w := range []cudaWeight{g.q, g.k, g.v, g.o, g.gate, g.up, g.down} {
			errs = append(errs, w.free(b.d))
		}
		errs = append(errs, b.d.Free(g.attnNorm), b.d.Free(g.ffnNorm))
	}
	errs = append(errs, b.output.free(b.d), b.d.Free(b.outNorm), b.d.FreeRoPE(b.rope))
	errs = append(errs, b.freeWork(&b.h, &b.x, &b.q, &b.k, &b.v, &b.att, &b.gate, &b.up, &b.rowPos, &b.selK, &b.selV, &b.keyPos, &b.logitBuf, &b.freshK, &b.freshV))
	for _, dc := range b.caches {
		errs = append(errs, dc.free(b.d))
	}
	b.caches = nil
	errs = append(errs, b.tier.drop(b.d))
	errs = append(errs, b.d.FreeKeyGroups(b.groups), b.d.FreeRowIndex(&b.targets))
	errs = append(errs, b.d.Close())
	b.d = nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("model: closing %s: %w", b.name, err)
	}
	return nil
}

func (b *cudaBackend) freeWork(bufs ...**cuda.Buffer) error {
	var errs []error
	for _, p := range bufs {
		errs = append(errs, b.d.Free(*p))
		*p = nil
	}
	return errors.Join(errs...)
}

// alloc replaces the buffers with new ones of floats float32 values each.
func (b *cudaBackend) alloc(floats []int, bufs ...**cuda.Buffer) error {
	if err := b.freeWork(bufs...); err != nil {
		return err
	}
	for i, p := range bufs {
		var err error
		if *p, err = b.d.Alloc(int64(floats[i]) * 4); err != nil {
			return err
		}
	}
	return nil
}

// reserve makes the work buffers hold n computed rows, keys cache rows and
// nLogits rows of logits (0: leave as they are).
func (b *cudaBackend) reserve(n, keys, nLogits int) error {
	c := b.m.Config
	if fresh := c.Layers * n * c.KVDim(); fresh > b.freshCap {
		b.freshCap = 0
		if err := b.alloc([]int{fresh, fresh}, &b.freshK, &b.freshV); err != nil {
			return err
		}
		b.freshCap = fresh
	}
	if n > b.rowCap {
		b.rowCap = 0
		err := b.alloc([]int{n * c.Dim, n * c.Dim, n * c.QDim(), n * c.KVDim(), n * c.KVDim(), n * c.QDim(), n * c.FFN, n * c.FFN, n, n * c.KVDim(), n * c.KVDim()},
			&b.h, &b.x, &b.q, &b.k, &b.v, &b.att, &b.gate, &b.up, &b.rowPos, &b.selK, &b.selV)
		if err != nil {
			return err
		}
		b.rowCap = n
	}
	if keys > b.keyCap {
		b.keyCap = 0
		if err := b.alloc([]int{keys}, &b.keyPos); err != nil {
			return err
		}
		b.keyCap = keys
	}
	if nLogits > b.logitCap {
		b.logitCap = 0
		if err := b.alloc([]int{nLogits * c.Vocab}, &b.logitBuf); err != nil {
			return err
		}
		b.logitCap = nLogits
	}
	return nil
}

// Forward is Model.Forward on the GPU: tokens at positions pos are appended
// to kv and computed; on error kv is left as it was.
func (b *cudaBackend) Forward(kv *KV, tokens, pos []int32, all bool) ([]float32, error) {
	return b.m.appendRows(kv, tokens, pos, all, b.Recompute)
}

// Recompute is Model.Recompute on the GPU: cache rows rows (ascending) are
// recomputed through every layer, their keys and values overwritten in kv,
// and the logits of the last row (or of every row when all) returned.
func (b *cudaBackend) Recompute(kv *KV, rows []int, all bool) ([]float32, error) {
	p, err := b.NewPass(kv, rows)
	if err != nil {
		return nil, err
	}
	return recomputeWith(b.m, p, all)
}

// NewPass starts a step-wise forward pass over cache rows rows on the GPU,
// uploading their embeddings and positions. It supersedes the backend's
// previous pass, whose methods then fail.
func (b *cudaBackend) NewPass(kv *KV, rows []int) (LayerPass, error) {
	c := b.m.Config
	if b.d == nil {
		return nil, fmt.Errorf("model: %s: %w", b.name, cuda.ErrClosed)
	}
	if err := checkPassRows(c, kv, rows); err != nil {
		return nil, err
	}
	if prev := b.pass; prev != nil && prev.gen == b.gen {
		// A pass that ended without Logits still owes the host its rows.
		if err := prev.flush(); err != nil {
			return nil, fmt.Errorf("model: %s: finishing the previous pass: %w", b.name, err)
		}
	}
	n, keys := len(rows), kv.Len()
	b.gen++
	var keep *devCache // the device copy this pass will use, if there is one
	for _, dc := range b.caches {
		if dc.kv == kv {
			keep = dc
		}
	}
	if err := b.withRoom(keep, func() error { return b.reserve(n, keys, 0) }); err != nil {
		return nil, fmt.Errorf("model: %s: work buffers for %d rows over %d keys: %w", b.name, n, keys, err)
	}
	p := &cudaPass{b: b, gen: b.gen, kv: kv, rows: append([]int(nil), rows...), layer: -1, fresh: -1, keptAt: -1, n0: n,
		hostRows: make([]int32, n), hostPos: make([]int32, n)}
	b.pass = p
	h := make([]float32, n*c.Dim)
	rowBytes, _ := b.m.TokenEmbd.Type.RowBytes(c.Dim)
	for i, r := range rows {
		t := int(kv.Tokens[r])
		if err := kernels.Dequantize(b.m.TokenEmbd.Type, b.m.TokenEmbd.Data[t*rowBytes:(t+1)*rowBytes], h[i*c.Dim:(i+1)*c.Dim]); err != nil {
			return nil, fmt.Errorf("model: embedding token %d: %w", t, err)
		}
		p.hostRows[i], p.hostPos[i] = int32(r), kv.Pos[r]
	}
	err := errors.Join(b.d.UploadF32Queued(b.h, h), b.d.UploadI32Queued(b.rowPos, p.hostPos), b.d.UploadI32Queued(b.keyPos, kv.Pos))
	if err != nil {
		return nil, fmt.Errorf("model: %s: uploading rows: %w", b.name, err)
	}
	return p, nil
}

// cudaPass is a LayerPass on the GPU. Hidden states, queries and the layer's
// cache copy live on the device; fresh keys and values are also copied to
// the host after QKV (CacheBlend reads them), and WriteKV updates both the
// host cache and its device copy.
type cudaPass struct {
	b      *cudaBackend
	gen    uint64
	kv     *KV
	rows   []int
	groups *kernels.KeyGroups
	layer  int       // layer QKV computed last, or -1
	cache  *devCache // the device copy of kv (bound by QKV)
	// resid: the hidden state h still lacks the last layer's MLP output
	// (in the backend's x), which the next layer's attention norm adds in
	// the same launch (or settle, for any other reader of h).
	resid bool

	hostRows, hostPos []int32

	// The fresh keys and values of layer l sit on the device at rows
	// [l·n0, l·n0 + N) of the backend's freshK/freshV (n0: the rows the
	// pass started with); they are downloaded into k and v only when
	// FreshK, FreshV or Keep needs them (fresh: the layer they hold, or
	// -1). The rows WriteKV wrote (pending) start for the host at once,
	// beside the device's later work, and are written into the host cache
	// when the pass ends, by Logits — one wait for the device per pass
	// instead of one per layer.
	n0      int
	fresh   int
	pending []pendingWrite
	err     error     // a failed download of FreshK/FreshV, reported by the next step
	keptAt  int       // the layer of the last Keep (whose device rows it did not compact), or -1
	k, v    []float32 // fresh keys and values, [N × KVDim], once loadFresh ran
}

func (p *cudaPass) N() int                         { return len(p.rows) }
func (p *cudaPass) Rows() []int                    { return p.rows }
func (p *cudaPass) SetGroups(g *kernels.KeyGroups) { p.groups = g }

// pendingWrite is a WriteKV whose host copy is pending: row src[j] of
// layer l's fresh keys and values goes to cache row dst[j].
type pendingWrite struct {
	l   int
	src []int
	dst []int32
	// queued: the layer's fresh rows were queued for the host by WriteKV
	// (k and v); otherwise flush downloads them.
	queued bool
	k, v   cuda.Download
}

// FreshK returns the fresh keys of the rows at the last QKV, downloading
// them; a failed download is reported by the pass's next step.
func (p *cudaPass) FreshK() []float32 {
	p.loadFresh()
	return p.k
}

// FreshV is FreshK for the values.
func (p *cudaPass) FreshV() []float32 {
	p.loadFresh()
	return p.v
}

// loadFresh downloads the current layer's fresh keys and values into k
// and v, once per layer.
func (p *cudaPass) loadFresh() {
	if p.fresh == p.layer || p.layer < 0 || p.err != nil {
		return
	}
	b, kd, n := p.b, p.kv.KVDim, p.N()
	if n == 0 {
		p.fresh = p.layer
		return
	}
	p.k = slices.Grow(p.k[:0], n*kd)[:n*kd]
	p.v = slices.Grow(p.v[:0], n*kd)[:n*kd]
	fk, fv, err := p.freshRows(p.layer)
	if err == nil {
		err = errors.Join(b.d.DownloadF32(p.k, fk), b.d.DownloadF32(p.v, fv))
	}
	if err != nil {
		p.err = fmt.Errorf("model: %s: downloading layer %d's fresh keys and values: %w", b.name, p.layer, err)
		return
	}
	p.fresh = p.layer
}

// freshRows returns the views of freshK and freshV that hold layer l's
// fresh keys and values of the pass's N rows.
func (p *cudaPass) freshRows(l int) (fk, fv *cuda.Buffer, err error) {
	kd := int64(p.kv.KVDim)
	off, bytes := int64(l*p.n0)*kd*4, int64(p.N())*kd*4
	if fk, err = p.b.freshK.View(off, bytes); err == nil {
		fv, err = p.b.freshV.View(off, bytes)
	}
	return fk, fv, err
}

// layerDownloadMin is the size of a layer's fresh keys (or values) from
// which WriteKV queues their download at once rather than at flush.
const layerDownloadMin = 256 << 10

// flush writes the pending rows' fresh keys and values into the host cache
// — a layer's queued by WriteKV, which ran beside the device's later
// work, the others downloaded now, all layers at once — skipping rows the
// host cache has lost or rewritten since WriteKV (its record no longer
// marks them current).
func (p *cudaPass) flush() error {
	if len(p.pending) == 0 {
		return nil
	}
	b := p.b
	err := p.writePending()
	p.pending = p.pending[:0]
	if err = errors.Join(err, b.d.ReleaseDownloads()); err != nil {
		return fmt.Errorf("model: %s: the pass's keys and values to the host: %w", b.name, err)
	}
	return nil
}

// writePending is flush's work, before the downloads' memory is released.
func (p *cudaPass) writePending() error {
	b, kd := p.b, p.kv.KVDim
	top := 0 // layers [0, top) hold the rows not queued yet
	for _, w := range p.pending {
		if !w.queued {
			top = max(top, w.l+1)
		}
	}
	var allK, allV []float32
	if top > 0 {
		floats := top * p.n0 * kd
		fk, err := b.freshK.View(0, int64(floats)*4)
		if err != nil {
			return err
		}
		fv, err := b.freshV.View(0, int64(floats)*4)
		if err != nil {
			return err
		}
		dk, err := b.d.DownloadF32Queued(fk, floats)
		if err != nil {
			return err
		}
		dv, err := b.d.DownloadF32Queued(fv, floats)
		if err != nil {
			return err
		}
		if allK, err = b.d.WaitDownload(dk); err != nil {
			return err
		}
		if allV, err = b.d.WaitDownload(dv); err != nil {
			return err
		}
	}
	mirror := &p.kv.mirror
	for _, w := range p.pending {
		var sk, sv []float32
		if w.queued {
			var err error
			if sk, err = b.d.WaitDownload(w.k); err != nil {
				return err
			}
			if sv, err = b.d.WaitDownload(w.v); err != nil {
				return err
			}
		} else {
			at := w.l * p.n0 * kd
			sk, sv = allK[at:at+p.n0*kd], allV[at:at+p.n0*kd]
		}
		// Rows in parallel on the model's (idle) worker pool: at a long
		// prefill this is hundreds of megabytes.
		b.m.Pool().Run(len(w.src), func(lo, hi int) {
			for j := lo; j < hi; j++ {
				r, i := int(w.dst[j]), w.src[j]
				if mirror.owner != p.cache || !mirror.current(w.l, r) {
					continue // truncated or rewritten since: the host's row is newer
				}
				copy(p.kv.K[w.l][r*kd:(r+1)*kd], sk[i*kd:(i+1)*kd])
				copy(p.kv.V[w.l][r*kd:(r+1)*kd], sv[i*kd:(i+1)*kd])
			}
		})
	}
	return nil
}

// live checks that p is still the backend's pass and reports a failed
// download of FreshK or FreshV.
func (p *cudaPass) live() error {
	if p.b.d == nil {
		return fmt.Errorf("model: %s: %w", p.b.name, cuda.ErrClosed)
	}
	if p.gen != p.b.gen {
		return fmt.Errorf("model: %s: this pass was superseded by a newer one", p.b.name)
	}
	return p.err
}

// QKV computes the fresh queries, keys and values of layer l (RoPE at the
// rows' positions) and keeps a copy of the keys and values on the device
// for FreshK, FreshV and the host cache.
func (p *cudaPass) QKV(l int) error {
	if err := p.live(); err != nil {
		return err
	}
	b, c, d, g := p.b, p.b.m.Config, p.b.d, &p.b.layers[l]
	n, kd := p.N(), c.KVDim()
	// The device copy's stale rows are uploaded in AttendMLP, after
	// WriteKV: rows the pass computes are written there, not uploaded.
	var err error
	if p.cache, _, err = b.bindCache(p.kv); err != nil {
		p.layer = -1
		return fmt.Errorf("model: %s: layer %d: %w", b.name, l, err)
	}
	s := steps{}
	s.run("attention norm", func() error {
		if p.resid { // the previous layer's residual addition, in the same launch
			p.resid = false
			return d.AddRMSNorm(b.x, b.h, b.x, g.attnNorm, n, c.Dim, c.NormEps)
		}
		return d.RMSNorm(b.x, b.h, g.attnNorm, n, c.Dim, c.NormEps)
	})
	s.run("q, k, v", func() error {
		return b.matmuls([]*cuda.Buffer{b.q, b.k, b.v}, []cudaWeight{g.q, g.k, g.v}, b.x, n)
	})
	s.run("rope q, k", func() error { return d.RoPEPair(b.q, b.k, b.rope, b.rowPos, n, c.Heads, c.KVHeads) })
	s.run("keep k, v", func() error {
		for _, w := range p.pending {
			if w.l == l { // QKV(l) again: its first rows must reach the host first
				if err := p.flush(); err != nil {
					return err
				}
				break
			}
		}
		fk, fv, err := p.freshRows(l)
		if err != nil {
			return err
		}
		bytes := int64(n*kd) * 4
		return errors.Join(d.Copy(fk, b.k, bytes), d.Copy(fv, b.v, bytes))
	})
	if s.err != nil {
		p.layer = -1
		return fmt.Errorf("model: %s: layer %d: %w", b.name, l, s.err)
	}
	p.layer, p.fresh = l, -1
	return nil
}

// WriteKV stores the fresh keys and values of rows sel (indices into Rows;
// nil: every row) into layer l of the cache, on the host and on the device.
func (p *cudaPass) WriteKV(l int, sel []int) error {
	if err := p.live(); err != nil {
		return err
	}
	if l != p.layer {
		return fmt.Errorf("model: WriteKV(%d) after QKV(%d)", l, p.layer)
	}
	b, kd, n := p.b, p.kv.KVDim, p.N()
	if sel == nil {
		sel = make([]int, n)
		for i := range sel {
			sel[i] = i
		}
	}
	if len(sel) == 0 {
		return nil
	}
	targets := make([]int32, len(sel))
	identity := len(sel) == n && p.keptAt != l
	for j, i := range sel {
		if i < 0 || i >= n {
			return fmt.Errorf("model: WriteKV row index %d outside the pass's %d rows", i, n)
		}
		targets[j] = int32(p.rows[i])
		identity = identity && i == j
	}
	keys := p.kv.Len()
	s := steps{}
	if identity {
		// Every row, in order: scatter straight from the fresh rows; the
		// host cache gets them when the pass ends.
		s.run("targets", func() error { return b.d.SetRowIndex(&b.targets, targets, keys) })
		s.run("scatter k, v", func() error { return b.d.ScatterRowsKV(p.cache.k[l], p.cache.v[l], keys, b.k, b.v, &b.targets, kd) })
		// A layer of many rows starts on its way to the host now, beside
		// the device's later work; a few rows (decoding) wait for the end
		// of the pass and go with the other layers' in one download.
		w := pendingWrite{l: l, src: slices.Clone(sel), dst: targets, queued: n*kd*4 >= layerDownloadMin}
		if w.queued {
			s.run("keys and values to the host", func() error {
				fk, fv, err := p.freshRows(l)
				if err != nil {
					return err
				}
				if w.k, err = b.d.DownloadF32Queued(fk, n*kd); err != nil {
					return err
				}
				w.v, err = b.d.DownloadF32Queued(fv, n*kd)
				return err
			})
		}
		if s.err == nil {
			p.pending = append(p.pending, w)
		}
	} else {
		// A subset (CacheBlend's question rows and selection): gathered
		// on the host, which holds the layer's fresh rows for the
		// selection anyway.
		p.loadFresh()
		if p.err != nil {
			return p.err
		}
		k, v := make([]float32, len(sel)*kd), make([]float32, len(sel)*kd)
		for j, i := range sel {
			r := p.rows[i]
			copy(p.kv.K[l][r*kd:(r+1)*kd], p.k[i*kd:(i+1)*kd])
			copy(p.kv.V[l][r*kd:(r+1)*kd], p.v[i*kd:(i+1)*kd])
			copy(k[j*kd:(j+1)*kd], p.k[i*kd:(i+1)*kd])
			copy(v[j*kd:(j+1)*kd], p.v[i*kd:(i+1)*kd])
		}
		s.run("upload", func() error { return errors.Join(b.d.UploadF32Queued(b.selK, k), b.d.UploadF32Queued(b.selV, v)) })
		s.run("targets", func() error { return b.d.SetRowIndex(&b.targets, targets, keys) })
		s.run("scatter k, v", func() error {
			return b.d.ScatterRowsKV(p.cache.k[l], p.cache.v[l], keys, b.selK, b.selV, &b.targets, kd)
		})
	}
	if s.err != nil {
		p.kv.ChangedLayer(l, int(slices.Min(targets)), keys) // the device copy may be partly written
		return fmt.Errorf("model: %s: WriteKV layer %d: %w", b.name, l, s.err)
	}
	mirror := p.kv.claimMirror(p.cache)
	for _, r := range targets {
		mirror.setCurrent(l, int(r), int(r)+1)
	}
	return nil
}

// Keep narrows the pass to rows keep (ascending indices into Rows).
func (p *cudaPass) Keep(keep []int) error {
	if err := p.live(); err != nil {
		return err
	}
	if err := checkKeep(keep, p.N()); err != nil {
		return err
	}
	p.loadFresh() // FreshK and FreshV stay the kept rows' for this layer
	if p.err != nil {
		return p.err
	}
	if err := p.settle(); err != nil { // h is compacted below
		return err
	}
	b, c := p.b, p.b.m.Config
	n, kd := p.N(), c.KVDim()
	h, q := make([]float32, n*c.Dim), make([]float32, n*c.QDim())
	if err := errors.Join(b.d.DownloadF32(h, b.h), b.d.DownloadF32(q, b.q)); err != nil {
		return fmt.Errorf("model: %s: Keep: %w", b.name, err)
	}
	for j, i := range keep {
		p.rows[j], p.hostRows[j], p.hostPos[j] = p.rows[i], p.hostRows[i], p.hostPos[i]
		copy(h[j*c.Dim:(j+1)*c.Dim], h[i*c.Dim:(i+1)*c.Dim])
		copy(q[j*c.QDim():(j+1)*c.QDim()], q[i*c.QDim():(i+1)*c.QDim()])
		copy(p.k[j*kd:(j+1)*kd], p.k[i*kd:(i+1)*kd])
		copy(p.v[j*kd:(j+1)*kd], p.v[i*kd:(i+1)*kd])
	}
	m := len(keep)
	p.keptAt = p.layer
	p.rows, p.hostRows, p.hostPos = p.rows[:m], p.hostRows[:m], p.hostPos[:m]
	p.k, p.v = p.k[:m*kd], p.v[:m*kd]
	if m == 0 {
		return nil
	}
	err := errors.Join(b.d.UploadF32Queued(b.h, h[:m*c.Dim]), b.d.UploadF32Queued(b.q, q[:m*c.QDim()]), b.d.UploadI32Queued(b.rowPos, p.hostPos))
	if err != nil {
		return fmt.Errorf("model: %s: Keep: %w", b.name, err)
	}
	return nil
}

// AttendMLP finishes layer l (after QKV(l)): attention over the cache's
// device copy, masked by position and grouped by the pass's key groups,
// the output projection, the MLP and both residual additions.
func (p *cudaPass) AttendMLP(l int) error {
	if err := p.live(); err != nil {
		return err
	}
	if l != p.layer {
		return fmt.Errorf("model: AttendMLP(%d) after QKV(%d)", l, p.layer)
	}
	b, c, d, g := p.b, p.b.m.Config, p.b.d, &p.b.layers[l]
	n, keys := p.N(), p.kv.Len()
	if n == 0 {
		return nil
	}
	var groups *cuda.KeyGroups
	if p.groups != nil {
		if err := p.groups.Validate(keys); err != nil {
			return err
		}
		if err := d.FreeKeyGroups(b.groups); err != nil {
			return err
		}
		var err error
		if b.groups, err = d.UploadKeyGroups(p.groups); err != nil {
			return fmt.Errorf("model: %s: %w", b.name, err)
		}
		groups = b.groups
	}
	if err := p.refresh(l); err != nil {
		return fmt.Errorf("model: %s: layer %d: uploading the cache: %w", b.name, l, err)
	}
	sh := kernels.AttnShape{Heads: c.Heads, KVHeads: c.KVHeads, HeadDim: c.HeadDim}
	s := steps{}
	s.run("attention", func() error {
		return b.withRoom(p.cache, func() error { // its scratch may need to grow
			return d.Attend(b.att, b.q, p.cache.k[l], p.cache.v[l], b.keyPos, b.rowPos, n, keys, sh, groups)
		})
	})
	s.run("output projection", func() error { return b.matmul(b.x, g.o, b.att, n) })
	s.run("residual, ffn norm", func() error { return d.AddRMSNorm(b.x, b.h, b.x, g.ffnNorm, n, c.Dim, c.NormEps) })
	s.run("gate, up", func() error {
		return b.matmuls([]*cuda.Buffer{b.gate, b.up}, []cudaWeight{g.gate, g.up}, b.x, n)
	})
	s.run("swiglu", func() error { return d.SwiGLU(b.gate, b.gate, b.up, n*c.FFN) })
	s.run("down", func() error { return b.matmul(b.x, g.down, b.gate, n) })
	if s.err == nil {
		p.resid = true // added by the next layer's attention norm, or settle
	}
	if s.err != nil {
		return fmt.Errorf("model: %s: layer %d: %w", b.name, l, s.err)
	}
	return nil
}

// refresh uploads the rows of layer l that the device copy lacks (rows
// WriteKV wrote are current), in runs of consecutive rows, and records the
// layer as current.
func (p *cudaPass) refresh(l int) error {
	b, keys := p.b, p.kv.Len()
	mirror := p.kv.claimMirror(p.cache)
	err := mirror.stale(l, keys, func(lo, hi int) error {
		if err := b.uploadRows(p.cache, l, lo, hi); err != nil {
			return err
		}
		mirror.setCurrent(l, lo, hi)
		return nil
	})
	return err
}

// settle adds a pending residual (resid) to the hidden state, for a step
// that reads h itself.
func (p *cudaPass) settle() error {
	if !p.resid {
		return nil
	}
	p.resid = false
	if err := p.b.d.Add(p.b.h, p.b.x, p.N()*p.b.m.Config.Dim); err != nil {
		return fmt.Errorf("model: %s: residual: %w", p.b.name, err)
	}
	return nil
}

// Layer runs layer l completely: QKV, WriteKV of every row, AttendMLP.
func (p *cudaPass) Layer(l int) error {
	if err := p.QKV(l); err != nil {
		return err
	}
	if err := p.WriteKV(l, nil); err != nil {
		return err
	}
	return p.AttendMLP(l)
}

// Logits writes the logits of rows sel (indices into Rows) into dst,
// [len(sel) × Vocab], after the final norm.
func (p *cudaPass) Logits(dst []float32, sel []int) error {
	if err := p.live(); err != nil {
		return err
	}
	b, c, d := p.b, p.b.m.Config, p.b.d
	if len(sel) == 0 || len(sel) > p.N() || len(dst) != len(sel)*c.Vocab {
		return fmt.Errorf("model: Logits of %d rows into %d floats, want %d", len(sel), len(dst), len(sel)*c.Vocab)
	}
	if err := b.withRoom(p.cache, func() error { return b.reserve(0, 0, len(sel)) }); err != nil {
		return fmt.Errorf("model: %s: logits buffer: %w", b.name, err)
	}
	if err := p.settle(); err != nil {
		return err
	}
	row := int64(c.Dim) * 4
	s := steps{}
	for j, i := range sel {
		if i < 0 || i >= p.N() {
			return fmt.Errorf("model: Logits row index %d outside the pass's %d rows", i, p.N())
		}
		s.run("output norm", func() error {
			h, err := b.h.View(int64(i)*row, row)
			if err != nil {
				return err
			}
			x, err := b.x.View(int64(j)*row, row)
			if err != nil {
				return err
			}
			return d.RMSNorm(x, h, b.outNorm, 1, c.Dim, c.NormEps)
		})
	}
	s.run("output", func() error { return b.matmul(b.logitBuf, b.output, b.x, len(sel)) })
	s.run("download", func() error { return d.DownloadF32(dst, b.logitBuf) })
	s.run("keys and values to the host", p.flush)
	if s.err != nil {
		return fmt.Errorf("model: %s: logits: %w", b.name, s.err)
	}
	return nil
}

// steps runs a sequence of device calls, stopping at the first error.
type steps struct{ err error }

func (s *steps) run(what string, f func() error) {
	if s.err != nil {
		return
	}
	if err := f(); err != nil {
		s.err = fmt.Errorf("%s: %w", what, err)
	}
}
