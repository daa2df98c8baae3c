// Package server holds Service — the application core that wires ingest
// (parse, chunk, BM25 + dense + CUR, chunk KV precompute), the document
// catalog, search and question answering — and the echo v4 HTTP layer over
// it (NewHTTP: REST routes, server-sent events, an OpenAI-compatible chat
// route, metrics, auth and limits). The CLI uses Service directly for local
// work (--data DIR) and the HTTP layer for blendrag serve. It does not
// compute tensors: blend and model do.
package server
