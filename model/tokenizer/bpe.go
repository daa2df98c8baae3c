package tokenizer

import (
	"fmt"
	"strings"
)

// Byte-level BPE (GPT-2): every byte of the text is first replaced by a
// printable stand-in code point, so merges and tokens never contain raw
// bytes; decoding maps the stand-ins back.

// byteLevelTable returns GPT-2's bytes_to_unicode: printable Latin-1 bytes
// ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves, the other 68 bytes for
// U+0100 onwards in byte order.
func byteLevelTable() (enc [256]rune) {
	keep := func(b int) bool {
		return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)
	}
	n := 0
	for b := 0; b < 256; b++ {
		if keep(b) {
			enc[b] = rune(b)
		} else {
			enc[b] = rune(256 + n)
			n++
		}
	}
	return enc
}

// initBPE builds the byte tables and the merge table. Symbols are numbered
// like tokens (a token's symbol id is its token id); a merge operand or
// result that is not in the vocabulary gets an id past the vocabulary.
func (t *Tokenizer) initBPE(merges []string) error {
	if len(merges) == 0 {
		return fmt.Errorf("tokenizer: %q model without merges", "gpt2")
	}
	extra := map[string]int32{}
	intern := func(s string) int32 {
		if id, ok := t.ids[s]; ok {
			return id
		}
		if id, ok := extra[s]; ok {
			return id
		}
		id := int32(len(t.tokens) + len(t.extraSyms))
		t.extraSyms = append(t.extraSyms, s)
		extra[s] = id
		return id
	}
	t.byteDec = make(map[rune]byte, 256)
	for b, r := range byteLevelTable() {
		t.byteEnc[b] = string(r)
		t.byteDec[r] = byte(b)
		t.byteSym[b] = intern(t.byteEnc[b])
	}
	t.merges = newMergeTable(len(merges))
	for i, m := range merges {
		// llama.cpp splits at the first space after the first byte; a line
		// without one becomes the pair ("", "").
		var left, right string
		if j := strings.IndexByte(m[min(1, len(m)):], ' '); j >= 0 {
			j += min(1, len(m))
			left, right = m[:j], m[j+1:]
		}
		l, r := intern(left), intern(right)
		if _, ok := t.merges.get(l, r); ok { // the first rank wins, as with std::map::emplace
			continue
		}
		t.merges.put(l, r, mergeRule{rank: int32(i), result: intern(left + right)})
	}
	return nil
}

// decodeByteLevel maps a token's stand-in code points back to bytes, as
// llama.cpp's llama_decode_text (including its marker for a code point that
// is not a stand-in).
func (t *Tokenizer) decodeByteLevel(text string) string {
	out := make([]byte, 0, len(text))
	for _, r := range text {
		if b, ok := t.byteDec[r]; ok {
			out = append(out, b)
			continue
		}
		u := string(r)
		out = append(out, "[UNK_BYTE_0x"...)
		for i := 0; i < len(u); i++ {
			out = fmt.Appendf(out, "%02x", u[i])
		}
		out = append(out, text...)
		out = append(out, ']')
	}
	return string(out)
}

// bpeSymbol is a run of bytes of the current word, linked to its neighbours.
type bpeSymbol struct {
	prev, next int32
	start, n   int32 // bytes of the word
	id         int32 // symbol id
}

// bigram is a candidate merge of two adjacent symbols.
type bigram struct {
	rank        int32
	left, right int32 // symbol indices
	lid, rid    int32 // their symbol ids when queued; a stale entry differs
	result      int32
}

// bpeScratch is reused across the words of one Encode call.
type bpeScratch struct {
	cpts  []rune
	flags []cptFlags
	segs  [2][]int
	syms  []bpeSymbol
	ranks []int32
	heap  []bigram
	enc   []byte
}

// bigramLess orders the queue: lowest rank first, then leftmost.
func bigramLess(a, b *bigram) bool {
	return a.rank < b.rank || (a.rank == b.rank && a.left < b.left)
}

func (sc *bpeScratch) push(b bigram) {
	h := append(sc.heap, b)
	i := len(h) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !bigramLess(&h[i], &h[p]) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
	sc.heap = h
}

