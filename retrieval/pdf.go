package retrieval

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/ledongthuc/pdf"
)

// parsePDF fills p.Text and p.Pages from the PDF's text layer, one page
// after another separated by paragraph breaks (see pageText), and returns the Title from
// the document information dictionary. ledongthuc/pdf panics on some
// malformed files; those panics become ErrMalformed. Encrypted files are
// ErrUnsupported; more than lim.MaxPages pages is ErrTooLarge; a file
// without any text (a scan) is ErrEmpty.
func parsePDF(p *Parsed, data []byte, lim Limits) (title string, err error) {
	defer func() {
		if r := recover(); r != nil {
			title, err = "", fmt.Errorf("reading PDF: %v: %w", r, ErrMalformed)
		}
	}()
	// Bytes before the header are junk whose length the writer did not
	// count in its offsets (ledongthuc/pdf wants the header first).
	data = data[bytes.Index(data, []byte("%PDF-")):]
	r, err := pdf.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		if strings.Contains(err.Error(), "encrypt") {
			return "", fmt.Errorf("encrypted PDF: %w", ErrUnsupported)
		}
		return "", fmt.Errorf("reading PDF: %v: %w", err, ErrMalformed)
	}
	n := r.NumPage()
	if n == 0 {
		return "", fmt.Errorf("PDF has no pages: %w", ErrMalformed)
	}
	if n > lim.MaxPages {
		return "", fmt.Errorf("%d pages exceed the limit of %d: %w", n, lim.MaxPages, ErrTooLarge)
	}
	var b strings.Builder
	pages := make([]Page, 0, n)
	for i := 1; i <= n; i++ {
		pg := r.Page(i)
		if pg.V.IsNull() {
			return "", fmt.Errorf("page %d missing: %w", i, ErrMalformed)
		}
		t := normalizeText(pageText(pg.Content().Text))
		if t != "" && b.Len() > 0 {
			b.WriteString("\n\n")
		}
		start := b.Len()
		b.WriteString(t)
		if int64(b.Len()) > lim.MaxTextBytes {
			return "", fmt.Errorf("text of the first %d pages exceeds the limit of %d bytes: %w", i, lim.MaxTextBytes, ErrTooLarge)
		}
		pages = append(pages, Page{Number: i, Start: start, End: b.Len()})
	}
	p.Text = b.String()
	p.Pages = pages
	p.Doc.Pages = n
	info := r.Trailer().Key("Info")
	return info.Key("Title").Text(), nil
}

// pageText lays out a page's glyphs, in content-stream order, as text. The
// glyph positions are what count: ledongthuc/pdf's own GetPlainText drops
// TJ offsets and Td moves, gluing together the words of any PDF that
// spaces words by positioning (pdfTeX's, for one). A glyph starting
// more than 0.2 em right of the previous glyph's end opens a word; one on
// another baseline (more than 0.5 em away) or far left of it opens a line,
// and a vertical jump of more than two lines a paragraph.
func pageText(glyphs []pdf.Text) string {
	var b strings.Builder
	var prev *pdf.Text
	for i := range glyphs {
		g := &glyphs[i]
		if strings.TrimSpace(g.S) == "" && g.S != " " {
			continue // "" or the "\n" Content adds after each TJ: layout decides
		}
		if prev != nil {
			em := max(prev.FontSize, g.FontSize, 1)
			dy := prev.Y - g.Y
			gap := g.X - (prev.X + prev.W)
			switch {
			case dy > 2.5*em || dy < -2.5*em:
				b.WriteString("\n\n")
			case dy > 0.5*em || dy < -0.5*em || gap < -2*em:
				b.WriteByte('\n')
			case gap > 0.2*em && g.S != " " && prev.S != " ":
				b.WriteByte(' ')
			}
		}
		b.WriteString(g.S)
		prev = g
	}
	return b.String()
}
