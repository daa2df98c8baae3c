package blend

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/blendrag/blendrag/model"
)

// Generate decodes from a prefilled Result with the model's decode loop
// semantics (model.Model.Generate: sampler, stop strings, end tokens,
// MaxTokens, context length, streaming of final text through emit). r.KV
// grows by the generated rows. With APE's grouping (r.Groups not nil) every
// generated row joins the plain key group, so later rows attend to the
// chunks with APE's temperature and scale and to P, Q and earlier generated
// rows plainly; r.Groups grows with r.KV. Decoding runs on r.Backend (the
// CPU when nil; without groups on the CPU it is m.Generate itself).
func Generate(ctx context.Context, m *model.Model, r *Result, opt model.GenerateOptions, emit func(string) error) (model.Generation, error) {
	if r == nil || r.KV == nil {
		return model.Generation{}, fmt.Errorf("blend: Generate from an empty result")
	}
	if r.Groups == nil && onCPU(r.Backend) {
		return m.Generate(ctx, r.KV, r.Logits, opt, emit)
	}
	b, err := backendFor(m, r.Backend)
	if err != nil {
		return model.Generation{}, err
	}
	return generateOn(ctx, b, r, opt, emit)
}

// generateOn is the decode loop of m.Generate on backend b, for a context
// with key groups (or on a device).
func generateOn(ctx context.Context, b model.Backend, r *Result, opt model.GenerateOptions, emit func(string) error) (g model.Generation, err error) {
	m := b.Model()
	if opt.MaxTokens <= 0 {
		return g, fmt.Errorf("blend: max tokens %d must be > 0", opt.MaxTokens)
	}
	if err := opt.Sampler.Validate(); err != nil {
		return g, fmt.Errorf("blend: %w", err)
	}
	if len(r.Logits) != m.Config.Vocab {
		return g, fmt.Errorf("blend: Generate needs %d logits, got %d", m.Config.Vocab, len(r.Logits))
	}
	if r.Groups != nil {
		if err := r.Groups.Validate(r.KV.Len()); err != nil {
			return g, fmt.Errorf("blend: %w", err)
		}
	}
	start := time.Now()
	defer func() { g.Decode = time.Since(start) }()
	s := model.NewSampler(opt.Sampler)
	out := textOut{stops: opt.Stop, emit: emit}
	logits := r.Logits
	for {
		if err := ctx.Err(); err != nil {
			g.Text = out.text.String()
			return g, err
		}
		tok := s.Sample(logits)
		g.Tokens = append(g.Tokens, tok)
		if m.Tok.IsEOG(tok) && !opt.IgnoreEOS {
			g.Reason = model.StopEOS
			break
		}
		if out.add(m.Tok.Piece(tok)) {
			g.Reason = model.StopString
			break
		}
		if err := out.flush(false); err != nil {
			g.Text = out.text.String()
			return g, err
		}
		if len(g.Tokens) >= opt.MaxTokens {
			g.Reason = model.StopMaxTokens
			break
		}
		if int(model.NextPos(r.KV)) >= m.Config.Context {
			g.Reason = model.StopContext
			break
		}
		if logits, err = extend(b, r.KV, r.Groups, []int32{tok}, false); err != nil {
			g.Text = out.text.String()
			return g, err
		}
	}
	err = out.flush(true)
	g.Text = out.text.String()
	return g, err
}

// textOut turns token pieces into emitted text: only whole UTF-8 sequences
// are emitted, text that could begin a stop string is held back, and a stop
// string ends the text (it is not emitted).
type textOut struct {
	stops   []string
	emit    func(string) error
	pending []byte
	text    strings.Builder
}

// add appends a piece and reports whether a stop string now appears (the
// pending text is cut before it).
func (o *textOut) add(piece []byte) bool {
	o.pending = append(o.pending, piece...)
	cut := -1
	for _, s := range o.stops {
		if i := strings.Index(string(o.pending), s); s != "" && i >= 0 && (cut < 0 || i < cut) {
			cut = i
		}
	}
	if cut >= 0 {
		o.pending = o.pending[:cut]
	}
	return cut >= 0
}

// flush emits the pending text that is final (all of it when final is true).
func (o *textOut) flush(final bool) error {
	n := len(o.pending)
	if !final {
		// Hold back a rune whose bytes have not all arrived.
		for i := n - 1; i >= 0 && i >= n-utf8.UTFMax; i-- {
			if utf8.RuneStart(o.pending[i]) {
				if !utf8.FullRune(o.pending[i:n]) {
					n = i
				}
				break
			}
		}
		n -= o.heldBack(o.pending[:n])
	}
	if n <= 0 {
		return nil
	}
	s := string(o.pending[:n])
	o.pending = append(o.pending[:0], o.pending[n:]...)
	o.text.WriteString(s)
	if o.emit != nil {
		return o.emit(s)
	}
	return nil
}

// heldBack is the length of the longest suffix of b that is a proper prefix
// of a stop string.
func (o *textOut) heldBack(b []byte) int {
	hold := 0
	for _, s := range o.stops {
		for k := min(len(s)-1, len(b)); k > hold; k-- {
			if strings.HasSuffix(string(b), s[:k]) {
				hold = k
				break
			}
		}
	}
	return hold
}
