// Package kvstore will keep chunk KV caches in Badger: keys, codecs (fp16,
// int8, 4-bit), layer-wise streaming reads, a disk budget with eviction, and
// integrity checks. It knows model shapes, not model internals.
//
// Not built yet: see the KV store issue.
package kvstore
