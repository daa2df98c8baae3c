// Package model is blendrag's transformer engine: it loads a Llama-family
// GGUF (weights stay quantized and memory-mapped), runs the decoder forward
// pass, and owns the KV cache type (KV), sampling and the one decode loop.
//
// The forward pass is exposed in pieces so that fusion code can drive it
// layer by layer: a Pass holds the rows under computation; QKV computes their
// fresh keys and values, WriteKV stores them into a KV, Keep narrows the rows
// to a subset, and AttendMLP finishes the layer. Forward and Recompute are the
// plain compositions of those steps. See forward.go for the whole pass, top
// to bottom, with shapes.
//
// Subpackages: gguf (the file format), tokenizer (BPE tokenizers and chat
// templates from GGUF metadata), fetch (downloading the default models).
package model
