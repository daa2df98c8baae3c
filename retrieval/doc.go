// Package retrieval turns documents into retrievable chunks and finds them
// again: parsing, chunking, BM25 and reciprocal rank fusion here; dense
// vector search in retrieval/vector and CUR cross-encoder search in
// retrieval/cur. It must not import kvstore or blend.
//
// # Documents
//
// Parse reads plain text, Markdown, HTML and PDF. The format comes from the
// content: a PDF header anywhere in the first KiB means PDF whatever the
// name; HTML is recognised by mimetype or its leading markup; the
// extension (.md, .html, .txt) only chooses among text formats, and an
// extension-less file with Markdown syntax is Markdown. Text is decoded from
// UTF-8 (BOM or not), UTF-16 with a BOM, or Windows-1252 when most bytes are
// not UTF-8; NUL bytes, control characters above 1% or a recognised binary
// format are rejected. Visible text only: HTML drops script, style,
// noscript, template, head (keeping <title>), embedded objects and hidden
// elements (golang.org/x/net/html); Markdown drops markup
// (github.com/yuin/goldmark's AST); PDF reads the text layer page by page
// (github.com/ledongthuc/pdf, whose panics on malformed files become
// ErrMalformed), recording each page's byte range. Its GetPlainText glues
// the words of PDFs that space words by glyph positioning (pdfTeX's), so
// words, lines and paragraphs are laid out here from glyph positions. The text is normalised
// so that paragraphs (blank lines, block elements, PDF pages) are separated
// by exactly "\n\n". Errors wrap ErrEmpty, ErrUnsupported, ErrTooLarge or
// ErrMalformed and start with the file name.
//
// # Chunks
//
// A Chunker splits text into chunks whose prompt segment "\n\n"+Text
// (DESIGN.md "The prompt as segments") has at most ChunkOptions.Tokens
// tokens under the generator's tokenizer: it cuts paragraphs, then
// sentences, then words, then token-sized runs, packs the pieces greedily
// from per-piece counts (each piece encoded once alone and once with its
// join, so the cost is linear in the text), prefers a paragraph (else
// sentence) boundary when the chunk is at least half full, and verifies
// each chunk's exact count. A chunk's ID is the full hex SHA-256 of its
// text (64 characters: identical text anywhere is stored once, and
// collisions need not be considered).
//
// # BM25 and fusion
//
// BM25 is a bleve v2 index on disk (scorch, BM25 scoring, English
// analyzer) holding only chunk IDs; see BM25 for its exact scoring and the
// average-length fix. Add and Delete are single batches that return once
// durable. FuseRRF fuses the retrievers' ranked lists by reciprocal rank,
// keeping each result's per-retriever ranks and scores.
package retrieval
