package tokenizer

import (
	"unicode"
	"unicode/utf8"
)

// cptClass is the Unicode general category of a code point as llama.cpp's
// unicode_cpt_flags sees it (unicode.cpp / unicode-data.cpp): exactly one of
// the category values, plus the separate whitespace flag.
type cptClass uint8

const (
	clsUndefined cptClass = iota // unassigned (Cn): llama.cpp's UNDEFINED flag
	clsNumber                    // \p{N}
	clsLetter                    // \p{L}
	clsSeparator                 // \p{Z}
	clsMark                      // \p{M}
	clsPunct                     // \p{P}
	clsSymbol                    // \p{S}
	clsControl                   // \p{C} other than Cn
)

// cptFlags is what the pre-tokenizers need to know about a code point.
type cptFlags struct {
	class cptClass
	space bool // llama.cpp's unicode_set_whitespace, equal to Go's unicode.IsSpace
}

func (f cptFlags) isLetter() bool { return f.class == clsLetter }
func (f cptFlags) isNumber() bool { return f.class == clsNumber }

// outOfRange is the flags value llama.cpp's scanners return for a position
// outside the current segment: no category and not whitespace (as_uint()==0).
var outOfRange = cptFlags{class: 0xFF}

// defined reports whether any llama.cpp flag bit is set (as_uint() != 0).
// Every real code point has one (unassigned ones carry UNDEFINED); only a
// position outside the segment has none.
func (f cptFlags) defined() bool { return f.class != 0xFF }

// asciiClass holds the class of every ASCII code point, so the common case
// avoids the unicode range tables.
var asciiClass = func() (t [128]cptFlags) {
	for c := 0; c < 128; c++ {
		t[c] = classifySlow(rune(c))
	}
	return t
}()

// classify returns llama.cpp's flags for r. Go's tables are Unicode 15.0 and
// llama.cpp's are 15.1; the code points 15.1 added (CJK Extension I and six
// ideographic description characters) are patched in so both agree on every
// code point.
func classify(r rune) cptFlags {
	if r < 128 && r >= 0 {
		return asciiClass[r]
	}
	return classifySlow(r)
}

func classifySlow(r rune) cptFlags {
	f := cptFlags{space: unicode.IsSpace(r)}
	switch {
	case unicode.IsLetter(r):
		f.class = clsLetter
	case unicode.IsNumber(r):
		f.class = clsNumber
	case unicode.IsMark(r):
		f.class = clsMark
	case unicode.IsPunct(r):
		f.class = clsPunct
	case unicode.IsSymbol(r):
		f.class = clsSymbol
	case unicode.In(r, unicode.Z):
		f.class = clsSeparator
	case unicode.In(r, unicode.Cc, unicode.Cf, unicode.Co, unicode.Cs):
		f.class = clsControl
	case r >= 0x2EBF0 && r <= 0x2EE5D: // CJK Unified Ideographs Extension I (Unicode 15.1)
		f.class = clsLetter
	case r >= 0x2FFC && r <= 0x2FFF, r == 0x31EF: // ideographic description characters (15.1)
		f.class = clsSymbol
	default:
		f.class = clsUndefined
	}
	return f
}

// decodeLikeLlama splits s into code points the way llama.cpp's
// unicode_cpts_from_utf8 does and returns them with the text re-encoded from
// them (llama.cpp's BPE path tokenizes that re-encoding). For valid UTF-8 the
// text is s itself. Otherwise llama.cpp's decoder is followed: a byte that
// cannot start a sequence, or a lead byte without enough continuation bytes,
// becomes one U+FFFD; overlong forms and surrogates are decoded without
// complaint (C0 80 is code point 0, ED A0 80 is U+D800) and re-encoded in
// their shortest form. Values past U+10FFFF (lead bytes F5..F7), on which
// llama.cpp aborts, become U+FFFD. cpts reuses buf.
func decodeLikeLlama(s string, buf []rune) (text string, cpts []rune) {
	cpts = buf[:0]
	if utf8.ValidString(s) {
		for i := 0; i < len(s); {
			if c := s[i]; c < utf8.RuneSelf {
				cpts = append(cpts, rune(c))
				i++
				continue
			}
			r, n := utf8.DecodeRuneInString(s[i:])
			cpts = append(cpts, r)
			i += n
		}
		return s, cpts
	}
	cont := func(i int) bool { return i < len(s) && s[i]&0xC0 == 0x80 }
	out := make([]byte, 0, len(s)+8)
	for i := 0; i < len(s); {
		c := s[i]
		r, n := utf8.RuneError, 1
		switch {
		case c < 0x80:
			r = rune(c)
		case c&0x40 == 0: // stray continuation byte
		case c&0x20 == 0:
			if cont(i + 1) {
				r, n = rune(c&0x1F)<<6|rune(s[i+1]&0x3F), 2
			}
		case c&0x10 == 0:
			if cont(i+1) && cont(i+2) {
				r, n = rune(c&0x0F)<<12|rune(s[i+1]&0x3F)<<6|rune(s[i+2]&0x3F), 3
			}
		case c&0x08 == 0:
			if cont(i+1) && cont(i+2) && cont(i+3) {
				r, n = rune(c&0x07)<<18|rune(s[i+1]&0x3F)<<12|rune(s[i+2]&0x3F)<<6|rune(s[i+3]&0x3F), 4
				if r > unicode.MaxRune {
					r = utf8.RuneError
				}
			}
		}
		cpts = append(cpts, r)
		out = appendCpt(out, r)
		i += n
	}
	return string(out), cpts
}

// cptLen is the length of llama.cpp's unicode_cpt_to_utf8(r), which encodes
// surrogates like any other code point.
func cptLen(r rune) int {
	switch {
	case r < 0x80:
		return 1
	case r < 0x800:
		return 2
	case r < 0x10000:
		return 3
	}
	return 4
}

// appendCpt is unicode_cpt_to_utf8.
func appendCpt(b []byte, r rune) []byte {
	switch cptLen(r) {
	case 1:
		return append(b, byte(r))
	case 2:
		return append(b, 0xC0|byte(r>>6), 0x80|byte(r)&0x3F)
	case 3:
		return append(b, 0xE0|byte(r>>12), 0x80|byte(r>>6)&0x3F, 0x80|byte(r)&0x3F)
	}
	return append(b, 0xF0|byte(r>>18), 0x80|byte(r>>12)&0x3F, 0x80|byte(r>>6)&0x3F, 0x80|byte(r)&0x3F)
}

// toLower stands in for llama.cpp's unicode_tolower for the code points the
// contraction rules compare against (s, t, m, d, r, e, v, l).
func toLower(r rune) rune { return unicode.ToLower(r) }
