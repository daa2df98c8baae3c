// Package blend fuses cached chunk KV into one context and decodes from it.
//
// A prompt is a list of segments (see Segments): a shared prefix P, chunk
// segments C1…Cn each tokenized and prefilled on its own after P
// (EncodeChunk, what the KV store keeps), and the question Q. Prefill builds
// the context for decoding in one of five modes:
//
//	full        prefill every segment, P included, from nothing (the reference)
//	prefix      reuse P's KV; prefill the chunks and Q
//	reuse       concatenate the cached chunk KV, each RoPE-shifted to its place; prefill only Q
//	cacheblend  reuse plus selective recomputation of the rows whose values deviate most (CacheBlend)
//	ape         chunks at shared positions after P; Q attends with per-group temperature and scale (APE)
//
// Cached chunk KV comes from a Source one layer at a time, requested right
// before the layer is computed, so a streaming source (see Prefetch) reads
// layer l+1 while layer l computes. Generate decodes from a Result.
//
// The package must not import retrieval or server.
package blend
