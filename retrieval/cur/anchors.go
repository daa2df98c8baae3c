package cur

import (
	"math/rand/v2"
	"strings"
	"unicode"
)

// Pseudo-question windows are cut to between minAnchorWords and
// maxAnchorWords words: the length of a typical user question.
const (
	minAnchorWords = 4
	maxAnchorWords = 12
)

// SampleAnchors builds up to n distinct short pseudo-questions from corpus
// text, deterministically for a given seed: it visits the texts in a random
// order and from each takes one random sentence of at least minAnchorWords
// words, cut to a random window of at most maxAnchorWords words, ending in
// "?". It makes further passes over the texts (other sentences, other
// windows) while it has fewer than n and keeps finding new ones; it returns
// fewer than n when the texts hold too few distinct windows.
func SampleAnchors(texts []string, n int, seed int64) []string {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x616e63686f7273))
	seen := map[string]bool{}
	var out []string
	var sentences [][]string
	for pass := 0; pass < 8 && len(out) < n; pass++ {
		found := false
		for _, t := range rng.Perm(len(texts)) {
			if len(out) >= n {
				break
			}
			sentences = splitSentences(texts[t], sentences[:0])
			if len(sentences) == 0 {
				continue
			}
			words := sentences[rng.IntN(len(sentences))]
			w := min(len(words), minAnchorWords+rng.IntN(maxAnchorWords-minAnchorWords+1))
			start := rng.IntN(len(words) - w + 1)
			q := strings.Join(words[start:start+w], " ") + "?"
			key := strings.ToLower(q)
			if seen[key] {
				continue
			}
			seen[key] = true
			out = append(out, q)
			found = true
		}
		if !found {
			break
		}
	}
	return out
}

// splitSentences splits text at '.', '!', '?' and line breaks into
// sentences of at least minAnchorWords words, each a list of words with
// surrounding punctuation trimmed.
func splitSentences(text string, dst [][]string) [][]string {
	isEnd := func(r rune) bool { return r == '.' || r == '!' || r == '?' || r == '\n' }
	for _, s := range strings.FieldsFunc(text, isEnd) {
		var words []string
		for _, w := range strings.Fields(s) {
			w = strings.TrimFunc(w, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) })
			if w != "" {
				words = append(words, w)
			}
		}
		if len(words) >= minAnchorWords {
			dst = append(dst, words)
		}
	}
	return dst
}
