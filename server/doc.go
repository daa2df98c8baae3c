// Package server will hold Service — the application core that wires
// ingest, the document catalog, search and query — and the echo v4 HTTP
// layer over it (handlers, server-sent events, auth, limits). The CLI uses
// Service directly for local work. It does not compute tensors.
//
// Not built yet: see the retrieval, KV store and product issues.
package server
