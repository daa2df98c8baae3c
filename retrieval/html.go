package retrieval

import (
	"strings"
	"unicode"

	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
)

// extractHTML returns the <title> and the visible text of an HTML document.
// Scripts, styles, templates, <noscript>, the <head> (except its title),
// embedded SVG/objects and elements marked hidden are dropped; block
// elements become paragraph breaks and <br> a line break. The text is
// normalised like normalizeText's output. The HTML5 parser accepts any
// input, so there is no error.
func extractHTML(src string) (title, text string) {
	doc, err := html.Parse(strings.NewReader(src))
	if err != nil { // html.Parse fails only on reader errors
		return "", normalizeText(src)
	}
	var w htmlText
	w.walk(doc, &title)
	return oneLine(title), normalizeText(w.b.String())
}

// htmlText accumulates visible text with "\n\n" between blocks; the
// result is passed through normalizeText, which collapses the rest.
type htmlText struct {
	b   strings.Builder
	pre int // depth of <pre> elements: white space kept
}

func (w *htmlText) walk(n *html.Node, title *string) {
	switch n.Type {
	case html.TextNode:
		if w.pre > 0 {
			// Keep line structure; blank lines inside <pre> would read as
			// paragraph breaks, which is what they are in code too.
			w.b.WriteString(n.Data)
		} else {
			// Inline white space (newlines included) is one space.
			f := strings.Fields(n.Data)
			if len(f) == 0 {
				w.b.WriteByte(' ')
				return
			}
			if strings.TrimLeftFunc(n.Data[:1], unicode.IsSpace) == "" {
				w.b.WriteByte(' ')
			}
			w.b.WriteString(strings.Join(f, " "))
			if strings.TrimRightFunc(n.Data[len(n.Data)-1:], unicode.IsSpace) == "" {
				w.b.WriteByte(' ')
			}
		}
		return
	case html.ElementNode:
		if n.DataAtom == atom.Title && *title == "" {
			*title = textContent(n)
			return
		}
		if skipElement(n) {
			// A <head> may hold the <title>; look inside but emit nothing.
			if n.DataAtom == atom.Head {
				for c := n.FirstChild; c != nil; c = c.NextSibling {
					if c.Type == html.ElementNode && c.DataAtom == atom.Title && *title == "" {
						*title = textContent(c)
					}
				}
			}
			return
		}
	case html.CommentNode, html.DoctypeNode:
		return
	}
	block := n.Type == html.ElementNode && blockElements[n.DataAtom]
	if block {
		w.b.WriteString("\n\n")
	}
	switch n.DataAtom {
	case atom.Br:
		w.b.WriteByte('\n')
	case atom.Td, atom.Th:
		w.b.WriteByte(' ')
	case atom.Pre:
		w.pre++
		defer func() { w.pre-- }()
	}
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		w.walk(c, title)
	}
	if block {
		w.b.WriteString("\n\n")
	}
}

// skipElement reports whether an element's content is not visible text.
func skipElement(n *html.Node) bool {
	switch n.DataAtom {
	case atom.Script, atom.Style, atom.Noscript, atom.Template, atom.Head,
		atom.Svg, atom.Math, atom.Object, atom.Embed, atom.Iframe, atom.Canvas,
		atom.Audio, atom.Video, atom.Select, atom.Button:
		return true
	}
	for _, a := range n.Attr {
		switch strings.ToLower(a.Key) {
		case "hidden":
			return true
		case "aria-hidden":
			if strings.EqualFold(a.Val, "true") {
				return true
			}
		case "style":
			v := strings.ToLower(strings.ReplaceAll(a.Val, " ", ""))
			if strings.Contains(v, "display:none") || strings.Contains(v, "visibility:hidden") {
				return true
			}
		}
	}
	return false
}

// textContent is the white-space-collapsed text under n.
func textContent(n *html.Node) string {
	var b strings.Builder
	var rec func(*html.Node)
	rec = func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
			b.WriteByte(' ')
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			rec(c)
		}
	}
	rec(n)
	return oneLine(b.String())
}

// blockElements are the elements whose boundaries are paragraph breaks.
var blockElements = map[atom.Atom]bool{
	atom.Address: true, atom.Article: true, atom.Aside: true, atom.Blockquote: true,
	atom.Caption: true, atom.Dd: true, atom.Details: true, atom.Dialog: true,
	atom.Div: true, atom.Dl: true, atom.Dt: true, atom.Fieldset: true,
	atom.Figcaption: true, atom.Figure: true, atom.Footer: true, atom.Form: true,
	atom.H1: true, atom.H2: true, atom.H3: true, atom.H4: true, atom.H5: true,
	atom.H6: true, atom.Header: true, atom.Hr: true, atom.Li: true, atom.Main: true,
	atom.Nav: true, atom.Ol: true, atom.P: true, atom.Pre: true, atom.Section: true,
	atom.Summary: true, atom.Table: true, atom.Tr: true, atom.Ul: true,
	atom.Body: true, atom.Html: true, atom.Legend: true, atom.Center: true,
}
