// Package cur searches chunks by an expensive cross-encoder approximated
// with a CUR decomposition (ANNCUR: Yadav et al., "Efficient Nearest
// Neighbor Search for Cross-Encoder Models using Matrix Factorization",
// EMNLP 2022).
//
// The index keeps k_q anchor queries and the matrix R = CE(anchor queries ×
// all chunks), k_q × N, one column per chunk, computed when the chunk is
// added. A search scores the question against k_i anchor chunks I with the
// real cross-encoder, c = CE(q, I), and approximates the score of every
// chunk as ŝ = c · pinv(W) · R where W = R[:, I]. It returns the top k_r
// chunks by ŝ, optionally reranked exactly: k_i (+ k_r) cross-encoder calls
// instead of N. When k_i ≥ k_q and W has full row rank, W·pinv(W) = I, so
// an anchor query's ŝ reproduces its row of R exactly.
//
// Anchor chunks are drawn per query: k_i distinct live chunks chosen at
// random by a generator seeded with (Options.Seed, a hash of the question),
// so a question always meets the same anchors in the same index state, and
// different questions spread over the corpus.
//
// Anchor queries come from SampleAnchors (pseudo-questions cut from corpus
// text) and are replaced one at a time by real user questions through
// ObserveQuestion, oldest anchor first.
package cur
