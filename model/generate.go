package model

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// GenerateOptions control the decode loop.
type GenerateOptions struct {
	MaxTokens int           // stop after this many tokens (required, > 0)
	Sampler   SamplerConfig // how each token is drawn
	Stop      []string      // stop when the text contains one of these; it is not emitted
	IgnoreEOS bool          // keep going past end-of-generation tokens (benchmarks)
}

// StopReason says why generation ended.
type StopReason string

// The reasons Generate stops.
const (
	StopEOS       StopReason = "eos"        // the model produced an end-of-generation token
	StopString    StopReason = "stop"       // a stop string appeared
	StopMaxTokens StopReason = "max_tokens" // MaxTokens reached
	StopContext   StopReason = "context"    // the model's context length is full
)

// Generation is the outcome of a decode loop.
type Generation struct {
	Tokens []int32    // the generated tokens (an end token or stop string's tokens included)
	Text   string     // the emitted text (stop string excluded)
	Reason StopReason // why it stopped
	Decode time.Duration
}

// Step appends token at the position after kv's last row, runs it through
// the model and returns the next-token logits. It is the decode loop's unit
// of work; speculative decoders call Forward directly for several tokens.
func (m *Model) Step(kv *KV, token int32) ([]float32, error) {
	return m.Forward(kv, []int32{token}, []int32{NextPos(kv)}, false)
}

// NextPos is the position that follows the cache's last row (0 when empty).
func NextPos(kv *KV) int32 {
	if kv.Len() == 0 {
		return 0
	}
	return kv.Pos[kv.Len()-1] + 1
}

// Generate runs the decode loop after a prompt: logits are the next-token
// logits of kv's last row. Each new token is appended to kv. emit, when not
// nil, receives the text as it becomes final — only whole UTF-8 sequences,
// and held back while it could still be the start of a stop string. It stops
// on end-of-generation, a stop string, MaxTokens, the context length, ctx's
// cancellation (returning ctx.Err() with what was generated so far), or an
// error from emit.
func (m *Model) Generate(ctx context.Context, kv *KV, logits []float32, opt GenerateOptions, emit func(string) error) (g Generation, err error) {
	if opt.MaxTokens <= 0 {
		return g, fmt.Errorf("model: max tokens %d must be > 0", opt.MaxTokens)
	}
	if err := opt.Sampler.Validate(); err != nil {
		return g, err
	}
	if len(logits) != m.Config.Vocab {
		return g, fmt.Errorf("model: Generate needs %d logits, got %d", m.Config.Vocab, len(logits))
	}
	start := time.Now()
	defer func() { g.Decode = time.Since(start) }()
	s := NewSampler(opt.Sampler)
	var pending []byte // bytes decoded but not yet emitted
	var text strings.Builder
	flush := func(final bool) error {
		n := len(pending)
		if !final {
			n = completeUTF8(pending)
			// Hold back a suffix that could begin a stop string.
			n -= stopPrefixLen(pending[:n], opt.Stop)
		}
		if n == 0 {
			return nil
		}
		out := string(pending[:n])
		pending = append(pending[:0], pending[n:]...)
		text.WriteString(out)
		if emit != nil {
			return emit(out)
		}
		return nil
	}
	for {
		if err := ctx.Err(); err != nil {
			g.Text = text.String()
			return g, err
		}
		tok := s.Sample(logits)
		g.Tokens = append(g.Tokens, tok)
		if m.Tok.IsEOG(tok) && !opt.IgnoreEOS {
			g.Reason = StopEOS
			break
		}
		pending = append(pending, m.Tok.Piece(tok)...)
		if i, ok := findStop(pending, opt.Stop); ok {
			pending = pending[:i]
			g.Reason = StopString
			break
		}
		if err := flush(false); err != nil {
			g.Text = text.String()
			return g, err
		}
		if len(g.Tokens) >= opt.MaxTokens {
			g.Reason = StopMaxTokens
			break
		}
		if int(NextPos(kv)) >= m.Config.Context {
			g.Reason = StopContext
			break
		}
		if logits, err = m.Step(kv, tok); err != nil {
			g.Text = text.String()
			return g, err
		}
	}
	err = flush(true)
	g.Text = text.String()
	return g, err
}

// completeUTF8 returns the length of the longest prefix of b that does not
// end inside a UTF-8 sequence (invalid bytes count as complete).
func completeUTF8(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return i
			}
			return len(b)
		}
	}
	return len(b)
}

// findStop reports where in pending the first stop string begins. Text that
// could start a stop string is never emitted (see stopPrefixLen), so a stop
// string always lies wholly inside pending.
func findStop(pending []byte, stops []string) (int, bool) {
	best, found := len(pending), false
	for _, s := range stops {
		if i := strings.Index(string(pending), s); s != "" && i >= 0 && i < best {
			best, found = i, true
		}
	}
	return best, found
}

// stopPrefixLen is the length of the longest suffix of pending that is a
// proper prefix of some stop string — text that must wait for more tokens.
func stopPrefixLen(pending []byte, stops []string) int {
	hold := 0
	for _, s := range stops {
		for k := min(len(s)-1, len(pending)); k > hold; k-- {
			if strings.HasPrefix(s, string(pending[len(pending)-k:])) {
				hold = k
				break
			}
		}
	}
	return hold
}
