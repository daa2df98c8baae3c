package tokenizer

import (
	"unicode/utf8"
)

// Decoder turns a stream of token ids into text, emitting only complete UTF-8
// sequences: a character split across tokens (common for emoji and CJK in
// byte-level vocabularies) is held back until its last byte arrives. Bytes
// that can never form a valid sequence are emitted as U+FFFD, so everything a
// Decoder returns is valid UTF-8. For valid output the concatenation of
// everything returned equals Decode of the same ids, except that Decode also
// applies llama.cpp's clean_spaces where the pre-tokenizer asks for it.
//
// A Decoder is not safe for concurrent use.
type Decoder struct {
	t       *Tokenizer
	pending []byte
	started bool
}

// NewDecoder returns a streaming decoder. Like Decode, it drops the leading
// space of the first token when the vocabulary adds a space prefix.
func (t *Tokenizer) NewDecoder() *Decoder { return &Decoder{t: t} }

// Add appends token id to the stream and returns the text that became
// complete ("" while a character is still partial).
func (d *Decoder) Add(id int32) string {
	p := d.t.piece(id)
	if !d.started {
		d.started = true
		if d.t.addSpace && len(p) > 0 && p[0] == ' ' {
			p = p[1:]
		}
	}
	d.pending = append(d.pending, p...)
	return d.drain(false)
}

// Flush returns whatever is still held back, with incomplete sequences
// replaced by U+FFFD, and resets the decoder for a new stream.
func (d *Decoder) Flush() string {
	s := d.drain(true)
	d.pending = d.pending[:0]
	d.started = false
	return s
}

// drain emits the longest prefix of pending that is valid UTF-8 or can no
// longer become valid; with final, everything.
func (d *Decoder) drain(final bool) string {
	b := d.pending
	var out []byte
	i := 0
	for i < len(b) {
		c := b[i]
		if c < utf8.RuneSelf {
			out = append(out, c)
			i++
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		if r != utf8.RuneError || n > 1 {
			out = append(out, b[i:i+n]...)
			i += n
			continue
		}
		// Invalid here: either an incomplete sequence at the end (wait for
		// more) or a byte that cannot start or continue one.
		if !final && validPrefix(b[i:]) {
			break
		}
		out = utf8.AppendRune(out, utf8.RuneError)
		i++
	}
	d.pending = append(d.pending[:0], b[i:]...)
	return string(out)
}

// validPrefix reports whether b is the beginning of some valid UTF-8
// sequence.
func validPrefix(b []byte) bool {
	n := utf8Len(b[0])
	if n < 2 || b[0] > 0xF4 || b[0] == 0xC0 || b[0] == 0xC1 || len(b) >= n {
		return false
	}
	for k := 1; k < len(b); k++ {
		lo, hi := byte(0x80), byte(0xBF)
		if k == 1 {
			switch b[0] {
			case 0xE0:
				lo = 0xA0
			case 0xED:
				hi = 0x9F
			case 0xF0:
				lo = 0x90
			case 0xF4:
				hi = 0x8F
			}
		}
		if b[k] < lo || b[k] > hi {
			return false
		}
	}
	return true
}
