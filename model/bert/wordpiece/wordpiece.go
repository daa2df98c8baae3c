// Package wordpiece is the BERT WordPiece tokenizer, as Hugging Face
// `tokenizers` runs it for uncased BERT models (all-MiniLM-L6-v2 among them):
//
//  1. Special tokens ("[CLS]", "[SEP]", ... — the tokenizer.json
//     added_tokens) written literally in the text are matched first,
//     case-sensitively, leftmost-longest, and become their own ids.
//  2. The BertNormalizer on the text between them: drop NUL, U+FFFD and
//     control characters (Unicode category C except Cn, but not \t \n \r);
//     map whitespace to ' '; surround CJK ideographs with spaces; strip
//     accents (NFD, then drop nonspacing marks, category Mn); lowercase
//     (per character, simple mapping).
//  3. The BertPreTokenizer: split on whitespace (removed) and isolate every
//     punctuation character (ASCII punctuation or Unicode category P).
//  4. WordPiece on each word: greedy longest match from the left, pieces
//     after the first prefixed "##"; a word with more than MaxInputChars
//     characters, or with a part no vocabulary entry matches, becomes
//     [UNK] as a whole.
//
// Encode wraps the pieces in [CLS] ... [SEP]. Invalid UTF-8 bytes in the
// input are treated as U+FFFD, i.e. dropped.
//
// Fidelity: on the golden set (hand-picked and random texts) the ids equal
// those of Hugging Face tokenizers 0.23. Code point by code point, 624
// characters are classified differently, because tokenizers' category
// tables (marks, punctuation, format controls) predate Unicode 10 while Go's
// unicode package is current; all were assigned after Unicode 9 and none
// occurs in the vocabulary. The CJK ranges are those of tokenizers
// (Extension E+ starts at U+2B920 there, U+2B820 in the Python BertTokenizer).
package wordpiece

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Tokenizer is a WordPiece tokenizer. It is immutable after Load or Parse
// and safe for concurrent use.
type Tokenizer struct {
	vocab    map[string]int32
	tokens   []string // by id ("" for ids missing from the vocabulary)
	special  []special
	unk      int32
	cls, sep int32
	prefix   string // continuing-subword prefix, "##"
	maxChars int

	cleanText, chineseChars, stripAccents, lowercase bool
}

// special is a token matched verbatim in the raw text.
type special struct {
	content string
	id      int32
}

// Load reads a Hugging Face tokenizer.json (see Parse).
func Load(path string) (*Tokenizer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("wordpiece: %w", err)
	}
	t, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("wordpiece: %s: %w", path, err)
	}
	return t, nil
}

// tokenizerJSON is the part of tokenizer.json this package reads.
type tokenizerJSON struct {
	AddedTokens []struct {
		ID         int32  `json:"id"`
		Content    string `json:"content"`
		SingleWord bool   `json:"single_word"`
		LStrip     bool   `json:"lstrip"`
		RStrip     bool   `json:"rstrip"`
		Normalized bool   `json:"normalized"`
	} `json:"added_tokens"`
	Normalizer *struct {
		Type               string `json:"type"`
		CleanText          bool   `json:"clean_text"`
		HandleChineseChars bool   `json:"handle_chinese_chars"`
		StripAccents       *bool  `json:"strip_accents"`
		Lowercase          bool   `json:"lowercase"`
	} `json:"normalizer"`
	PreTokenizer *struct {
		Type string `json:"type"`
	} `json:"pre_tokenizer"`
	PostProcessor *struct {
		Type   string `json:"type"`
		Single []struct {
			SpecialToken *struct {
				ID string `json:"id"`
			} `json:"SpecialToken"`
			Sequence *struct {
				ID string `json:"id"`
			} `json:"Sequence"`
		} `json:"single"`
		SpecialTokens map[string]struct {
			IDs []int32 `json:"ids"`
		} `json:"special_tokens"`
	} `json:"post_processor"`
	Model struct {
		Type                    string           `json:"type"`
		UnkToken                string           `json:"unk_token"`
		ContinuingSubwordPrefix string           `json:"continuing_subword_prefix"`
		MaxInputCharsPerWord    int              `json:"max_input_chars_per_word"`
		Vocab                   map[string]int32 `json:"vocab"`
	} `json:"model"`
}

