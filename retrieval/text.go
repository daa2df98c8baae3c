package retrieval

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/gabriel-vasile/mimetype"
	"golang.org/x/net/html/charset"
	"golang.org/x/text/encoding/charmap"
	xunicode "golang.org/x/text/encoding/unicode"
)

// maxBadFraction is the share of invalid bytes a UTF-8 text may hold
// (replaced by U+FFFD) before it is read as Windows-1252, and the share of
// control characters any text may hold before it is rejected as binary.
const maxBadFraction = 0.01

// decodeText turns the bytes of a text file into UTF-8: UTF-8 (with or
// without a byte-order mark; a few invalid bytes among valid multi-byte
// sequences become U+FFFD), UTF-16 with a byte-order mark, and otherwise
// Latin-1 / Windows-1252. Binary content fails
// with ErrUnsupported, an undecodable UTF-16 body with ErrMalformed.
func decodeText(data []byte) (string, error) {
	var s string
	switch {
	case bytes.HasPrefix(data, []byte{0xEF, 0xBB, 0xBF}):
		s = strings.ToValidUTF8(string(data[3:]), "\uFFFD")
	case bytes.HasPrefix(data, []byte{0xFF, 0xFE}), bytes.HasPrefix(data, []byte{0xFE, 0xFF}):
		if len(data)%2 != 0 {
			return "", fmt.Errorf("UTF-16 text of odd length: %w", ErrMalformed)
		}
		dec := xunicode.UTF16(xunicode.BigEndian, xunicode.ExpectBOM).NewDecoder()
		b, err := dec.Bytes(data)
		if err != nil {
			return "", fmt.Errorf("decoding UTF-16: %v: %w", err, ErrMalformed)
		}
		s = string(b)
	default:
		if mt := mimetype.Detect(data); !textual(mt) {
			return "", fmt.Errorf("content is %s: %w", mt.String(), ErrUnsupported)
		}
		if bytes.IndexByte(data, 0) >= 0 {
			return "", fmt.Errorf("content holds NUL bytes: %w", ErrUnsupported)
		}
		s = string(data)
		if !utf8.ValidString(s) {
			// Damaged UTF-8 still has valid multi-byte sequences; Latin-1
			// text (even with one accent in a page) has none.
			if invalid, multi := utf8Stats(data); multi > 0 && invalid <= int(maxBadFraction*float64(len(data))) {
				s = strings.ToValidUTF8(s, "\uFFFD")
			} else {
				b, err := charmap.Windows1252.NewDecoder().Bytes(data)
				if err != nil {
					return "", fmt.Errorf("decoding Windows-1252: %v: %w", err, ErrMalformed)
				}
				s = string(b)
			}
		}
	}
	if n := controlRunes(s); n > 0 && float64(n) > maxBadFraction*float64(utf8.RuneCountInString(s)) {
		return "", fmt.Errorf("%d control characters: binary content: %w", n, ErrUnsupported)
	}
	return s, nil
}

// decodeDeclaredHTML decodes an HTML file that is not UTF-8 by the
// charset its <meta> declares (golang.org/x/net/html/charset, WHATWG
// prescan), e.g. windows-1251 or Shift_JIS. It reports false, leaving the
// file to decodeText, for UTF-8 or BOM-marked files, non-HTML, and HTML
// that declares no other charset.
func decodeDeclaredHTML(name string, data []byte) (string, bool) {
	if utf8.Valid(data) || bytes.HasPrefix(data, []byte{0xFF, 0xFE}) || bytes.HasPrefix(data, []byte{0xFE, 0xFF}) {
		return "", false
	}
	switch strings.ToLower(filepath.Ext(name)) {
	case ".html", ".htm", ".xhtml":
	default:
		if !mimetype.Detect(data).Is("text/html") {
			return "", false
		}
	}
	enc, cs, _ := charset.DetermineEncoding(data, "text/html")
	if cs == "utf-8" || cs == "windows-1252" { // none declared, or UTF-8 after all
		return "", false
	}
	b, err := enc.NewDecoder().Bytes(data)
	if err != nil || bytes.IndexByte(b, 0) >= 0 {
		return "", false
	}
	return string(b), true
}

// textual reports whether mimetype's detection is plain text or something
// it cannot name (which decodeText then inspects itself).
func textual(mt *mimetype.MIME) bool {
	for m := mt; m != nil; m = m.Parent() {
		if m.Is("text/plain") || m.Is("application/octet-stream") {
			return true
		}
	}
	return false
}

// utf8Stats counts the bytes of b that are not UTF-8 and its valid
// multi-byte sequences.
func utf8Stats(b []byte) (invalid, multi int) {
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		switch {
		case r == utf8.RuneError && size == 1:
			invalid++
		case size > 1:
			multi++
		}
		b = b[size:]
	}
	return invalid, multi
}

// controlRunes counts control characters other than white space and ESC.
func controlRunes(s string) int {
	n := 0
	for _, r := range s {
		if unicode.IsControl(r) && !unicode.IsSpace(r) && r != 0x1B {
			n++
		}
	}
	return n
}

// normalizeText canonicalises white space: line endings become "\n", runs
// of other white space become one space, control characters and byte-order
// marks are dropped, lines are trimmed, one or more blank lines become a
// paragraph break "\n\n", and the result is trimmed.
func normalizeText(s string) string {
	s = crlf.Replace(s)
	var b strings.Builder
	b.Grow(len(s))
	// pending is the break owed before the next visible rune: 0 none,
	// 1 space, 2 line, 3 paragraph.
	pending, lineBreaks := 0, 0
	for _, r := range s {
		switch {
		case r == '\n' || r == '\u2028':
			lineBreaks++
			pending = max(pending, min(lineBreaks+1, 3))
		case r == '\u2029':
			pending, lineBreaks = 3, 2
		case unicode.IsSpace(r):
			pending = max(pending, 1)
		case unicode.IsControl(r) || r == '\uFEFF':
			// dropped
		default:
			if b.Len() > 0 {
				b.WriteString(breaks[pending])
			}
			pending, lineBreaks = 0, 0
			b.WriteRune(r)
		}
	}
	return b.String()
}

// crlf turns old Mac and Windows line endings into "\n".
var crlf = strings.NewReplacer("\r\n", "\n", "\r", "\n")

// breaks is what normalizeText writes for each pending break.
var breaks = [4]string{"", " ", "\n", "\n\n"}