func (sc *bpeScratch) pop() bigram {
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
		if r := l + 1; r < len(h) && bigramLess(&h[r], &h[l]) {
			m = r
		}
		if !bigramLess(&h[m], &h[i]) {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	sc.heap = h
	return top
}

// encodeBPE pre-tokenizes one text fragment and appends the BPE tokens of each
// word (llm_tokenizer_bpe_session::tokenize).
func (t *Tokenizer) encodeBPE(dst []int32, text string, sc *bpeScratch) []int32 {
	text, sc.cpts = decodeLikeLlama(text, sc.cpts)
	if cap(sc.flags) < len(sc.cpts) {
		sc.flags = make([]cptFlags, len(sc.cpts))
	}
	sc.flags = sc.flags[:len(sc.cpts)]
	for i, r := range sc.cpts {
		sc.flags[i] = classify(r)
	}
	segs := append(sc.segs[0][:0], len(sc.cpts))
	other := sc.segs[1][:0]
	for _, split := range t.pre.splits {
		other = split(sc.cpts, sc.flags, segs, other[:0])
		segs, other = other, segs
	}
	sc.segs[0], sc.segs[1] = segs, other
	// Walk the words, converting code point lengths to byte offsets.
	off, ci := 0, 0
	for _, n := range segs {
		end := off
		for k := 0; k < n; k++ {
			end += cptLen(sc.cpts[ci])
			ci++
		}
		dst = t.bpeWord(dst, text[off:end], sc)
		off = end
	}
	return dst
}

// bpeWord merges the bytes of one word by merge rank and appends its tokens.
func (t *Tokenizer) bpeWord(dst []int32, word string, sc *bpeScratch) []int32 {
	if len(word) == 0 {
		return dst
	}
	if t.pre.ignoreMerges {
		sc.enc = sc.enc[:0]
		for i := 0; i < len(word); i++ {
			sc.enc = append(sc.enc, t.byteEnc[word[i]]...)
		}
		if id, ok := t.ids[string(sc.enc)]; ok {
			return append(dst, id)
		}
	}
	if len(word) == 1 {
		return t.emitSymbol(dst, t.byteSym[word[0]], word, sc)
	}
	syms := sc.syms[:0]
	for i := 0; i < len(word); i++ {
		syms = append(syms, bpeSymbol{prev: int32(i - 1), next: int32(i + 1), start: int32(i), n: 1, id: t.byteSym[word[i]]})
	}
	syms[len(syms)-1].next = -1
	sc.syms = syms
	if len(word) <= linearMax {
		t.mergeLinear(sc)
	} else {
		t.mergeHeap(sc)
	}
	for i := int32(0); i >= 0; i = syms[i].next {
		s := syms[i]
		dst = t.emitSymbol(dst, s.id, word[s.start:s.start+s.n], sc)
	}
	return dst
}

// linearMax is the longest word merged by scanning rather than with a heap.
const linearMax = 32

// mergeLinear applies merges to sc.syms by repeatedly scanning for the
// adjacent pair with the lowest rank, leftmost on ties. That is the order in
// which llama.cpp's priority queue (mergeHeap) applies them, since its queue
// orders by (rank, left position) and skips outdated pairs; for short words
// a scan beats the queue.
func (t *Tokenizer) mergeLinear(sc *bpeScratch) {
	syms := sc.syms
	ranks := sc.ranks[:0]
	for i := range syms {
		r := int32(noMerge)
		if i+1 < len(syms) {
			if m, ok := t.merges.get(syms[i].id, syms[i+1].id); ok {
				r = m.rank
			}
		}
		ranks = append(ranks, r)
	}
	sc.ranks = ranks
	pairRank := func(i int32) int32 {
		j := syms[i].next
		if j < 0 {
			return noMerge
		}
		if m, ok := t.merges.get(syms[i].id, syms[j].id); ok {
			return m.rank
		}
		return noMerge
	}
	for {
		best, bestRank := int32(-1), int32(noMerge)
		for i := int32(0); i >= 0; i = syms[i].next {
			if ranks[i] < bestRank {
				best, bestRank = i, ranks[i]
			}
		}
		if best < 0 {
			return
		}
		l := &syms[best]
		r := &syms[l.next]
		m, _ := t.merges.get(l.id, r.id)
		l.id = m.result
		l.n += r.n
		r.n = 0
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = best
		}
		ranks[best] = pairRank(best)
		if l.prev >= 0 {
			ranks[l.prev] = pairRank(l.prev)
		}
	}
}