// Parse builds a Tokenizer from the contents of a tokenizer.json. It
// accepts exactly the BERT pipeline: a BertNormalizer, a BertPreTokenizer,
// a WordPiece model and a TemplateProcessing post-processor whose single-
// sequence template is one special token, the sequence, one special token
// ([CLS] $A [SEP]). Anything else is an error.
func Parse(b []byte) (*Tokenizer, error) {
	var j tokenizerJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("tokenizer.json: %w", err)
	}
	if j.Model.Type != "WordPiece" {
		return nil, fmt.Errorf("model type %q, want WordPiece", j.Model.Type)
	}
	if j.Normalizer == nil || j.Normalizer.Type != "BertNormalizer" {
		return nil, fmt.Errorf("normalizer is not a BertNormalizer")
	}
	if j.PreTokenizer == nil || j.PreTokenizer.Type != "BertPreTokenizer" {
		return nil, fmt.Errorf("pre_tokenizer is not a BertPreTokenizer")
	}
	n := j.Normalizer
	t := &Tokenizer{
		vocab:        j.Model.Vocab,
		prefix:       j.Model.ContinuingSubwordPrefix,
		maxChars:     j.Model.MaxInputCharsPerWord,
		cleanText:    n.CleanText,
		chineseChars: n.HandleChineseChars,
		lowercase:    n.Lowercase,
		stripAccents: n.Lowercase, // tokenizers: strip_accents null follows lowercase
	}
	if n.StripAccents != nil {
		t.stripAccents = *n.StripAccents
	}
	if len(t.vocab) == 0 {
		return nil, fmt.Errorf("empty vocabulary")
	}
	if t.maxChars <= 0 {
		return nil, fmt.Errorf("max_input_chars_per_word %d must be positive", t.maxChars)
	}
	maxID := int32(-1)
	for tok, id := range t.vocab {
		if id < 0 || int(id) >= 4*len(t.vocab)+1024 {
			return nil, fmt.Errorf("vocabulary id %d of %q out of range", id, tok)
		}
		maxID = max(maxID, id)
	}
	for _, a := range j.AddedTokens {
		if a.SingleWord || a.LStrip || a.RStrip || a.Normalized {
			return nil, fmt.Errorf("added token %q: single_word/lstrip/rstrip/normalized are not supported", a.Content)
		}
		if a.Content == "" || a.ID < 0 || int(a.ID) >= 4*len(t.vocab)+1024 {
			return nil, fmt.Errorf("added token %q with id %d is invalid", a.Content, a.ID)
		}
		t.special = append(t.special, special{a.Content, a.ID})
		maxID = max(maxID, a.ID)
	}
	// Longest first, so the first match at a position is the longest.
	sort.SliceStable(t.special, func(a, b int) bool { return len(t.special[a].content) > len(t.special[b].content) })
	t.tokens = make([]string, maxID+1)
	for tok, id := range t.vocab {
		t.tokens[id] = tok
	}
	for _, s := range t.special {
		t.tokens[s.id] = s.content
	}
	var ok bool
	if t.unk, ok = t.vocab[j.Model.UnkToken]; !ok {
		return nil, fmt.Errorf("unk token %q not in the vocabulary", j.Model.UnkToken)
	}
	p := j.PostProcessor
	if p == nil || p.Type != "TemplateProcessing" || len(p.Single) != 3 ||
		p.Single[0].SpecialToken == nil || p.Single[1].Sequence == nil || p.Single[2].SpecialToken == nil {
		return nil, fmt.Errorf("post_processor is not a [CLS] $A [SEP] template")
	}
	for i, dst := range []*int32{&t.cls, &t.sep} {
		name := p.Single[2*i].SpecialToken.ID
		ids := p.SpecialTokens[name].IDs
		if len(ids) != 1 || ids[0] < 0 || ids[0] > maxID {
			return nil, fmt.Errorf("post_processor special token %q has ids %v, want one known id", name, ids)
		}
		*dst = ids[0]
	}
	return t, nil
}

// CLS returns the id the encoding starts with ([CLS]).
func (t *Tokenizer) CLS() int32 { return t.cls }

// SEP returns the id the encoding ends with ([SEP]).
func (t *Tokenizer) SEP() int32 { return t.sep }

// Unknown returns the id of the unknown-word token ([UNK]).
func (t *Tokenizer) Unknown() int32 { return t.unk }

// VocabSize returns one more than the largest token id.
func (t *Tokenizer) VocabSize() int { return len(t.tokens) }

// Token returns the vocabulary string of id ("" if there is none).
func (t *Tokenizer) Token(id int32) string {
	if id < 0 || int(id) >= len(t.tokens) {
		return ""
	}
	return t.tokens[id]
}

// Encode returns the ids of text wrapped as [CLS] pieces [SEP].
func (t *Tokenizer) Encode(text string) []int32 {
	ids := t.AppendPieces([]int32{t.cls}, text)
	return append(ids, t.sep)
}

// AppendPieces appends to dst the word-piece ids of text (special tokens
// written in the text included, [CLS]/[SEP] wrapping not) and returns the
// extended slice.
func (t *Tokenizer) AppendPieces(dst []int32, text string) []int32 {
	for text != "" {
		i, s := t.nextSpecial(text)
		dst = t.appendNormalText(dst, text[:i])
		if s == nil {
			break
		}
		dst = append(dst, s.id)
		text = text[i+len(s.content):]
	}
	return dst
}

// nextSpecial finds the leftmost special token in text (the longest one
// at that position); it returns len(text), nil if there is none.
func (t *Tokenizer) nextSpecial(text string) (int, *special) {
	for i := 0; i < len(text); i++ {
		for k := range t.special {
			if strings.HasPrefix(text[i:], t.special[k].content) {
				return i, &t.special[k]
			}
		}
	}
	return len(text), nil
}

