// Package gguf reads and writes GGUF files (versions 2 and 3): the metadata
// key/value pairs, the tensor directory, and the tensor data, which Open maps
// into memory rather than copying. Every count, size and offset read from a
// file is checked against the file's length before it is used, so a malformed
// or hostile file yields an error naming the problem, never a panic or a huge
// allocation.
//
// Reading: Open (or Parse for bytes already in memory) gives a File; its
// typed accessors (String, Uint, Float, Strings, Ints, ...) return ok=false
// for a missing or mistyped key; Tensors and Tensor give the directory and
// Data a tensor's bytes. Writing: a Writer assembles a version 3 file from
// typed Values and raw tensor bytes, for tests and tools.
package gguf
