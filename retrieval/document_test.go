package retrieval

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf16"
	"unicode/utf8"
)

func TestParseExtractsVisibleTextPerKind(t *testing.T) {
	utf16le := func(s string) []byte {
		b := []byte{0xFF, 0xFE}
		for _, u := range utf16.Encode([]rune(s)) {
			b = binary.LittleEndian.AppendUint16(b, u)
		}
		return b
	}
	tests := []struct {
		name, file string
		data       []byte
		kind       Kind
		title      string
		text       string
	}{
		{
			name: "plain text keeps paragraphs and collapses blanks",
			file: "notes.txt",
			data: []byte("  First  line\r\nsecond\tline  \r\n\r\n\r\n   Next paragraph.\n\n\n"),
			kind: KindText, title: "notes",
			text: "First line\nsecond line\n\nNext paragraph.",
		},
		{
			name: "UTF-8 byte-order mark dropped",
			file: "bom.txt",
			data: append([]byte{0xEF, 0xBB, 0xBF}, "Grüße aus Köln"...),
			kind: KindText, title: "bom", text: "Grüße aus Köln",
		},
		{
			name: "UTF-16 with byte-order mark decoded",
			file: "wide.txt",
			data: utf16le("Ünïcode text\nline two"),
			kind: KindText, title: "wide", text: "Ünïcode text\nline two",
		},
		{
			name: "Latin-1 decoded when mostly not UTF-8",
			file: "latin.txt",
			data: []byte("caf\xe9 cr\xe8me br\xfbl\xe9e na\xefve"),
			kind: KindText, title: "latin", text: "café crème brûlée naïve",
		},
		{
			name: "Latin-1 with one accent in a long text",
			file: "long.txt",
			data: []byte(strings.Repeat("plain words ", 200) + "na\xefve"),
			kind: KindText, title: "long", text: strings.Repeat("plain words ", 200) + "naïve",
		},
		{
			name: "damaged UTF-8 keeps its valid characters",
			file: "damaged.txt",
			data: []byte(strings.Repeat("Grüße ", 200) + "\xff end"),
			kind: KindText, title: "damaged", text: strings.Repeat("Grüße ", 200) + "\uFFFD end",
		},
		{
			name: "text mentioning the PDF header stays text",
			file: "about.txt",
			data: []byte("Files start with a header like %PDF-1.7."),
			kind: KindText, title: "about", text: "Files start with a header like %PDF-1.7.",
		},
		{
			name: "HTML drops script style head and hidden, keeps title and blocks",
			file: "page.html",
			data: []byte(`<!DOCTYPE html><html><head><title> The  Page </title><style>p{color:red}</style>
<script>var secret = "no";</script><meta name="x" content="meta text"></head>
<body><noscript>enable js</noscript><h1>Heading</h1><p>One <b>bold</b> word,
split over lines.</p><div hidden>invisible</div><p style="display: none">gone</p>
<ul><li>alpha</li><li>beta</li></ul><p>line<br>break</p><template><p>tmpl</p></template>
<table><tr><td>a</td><td>b</td></tr></table></body></html>`),
			kind: KindHTML, title: "The Page",
			text: "Heading\n\nOne bold word, split over lines.\n\nalpha\n\nbeta\n\nline\nbreak\n\na b",
		},
		{
			name: "HTML in the charset its meta declares",
			file: "ru.html",
			// "Привет, мир" in windows-1251.
			data: []byte("<html><head><meta charset=\"windows-1251\"><title>\xcf\xf0\xe8\xe2\xe5\xf2</title></head><body><p>\xcf\xf0\xe8\xe2\xe5\xf2, \xec\xe8\xf0</p></body></html>"),
			kind: KindHTML, title: "Привет", text: "Привет, мир",
		},
		{
			name: "HTML detected from content despite .txt",
			file: "saved.txt",
			data: []byte("<html><body><p>Hello <i>there</i></p><script>x()</script></body></html>"),
			kind: KindHTML, title: "saved", text: "Hello there",
		},
		{
			name: "Markdown by extension: markup dropped, first heading is the title",
			file: "readme.md",
			data: []byte("# Big *Title*\n\nSome **strong** text with a [link](http://x.org)\nand a soft break.\n\n- item one\n- item two\n\n```go\nfmt.Println(1)\n```\n\n<div><script>bad()</script>html block</div>\n\n## Sub\nend `code`\n"),
			kind: KindMarkdown, title: "Big Title",
			text: "Big Title\n\nSome strong text with a link and a soft break.\n\nitem one\n\nitem two\n\nfmt.Println(1)\n\nhtml block\n\nSub\n\nend code",
		},
		{
			name: "Markdown by content without extension",
			file: "NOTES",
			data: []byte("# Plan\n\n- [ ] see [docs](http://d)\n- write\n"),
			kind: KindMarkdown, title: "Plan", text: "Plan\n\n[ ] see docs\n\nwrite",
		},
		{
			name: "txt with markdown-ish content stays text",
			file: "list.txt",
			data: []byte("# not a heading\n- and [x](y)\n"),
			kind: KindText, title: "list", text: "# not a heading\n- and [x](y)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse(tt.file, tt.data, Limits{})
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if p.Doc.Kind != tt.kind {
				t.Errorf("kind %q, want %q", p.Doc.Kind, tt.kind)
			}
			if p.Doc.Title != tt.title {
				t.Errorf("title %q, want %q", p.Doc.Title, tt.title)
			}
			if p.Text != tt.text {
				t.Errorf("text\n%q\nwant\n%q", p.Text, tt.text)
			}
			if p.Doc.Size != int64(len(tt.data)) || p.Doc.FileName != tt.file || len(p.Doc.ID) != 64 {
				t.Errorf("metadata %+v", p.Doc)
			}
			if p.Doc.Pages != 0 || p.Pages != nil {
				t.Errorf("unpaged kind has pages %d %v", p.Doc.Pages, p.Pages)
			}
		})
	}
}

