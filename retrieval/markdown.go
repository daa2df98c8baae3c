package retrieval

import (
	"strings"

	"github.com/yuin/goldmark"
	"github.com/yuin/goldmark/ast"
	"github.com/yuin/goldmark/text"
)

// extractMarkdown returns the first heading and the visible text of a
// CommonMark document: markup is dropped, blocks (paragraphs, headings,
// list items, quotes, code blocks) are separated by paragraph breaks, soft
// line breaks become spaces and hard ones newlines, code blocks keep their
// lines, and HTML blocks contribute their visible text.
func extractMarkdown(src []byte) (title, out string) {
	doc := goldmark.New().Parser().Parse(text.NewReader(src))
	var b strings.Builder
	headingAt := -1
	_ = ast.Walk(doc, func(n ast.Node, entering bool) (ast.WalkStatus, error) {
		block := n.Type() == ast.TypeBlock && n.Kind() != ast.KindDocument
		if block {
			b.WriteString("\n\n")
		}
		if !entering {
			if n.Kind() == ast.KindHeading && headingAt >= 0 && title == "" {
				title = oneLine(b.String()[headingAt:])
				headingAt = -1
			}
			return ast.WalkContinue, nil
		}
		switch n := n.(type) {
		case *ast.Heading:
			if title == "" {
				headingAt = b.Len()
			}
		case *ast.CodeBlock, *ast.FencedCodeBlock:
			writeLines(&b, n, src)
			b.WriteString("\n\n")
			return ast.WalkSkipChildren, nil
		case *ast.HTMLBlock:
			var h strings.Builder
			writeLines(&h, n, src)
			if n.HasClosure() {
				h.Write(n.ClosureLine.Value(src))
			}
			_, t := extractHTML(h.String())
			b.WriteString(t)
			b.WriteString("\n\n")
			return ast.WalkSkipChildren, nil
		case *ast.Text:
			b.Write(n.Value(src))
			switch {
			case n.HardLineBreak():
				b.WriteByte('\n')
			case n.SoftLineBreak():
				b.WriteByte(' ')
			}
		case *ast.String:
			b.Write(n.Value)
		case *ast.AutoLink:
			b.Write(n.Label(src))
		case *ast.RawHTML:
			return ast.WalkSkipChildren, nil
		}
		return ast.WalkContinue, nil
	})
	return title, normalizeText(b.String())
}

// writeLines writes a block's source lines verbatim.
func writeLines(b *strings.Builder, n ast.Node, src []byte) {
	lines := n.Lines()
	for i := range lines.Len() {
		seg := lines.At(i)
		b.Write(seg.Value(src))
	}
}
