package gguf

import (
	"errors"
	"fmt"
)

// Every error that Parse or Open returns for a bad file wraps exactly one of
// these, so callers can tell a file that is not GGUF, a GGUF this package
// cannot read, and a broken GGUF apart with errors.Is. The error text itself
// names the problem and where it is (key, tensor, byte offset).
var (
	// ErrNotGGUF: the file does not start with the magic "GGUF".
	ErrNotGGUF = errors.New("gguf: not a GGUF file")
	// ErrUnsupported: a well-formed GGUF using something this package does
	// not read: version 1 or a version above 3, a big-endian file, or a tensor
	// type outside the set in kernels.
	ErrUnsupported = errors.New("gguf: unsupported GGUF feature")
	// ErrMalformed: the file is truncated or internally inconsistent (a
	// count, length, dimension or offset that does not fit the file,
	// duplicate names, misaligned or overlapping tensor data, ...). The
	// Writer also reports invalid input with it.
	ErrMalformed = errors.New("gguf: malformed GGUF file")
)

// formatError is the concrete error of this package: a message (without the
// "gguf: " prefix) plus the sentinel it wraps.
type formatError struct {
	kind error
	msg  string
}

func (e *formatError) Error() string { return "gguf: " + e.msg }
func (e *formatError) Unwrap() error { return e.kind }

// in prefixes the message with a context such as `tensor "x"`.
func (e *formatError) in(format string, args ...any) *formatError {
	return &formatError{kind: e.kind, msg: fmt.Sprintf(format, args...) + ": " + e.msg}
}

func malformed(format string, args ...any) *formatError {
	return &formatError{kind: ErrMalformed, msg: fmt.Sprintf(format, args...)}
}

func unsupported(format string, args ...any) *formatError {
	return &formatError{kind: ErrUnsupported, msg: fmt.Sprintf(format, args...)}
}