func TestParseRejectsBadInputNamingTheFile(t *testing.T) {
	pdf := readFile(t, "three_pages.pdf")
	tests := []struct {
		name string
		data []byte
		lim  Limits
		want error
	}{
		{"empty", nil, Limits{}, ErrEmpty},
		{"whitespace only", []byte(" \n\t\r\n  \u00a0 "), Limits{}, ErrEmpty},
		{"html without visible text", []byte("<html><head><title>t</title><script>x</script></head><body> </body></html>"), Limits{}, ErrEmpty},
		{"NUL bytes", []byte("abc\x00def\x00ghi"), Limits{}, ErrUnsupported},
		{"control bytes", bytes.Repeat([]byte{0x01, 0x02, 'a', 0x03}, 50), Limits{}, ErrUnsupported},
		{"PNG image", append([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), make([]byte, 64)...), Limits{}, ErrUnsupported},
		{"zip archive", append([]byte("PK\x03\x04\x14\x00\x00\x00\x08\x00"), make([]byte, 64)...), Limits{}, ErrUnsupported},
		{"odd-length UTF-16", []byte{0xFF, 0xFE, 'a', 0, 'b'}, Limits{}, ErrMalformed},
		{"oversized input", bytes.Repeat([]byte("word "), 100), Limits{MaxBytes: 499}, ErrTooLarge},
		{"oversized text", bytes.Repeat([]byte("word "), 100), Limits{MaxTextBytes: 100}, ErrTooLarge},
		{"truncated PDF", pdf[:len(pdf)/2], Limits{}, ErrMalformed},
		{"PDF header only", []byte("%PDF-1.7\n%garbage\n"), Limits{}, ErrMalformed},
		{"PDF over page limit", pdf, Limits{MaxPages: 3}, ErrTooLarge},
		{"PDF without text layer", readFile(t, "blank.pdf"), Limits{}, ErrEmpty},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := "dir/bad-" + strings.ReplaceAll(tt.name, " ", "_") + ".txt"
			p, err := Parse(name, tt.data, tt.lim)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Parse = %v, %v; want %v", p, err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), name+": ") {
				t.Errorf("error %q does not start with the file name", err)
			}
		})
	}
}

