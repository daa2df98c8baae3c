// Package vector is a persistent dense-vector index keyed by string ids.
//
// Search returns the ids whose vectors have the largest dot product with the
// query (the cosine similarity for unit vectors, as MiniLM embeddings are).
// Below a size threshold the Index searches exactly: one contiguous float32
// matrix scanned with kernels.Dot, split across worker goroutines, with a
// top-k heap. Above it the Index switches to HNSW (Malkov & Yashunin,
// "Efficient and robust approximate nearest neighbor search using
// Hierarchical Navigable Small World graphs"), implemented here from the
// paper: a multi-layer graph, exponentially distributed levels, the
// heuristic neighbour selection of the paper's Algorithm 4, a result set of
// size max(ef, k), and tombstone deletes whose neighbours are reconnected.
//
// Exact and HNSW are exported on their own for tests and benchmarks; Index
// wraps them with persistence and a sync.RWMutex so that searches run
// concurrently while Add, Delete and Save take the write lock.
package vector
