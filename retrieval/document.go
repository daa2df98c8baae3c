package retrieval

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gabriel-vasile/mimetype"
)

// Kind is a document's detected format.
type Kind string

// The document formats Parse understands.
const (
	KindText     Kind = "text"
	KindMarkdown Kind = "markdown"
	KindHTML     Kind = "html"
	KindPDF      Kind = "pdf"
)

// Sentinel errors of Parse and ParseText. They are returned wrapped with the
// file name ("name: reason: sentinel"), so test them with errors.Is.
var (
	// ErrEmpty means the document has no visible text.
	ErrEmpty = errors.New("document has no text")
	// ErrUnsupported means the content is binary or a format Parse does not read.
	ErrUnsupported = errors.New("unsupported or binary content")
	// ErrTooLarge means the document exceeds a Limits bound.
	ErrTooLarge = errors.New("document too large")
	// ErrMalformed means the content claims a format but cannot be decoded as it.
	ErrMalformed = errors.New("malformed document")
)

// Document is a document's metadata.
type Document struct {
	// ID is the hex SHA-256 of the file's bytes (of the text for ParseText),
	// so re-ingesting the same file yields the same ID.
	ID string
	// Title is the HTML <title>, the Markdown first heading or the PDF Title
	// metadata, else the file name without its extension.
	Title    string
	FileName string
	Kind     Kind
	// Size is the input's length in bytes.
	Size int64
	// Pages is the PDF page count; 0 for unpaged kinds.
	Pages int
	// IngestedAt is zero from Parse; the service sets it.
	IngestedAt time.Time
}

// Page locates one PDF page in Parsed.Text: bytes [Start, End). Pages
// without text have Start == End.
type Page struct{ Number, Start, End int }

// Parsed is a document's visible text. Text is normalised: lines carry no
// leading, trailing or repeated blanks, paragraphs are separated by exactly
// "\n\n", and Text neither starts nor ends with white space.
type Parsed struct {
	Doc   Document
	Text  string
	Pages []Page // PDF only, in order, one per page
}

// Limits bounds parsing; zero fields take the defaults.
type Limits struct {
	MaxBytes     int64 // input size; default 64 MiB
	MaxPages     int   // PDF pages; default 2000
	MaxTextBytes int64 // extracted text; default 32 MiB
}

// Default limits.
const (
	DefaultMaxBytes     = 64 << 20
	DefaultMaxPages     = 2000
	DefaultMaxTextBytes = 32 << 20
)

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxPages <= 0 {
		l.MaxPages = DefaultMaxPages
	}
	if l.MaxTextBytes <= 0 {
		l.MaxTextBytes = DefaultMaxTextBytes
	}
	return l
}