// TestParsePDFMatchesWriterText checks the PDF text layer and page ranges
// against the text fpdf2 was told to draw (testdata/make_pdfs.py).
func TestParsePDFMatchesWriterText(t *testing.T) {
	var want map[string]struct {
		Title string
		Pages [][]string
	}
	if err := json.Unmarshal(readFile(t, "pdf_expected.json"), &want); err != nil {
		t.Fatal(err)
	}
	for _, file := range []string{"three_pages.pdf", "uncompressed.pdf", "tex_style.pdf"} {
		t.Run(file, func(t *testing.T) {
			w := want[file]
			// A misleading extension, and junk before the header (which the
			// PDF specification allows within the first KiB): the content
			// says PDF.
			data := append([]byte("junk\n"), readFile(t, file)...)
			p, err := Parse(strings.TrimSuffix(file, ".pdf")+".txt", data, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if p.Doc.Kind != KindPDF || p.Doc.Title != w.Title || p.Doc.Pages != len(w.Pages) || len(p.Pages) != len(w.Pages) {
				t.Fatalf("doc %+v pages %v; want title %q, %d pages", p.Doc, p.Pages, w.Title, len(w.Pages))
			}
			var paras []string
			for i, lines := range w.Pages {
				pg := p.Pages[i]
				if pg.Number != i+1 {
					t.Errorf("page %d numbered %d", i+1, pg.Number)
				}
				if got, exp := p.Text[pg.Start:pg.End], strings.Join(lines, "\n"); got != exp {
					t.Errorf("page %d text %q, want %q", i+1, got, exp)
				}
				if len(lines) > 0 {
					paras = append(paras, strings.Join(lines, "\n"))
				}
			}
			if exp := strings.Join(paras, "\n\n"); p.Text != exp {
				t.Errorf("text %q, want %q", p.Text, exp)
			}
		})
	}
}

// TestParsePDFNeverPanics feeds corrupted copies of a real PDF to Parse:
// every one must parse or fail with a sentinel error, never panic.
func TestParsePDFNeverPanics(t *testing.T) {
	orig := readFile(t, "uncompressed.pdf")
	for i := 0; i < 300; i++ {
		data := bytes.Clone(orig)
		// Deterministic corruption: overwrite a few bytes at spread offsets.
		for j := 0; j < 1+i%5; j++ {
			off := (i*7919 + j*104729) % len(data)
			data[off] = byte(i*31 + j*17)
		}
		if i%3 == 0 {
			data = data[:len(data)*(i%10+1)/11]
		}
		_, err := Parse("fuzzed.pdf", data, Limits{})
		if err != nil && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrEmpty) &&
			!errors.Is(err, ErrUnsupported) && !errors.Is(err, ErrTooLarge) {
			t.Fatalf("case %d: error without a sentinel: %v", i, err)
		}
	}
}

func TestParseIDIsContentHash(t *testing.T) {
	a, err := Parse("a.txt", []byte("same bytes"), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse("b.md", []byte("same bytes"), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse("a.txt", []byte("other bytes"), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	// sha256("same bytes"), computed with coreutils sha256sum.
	const want = "58100dc8fc06562ce3e578231dc948e083520ee49c4b4ee5a5a28bb4b4003feb"
	if a.Doc.ID != want {
		t.Errorf("ID %s, want sha256 %s", a.Doc.ID, want)
	}
	if a.Doc.ID != b.Doc.ID || a.Doc.ID == c.Doc.ID {
		t.Errorf("IDs %s %s %s: same bytes must share an ID, different must not", a.Doc.ID, b.Doc.ID, c.Doc.ID)
	}
}

func TestParseText(t *testing.T) {
	p, err := ParseText("", "  A pasted note\n\nwith two paragraphs  ")
	if err != nil {
		t.Fatal(err)
	}
	if p.Text != "A pasted note\n\nwith two paragraphs" || p.Doc.Title != "A pasted note" || p.Doc.Kind != KindText {
		t.Errorf("got %+v %q", p.Doc, p.Text)
	}
	if _, err := ParseText("blank", " \n "); !errors.Is(err, ErrEmpty) || !strings.HasPrefix(err.Error(), "blank: ") {
		t.Errorf("blank text: %v", err)
	}
	q, err := ParseText("t", "A pasted note")
	if err != nil || q.Doc.ID == p.Doc.ID || q.Doc.Title != "t" {
		t.Errorf("ParseText(t) = %+v, %v", q, err)
	}
}

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzParseNeverPanics: any bytes under any of the handled names either
// parse to normalised text or fail with a sentinel error naming the file.
func FuzzParseNeverPanics(f *testing.F) {
	for _, name := range []string{"three_pages.pdf", "uncompressed.pdf", "blank.pdf"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, uint8(0))
	}
	f.Add([]byte("<html><head><title>x</title></head><body><p>a<br>b</p></body></html>"), uint8(1))
	f.Add([]byte("# H\n\n- a\n- [b](c)\n\n```\ncode\n```\n<div>x</div>"), uint8(2))
	f.Add([]byte("plain\r\n\r\ntext\x00"), uint8(3))
	names := []string{"f.pdf", "f.html", "f.md", "f.txt", "f"}
	f.Fuzz(func(t *testing.T, data []byte, which uint8) {
		name := names[int(which)%len(names)]
		p, err := Parse(name, data, Limits{MaxPages: 50})
		if err != nil {
			if !errors.Is(err, ErrEmpty) && !errors.Is(err, ErrUnsupported) &&
				!errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("error without a sentinel: %v", err)
			}
			if !strings.HasPrefix(err.Error(), name+": ") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		if p.Text == "" || strings.TrimSpace(p.Text) != p.Text || strings.Contains(p.Text, "\n\n\n") || !utf8.ValidString(p.Text) {
			t.Fatalf("text not normalised: %q", p.Text)
		}
		for _, pg := range p.Pages {
			if pg.Start > pg.End || pg.End > len(p.Text) {
				t.Fatalf("page %+v outside text of %d bytes", pg, len(p.Text))
			}
		}
	})
}