// appendNormalText normalizes, pre-tokenizes and word-pieces text that
// holds no special token.
func (t *Tokenizer) appendNormalText(dst []int32, text string) []int32 {
	for _, w := range t.Words(text) {
		dst = t.appendWord(dst, w)
	}
	return dst
}

// Normalize applies the BertNormalizer steps (clean, CJK spacing, accent
// stripping, lowercasing) that the tokenizer.json enables.
func (t *Tokenizer) Normalize(text string) string {
	var b strings.Builder
	b.Grow(len(text))
	for _, r := range text {
		if t.cleanText {
			if r == 0 || r == utf8.RuneError || isControl(r) {
				continue
			}
			if isWhitespace(r) {
				r = ' '
			}
		}
		if t.chineseChars && isCJK(r) {
			b.WriteByte(' ')
			b.WriteRune(r)
			b.WriteByte(' ')
			continue
		}
		b.WriteRune(r)
	}
	s := b.String()
	if t.stripAccents {
		s = norm.NFD.String(s)
		if strings.IndexFunc(s, isMn) >= 0 {
			s = strings.Map(func(r rune) rune {
				if isMn(r) {
					return -1
				}
				return r
			}, s)
		}
	}
	if t.lowercase {
		s = strings.Map(unicode.ToLower, s)
	}
	return s
}

// Words returns the normalized text split by the BertPreTokenizer: runs of
// non-space, non-punctuation characters, and each punctuation character on
// its own.
func (t *Tokenizer) Words(text string) []string {
	s := t.Normalize(text)
	var words []string
	start := -1
	for i, r := range s {
		switch {
		case unicode.IsSpace(r):
			if start >= 0 {
				words = append(words, s[start:i])
				start = -1
			}
		case isPunct(r):
			if start >= 0 {
				words = append(words, s[start:i])
				start = -1
			}
			words = append(words, s[i:i+utf8.RuneLen(r)])
		default:
			if start < 0 {
				start = i
			}
		}
	}
	if start >= 0 {
		words = append(words, s[start:])
	}
	return words
}

// appendWord appends the word pieces of one pre-tokenized word: greedy
// longest match, or [UNK] for the whole word.
func (t *Tokenizer) appendWord(dst []int32, w string) []int32 {
	if utf8.RuneCountInString(w) > t.maxChars {
		return append(dst, t.unk)
	}
	n := len(dst)
	var buf [256]byte // prefix + piece, for an allocation-free map lookup
	for start := 0; start < len(w); {
		found := false
		for end := len(w); end > start; {
			piece := w[start:end]
			key := append(buf[:0], piece...)
			if start > 0 {
				key = append(append(buf[:0], t.prefix...), piece...)
			}
			if id, ok := t.vocab[string(key)]; ok {
				dst = append(dst, id)
				start, found = end, true
				break
			}
			_, size := utf8.DecodeLastRuneInString(piece)
			end -= size
		}
		if !found {
			return append(dst[:n], t.unk)
		}
	}
	return dst
}

// isControl reports whether the BertNormalizer drops r: a character of
// category Cc, Cf, Co or Cs, except the whitespace controls \t, \n, \r.
func isControl(r rune) bool {
	switch r {
	case '\t', '\n', '\r':
		return false
	}
	return unicode.In(r, unicode.Cc, unicode.Cf, unicode.Co, unicode.Cs)
}

// isWhitespace reports whether the BertNormalizer maps r to a space: the
// Unicode White_Space characters (\t, \n and \r included).
func isWhitespace(r rune) bool { return unicode.IsSpace(r) }

// isMn reports whether r is a nonspacing mark, removed by accent stripping.
func isMn(r rune) bool { return unicode.Is(unicode.Mn, r) }

// isPunct reports whether the BertPreTokenizer isolates r: ASCII
// punctuation (symbols such as $ + < = > ^ ` | ~ included) or a Unicode
// punctuation character (category P).
func isPunct(r rune) bool {
	if r < utf8.RuneSelf {
		return r > ' ' && r < 0x7f && !('0' <= r && r <= '9' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z')
	}
	return unicode.IsPunct(r)
}

// isCJK reports whether r is in one of the CJK ideograph blocks BERT
// treats as words of their own (CJK Unified Ideographs, Extensions A–E,
// and the Compatibility Ideographs blocks).
func isCJK(r rune) bool {
	switch {
	case 0x4E00 <= r && r <= 0x9FFF,
		0x3400 <= r && r <= 0x4DBF,
		0x20000 <= r && r <= 0x2A6DF,
		0x2A700 <= r && r <= 0x2B73F,
		0x2B740 <= r && r <= 0x2B81F,
		0x2B920 <= r && r <= 0x2CEAF,
		0xF900 <= r && r <= 0xFAFF,
		0x2F800 <= r && r <= 0x2FA1F:
		return true
	}
	return false
}