// Parse detects the format of data (from its content; the extension of name
// only separates Markdown and HTML from plain text) and extracts its visible
// text. name is the file name: it is reported in errors and supplies the
// fallback title. Errors wrap ErrEmpty, ErrUnsupported, ErrTooLarge or
// ErrMalformed and name the file; Parse never panics on bad input.
func Parse(name string, data []byte, lim Limits) (*Parsed, error) {
	lim = lim.withDefaults()
	if int64(len(data)) > lim.MaxBytes {
		return nil, fmt.Errorf("%s: %d bytes exceed the limit of %d: %w", name, len(data), lim.MaxBytes, ErrTooLarge)
	}
	if len(data) == 0 {
		return nil, fmt.Errorf("%s: %w", name, ErrEmpty)
	}
	p := &Parsed{Doc: Document{
		ID:       hashHex(data),
		FileName: name,
		Size:     int64(len(data)),
	}}
	var (
		title string
		err   error
	)
	if isPDF(data) {
		p.Doc.Kind = KindPDF
		title, err = parsePDF(p, data, lim)
	} else {
		src, ok := decodeDeclaredHTML(name, data)
		if !ok {
			src, err = decodeText(data)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		p.Doc.Kind = textKind(name, data, src)
		switch p.Doc.Kind {
		case KindHTML:
			title, p.Text = extractHTML(src)
		case KindMarkdown:
			title, p.Text = extractMarkdown([]byte(src))
		default:
			p.Text = normalizeText(src)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if int64(len(p.Text)) > lim.MaxTextBytes {
		return nil, fmt.Errorf("%s: %d bytes of text exceed the limit of %d: %w", name, len(p.Text), lim.MaxTextBytes, ErrTooLarge)
	}
	if p.Text == "" {
		return nil, fmt.Errorf("%s: %w", name, ErrEmpty)
	}
	p.Doc.Title = oneLine(title)
	if p.Doc.Title == "" {
		base := filepath.Base(name)
		p.Doc.Title = strings.TrimSuffix(base, filepath.Ext(base))
	}
	return p, nil
}

// ParseText makes a plain-text document of text (a pasted note, a dataset
// passage). Its ID is the hex SHA-256 of text. An empty title becomes the
// first line of the text, shortened. Invalid UTF-8 is replaced by U+FFFD.
// It fails with ErrEmpty for blank text and ErrTooLarge above the default
// MaxTextBytes.
func ParseText(title, text string) (*Parsed, error) {
	name := title
	if name == "" {
		name = "text"
	}
	if len(text) > DefaultMaxTextBytes {
		return nil, fmt.Errorf("%s: %d bytes exceed the limit of %d: %w", name, len(text), DefaultMaxTextBytes, ErrTooLarge)
	}
	norm := normalizeText(strings.ToValidUTF8(text, "\uFFFD"))
	if norm == "" {
		return nil, fmt.Errorf("%s: %w", name, ErrEmpty)
	}
	title = oneLine(title)
	if title == "" {
		title, _, _ = strings.Cut(norm, "\n")
		title = shorten(title, 80)
	}
	return &Parsed{
		Doc: Document{
			ID:    hashHex([]byte(text)),
			Title: title,
			Kind:  KindText,
			Size:  int64(len(text)),
		},
		Text: norm,
	}, nil
}

func hashHex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// isPDF reports whether data is a PDF: it starts with "%PDF-", or (the PDF
// specification lets readers look for the header within the first 1024
// bytes) holds "%PDF-" there and ends with the "%%EOF" marker. The second
// condition keeps a text that merely mentions "%PDF-1.7" a text.
func isPDF(data []byte) bool {
	if bytes.HasPrefix(data, []byte("%PDF-")) {
		return true
	}
	head := data[:min(len(data), 1024)]
	tail := data[max(0, len(data)-1024):]
	return bytes.Contains(head, []byte("%PDF-")) && bytes.Contains(tail, []byte("%%EOF"))
}

// textKind picks the kind of a document already known to be text.
func textKind(name string, data []byte, src string) Kind {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".md", ".markdown", ".mdown", ".mkd", ".mkdn":
		return KindMarkdown
	case ".html", ".htm", ".xhtml":
		return KindHTML
	}
	if mimetype.Detect(data).Is("text/html") || looksLikeHTML(src) {
		return KindHTML
	}
	if strings.ToLower(filepath.Ext(name)) != ".txt" && looksLikeMarkdown(src) {
		return KindMarkdown
	}
	return KindText
}

// looksLikeHTML catches HTML (possibly after a UTF-16 decode, which
// mimetype does not see through) by its leading markup.
func looksLikeHTML(src string) bool {
	head := strings.ToLower(strings.TrimSpace(src[:min(len(src), 512)]))
	for _, p := range []string{"<!doctype html", "<html", "<head", "<body"} {
		if strings.HasPrefix(head, p) {
			return true
		}
	}
	return false
}

// looksLikeMarkdown reports whether at least two kinds of Markdown syntax
// (ATX headings, fences, list items, links, emphasis) show up at line starts
// or inline in the first 64 KiB.
func looksLikeMarkdown(src string) bool {
	src = src[:min(len(src), 64<<10)]
	var heading, fence, list, link bool
	for line := range strings.Lines(src) {
		t := strings.TrimRight(line, "\r\n")
		switch {
		case strings.HasPrefix(t, "```") || strings.HasPrefix(t, "~~~"):
			fence = true
		case strings.HasPrefix(strings.TrimLeft(t, "#"), " ") && strings.HasPrefix(t, "#") && len(t)-len(strings.TrimLeft(t, "#")) <= 6:
			heading = true
		case strings.HasPrefix(t, "- ") || strings.HasPrefix(t, "* ") || strings.HasPrefix(t, "+ "):
			list = true
		}
		if strings.Contains(t, "](") {
			link = true
		}
	}
	n := 0
	for _, b := range []bool{heading, fence, list, link} {
		if b {
			n++
		}
	}
	return n >= 2
}

// oneLine collapses all white space in s to single spaces.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// shorten cuts s to at most n runes, at a word boundary where one is near.
func shorten(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)[:n]
	cut := string(r)
	if i := strings.LastIndexByte(cut, ' '); i > len(cut)/2 {
		cut = cut[:i]
	}
	return cut + "…"
}
