// Package blend will fuse cached chunk KV into one context — full, prefix,
// reuse, CacheBlend and APE — run RAPID speculative decoding, and provide the
// KV-cached cross-encoder (satisfying retrieval.CrossEncoder without
// importing retrieval). It must not import retrieval or server.
//
// Not built yet: see the blend and RAPID issues.
package blend
