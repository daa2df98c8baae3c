// Package kvstore keeps chunk KV caches in Badger: each chunk's keys and
// values, computed once at ingest (the chunk prefilled on its own after the
// shared prefix P), encoded with a codec and read back layer by layer while
// the model computes. It knows model shapes (rows × KV dimension per layer),
// not model internals.
//
// # Layout
//
// Every Badger key is a tag byte, the store format version and the
// length-prefixed model fingerprint, segment (segment format version + hash
// of P's tokens), codec and chunk content hash; a layer key adds the layer
// number. Per chunk there is one metadata record (tag 'm': rows, KV
// dimension, positions, tokens, and each layer value's length and CRC-32C,
// itself checksummed), one value per layer (tag 'l': a header with the
// codec, shape and a CRC-32C of header and payload, then K and V encoded),
// and a last-use time (tag 'u'). A key under another model, P, codec or
// format version is a different key, so stale KV is never served.
//
// # Integrity
//
// Put writes the layer values first and the metadata record last, after
// deleting the old record; a value is served only when its length and
// checksum match both its header and the record. A crash mid-Put therefore
// leaves either no record (Open deletes the orphaned layers) or a record its
// layers do not match. A value that is corrupt, truncated or missing makes
// Get and the Loader return an error wrapping ErrCorrupt (a *ChunkError
// naming the chunks) and deletes the chunk, so the caller recomputes it and
// puts it again. A Loader reads from one Badger snapshot, so a concurrent
// Put of the same chunk never mixes layers of two versions.
//
// # Disk budget
//
// Options.DiskBudget bounds the bytes of stored chunk KV (records and
// values; default half the free disk at Open). Beyond it Put evicts the
// least recently used chunks; an evicted chunk is simply missing. Last-use
// times live in memory, are persisted at Close and rebuilt at Open (a chunk
// whose time was not persisted counts as used when it was put). Values over
// Badger's value threshold (1 MiB: chunks over ~1,300 tokens in fp16, ~2,600 in int8) live
// in the value log, which a background pass garbage-collects.
//
// # Codecs
//
// See Codec: int8 with per-channel K and per-token V scales (the default:
// see DefaultCodec for the rule and the measurement that chose it), fp16,
// and 4-bit groups of 32 or 64 with a binary16 minimum and step; f32 is
// exact, for tests. `blendrag bench kvcodecs` measures bytes per token,
// reconstruction error and the KL of next-token distributions under reuse and
// CacheBlend fusion for each.
package kvstore