const noMerge = 1<<31 - 1

// mergeHeap applies merges to sc.syms as llama.cpp does, with a priority
// queue of candidate pairs ordered by (rank, left position); pairs made
// outdated by an earlier merge are skipped when popped.
func (t *Tokenizer) mergeHeap(sc *bpeScratch) {
	syms := sc.syms
	sc.heap = sc.heap[:0]
	for i := 1; i < len(syms); i++ {
		t.addBigram(sc, int32(i-1), int32(i))
	}
	for len(sc.heap) > 0 {
		b := sc.pop()
		l, r := &syms[b.left], &syms[b.right]
		if l.n == 0 || r.n == 0 || l.id != b.lid || r.id != b.rid {
			continue // outdated
		}
		l.n += r.n
		l.id = b.result
		r.n = 0
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = b.left
		}
		t.addBigram(sc, l.prev, b.left)
		t.addBigram(sc, b.left, l.next)
	}
}

func (t *Tokenizer) addBigram(sc *bpeScratch, left, right int32) {
	if left < 0 || right < 0 {
		return
	}
	lid, rid := sc.syms[left].id, sc.syms[right].id
	m, ok := t.merges.get(lid, rid)
	if !ok {
		return
	}
	sc.push(bigram{rank: m.rank, left: left, right: right, lid: lid, rid: rid, result: m.result})
}

// emitSymbol appends the token of a finished symbol. A symbol that is not a
// token is handled as llama.cpp does: each byte of its stand-in text is looked
// up as a one-byte token, and bytes that are not tokens are dropped.
func (t *Tokenizer) emitSymbol(dst []int32, id int32, raw string, sc *bpeScratch) []int32 {
	if int(id) < len(t.tokens) {
		return append(dst, id)
	}
	sc.enc = sc.enc[:0]
	for i := 0; i < len(raw); i++ {
		sc.enc = append(sc.enc, t.byteEnc[raw[i]]...)
	}
	for _, c := range sc.enc {
		if tok, ok := t.ids[string([]byte{c})]; ok {
			dst = append(dst, tok)
		}
	}
	return dst
}

// mergeTable maps a pair of symbol ids to its merge rule: an open-addressing
// hash table with linear probing, built once and read-only afterwards (about
// twice as fast as a Go map for this, the innermost lookup of encoding).
type mergeTable struct {
	slots []mergeSlot
	shift uint
}

type mergeSlot struct {
	key  uint64 // emptyKey when unused
	rule mergeRule
}

const emptyKey = ^uint64(0)

func newMergeTable(n int) mergeTable {
	size, shift := 16, uint(60)
	for size < 2*n {
		size *= 2
		shift--
	}
	slots := make([]mergeSlot, size)
	for i := range slots {
		slots[i].key = emptyKey
	}
	return mergeTable{slots: slots, shift: shift}
}

func pairKey(l, r int32) uint64 { return uint64(uint32(l))<<32 | uint64(uint32(r)) }

func (m *mergeTable) home(key uint64) int {
	return int((key * 0x9E3779B97F4A7C15) >> m.shift)
}

func (m *mergeTable) get(l, r int32) (mergeRule, bool) {
	key := pairKey(l, r)
	mask := len(m.slots) - 1
	for i := m.home(key); ; i = (i + 1) & mask {
		s := &m.slots[i]
		if s.key == key {
			return s.rule, true
		}
		if s.key == emptyKey {
			return mergeRule{}, false
		}
	}
}

// put inserts a pair that is not yet present; the table never fills past
// half, so probing always ends.
func (m *mergeTable) put(l, r int32, rule mergeRule) {
	key := pairKey(l, r)
	mask := len(m.slots) - 1
	i := m.home(key)
	for m.slots[i].key != emptyKey {
		i = (i + 1) & mask
	}
	m.slots[i] = mergeSlot{key: key, rule: rule}
}
