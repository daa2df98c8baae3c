// Package retrieval will own document parsing, chunking, BM25 (bleve v2,
// scorch engine), MiniLM embeddings with exact and HNSW vector search, CUR
// cross-encoder search and reciprocal rank fusion. It defines the
// CrossEncoder interface and must not import kvstore or blend.
//
// Not built yet: see the retrieval issue.
package retrieval
