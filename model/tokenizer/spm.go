package tokenizer

import (
	"fmt"
	"strings"
)

// SentencePiece-style BPE ("llama" vocabularies: Llama 2, Mistral), as
// llama.cpp's llm_tokenizer_spm: spaces become ▁ (U+2581), the text is split
// into UTF-8 characters, and the adjacent pair whose concatenation is the
// highest-scoring token is merged until no pair forms a token. A character
// that is not a token is emitted as <0xNN> byte tokens.

// initSPM builds the byte-fallback table: byte b maps to token "<0xNN>", else
// to the one-byte token, else -1 (llama.cpp would throw; Encode emits UNK,
// or nothing without one).
func (t *Tokenizer) initSPM() {
	for b := 0; b < 256; b++ {
		t.byteTok[b] = -1
		if id, ok := t.ids[fmt.Sprintf("<0x%02X>", b)]; ok {
			t.byteTok[b] = id
		} else if id, ok := t.ids[string([]byte{byte(b)})]; ok {
			t.byteTok[b] = id
		}
	}
}

// spmBigram is a candidate merge: the pair's token score and byte size.
type spmBigram struct {
	score       float32
	left, right int32
	size        int32
}

// spmLess orders the queue: highest score first, then leftmost.
func spmLess(a, b *spmBigram) bool {
	return a.score > b.score || (a.score == b.score && a.left < b.left)
}

type spmScratch struct {
	buf  []byte
	syms []bpeSymbol
	heap []spmBigram
}

func (sc *spmScratch) push(b spmBigram) {
	h := append(sc.heap, b)
	i := len(h) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !spmLess(&h[i], &h[p]) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
	sc.heap = h
}

func (sc *spmScratch) pop() spmBigram {
	h := sc.heap
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h = h[:last]
	for i := 0; ; {
		l := 2*i + 1
		if l >= len(h) {
			break
		}
		m := l
		if r := l + 1; r < len(h) && spmLess(&h[r], &h[l]) {
			m = r
		}
		if !spmLess(&h[m], &h[i]) {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	sc.heap = h
	return top
}

// utf8Len is llama.cpp's unicode_len_utf8: the sequence length announced by a
// lead byte, without validation.
func utf8Len(c byte) int {
	return [16]int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4}[c>>4]
}

// encodeSPM appends the tokens of one text fragment.
func (t *Tokenizer) encodeSPM(dst []int32, frag string, spacePrefix bool, sc *spmScratch) []int32 {
	sc.buf = sc.buf[:0]
	if spacePrefix {
		sc.buf = append(sc.buf, "▁"...)
	}
	sc.buf = append(sc.buf, strings.ReplaceAll(frag, " ", "▁")...)
	text := sc.buf
	if len(text) == 0 {
		return dst
	}
	syms := sc.syms[:0]
	for off := 0; off < len(text); {
		n := min(utf8Len(text[off]), len(text)-off)
		i := int32(len(syms))
		syms = append(syms, bpeSymbol{prev: i - 1, next: i + 1, start: int32(off), n: int32(n)})
		off += n
	}
	syms[len(syms)-1].next = -1
	sc.syms = syms
	sc.heap = sc.heap[:0]
	for i := 1; i < len(syms); i++ {
		t.spmBigram(sc, text, int32(i-1), int32(i))
	}
	for len(sc.heap) > 0 {
		b := sc.pop()
		l, r := &syms[b.left], &syms[b.right]
		if l.n == 0 || r.n == 0 || l.n+r.n != b.size {
			continue
		}
		l.n += r.n
		r.n = 0
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = b.left
		}
		t.spmBigram(sc, text, l.prev, b.left)
		t.spmBigram(sc, text, b.left, l.next)
	}
	for i := int32(0); i >= 0; i = syms[i].next {
		s := syms[i]
		piece := text[s.start : s.start+s.n]
		if id, ok := t.ids[string(piece)]; ok {
			dst = append(dst, id)
			continue
		}
		// Merged symbols are always tokens, so this is a single character
		// the vocabulary lacks: fall back to its bytes.
		for _, c := range piece {
			if id := t.byteTok[c]; id >= 0 {
				dst = append(dst, id)
			} else if t.unk >= 0 {
				dst = append(dst, t.unk)
			}
		}
	}
	return dst
}

func (t *Tokenizer) spmBigram(sc *spmScratch, text []byte, left, right int32) {
	if left < 0 || right < 0 {
		return
	}
	l, r := sc.syms[left], sc.syms[right]
	id, ok := t.ids[string(text[l.start:l.start+l.n+r.n])]
	if !ok {
		return
	}
	sc.push(spmBigram{score: t.scores[id], left: left, right: right, size: l.n + r.n})
}
