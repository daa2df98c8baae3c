package blend

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/blendrag/blendrag/model/tokenizer"
)

// FormatVersion versions the segment format below (P's text, the chunk and
// question separators). Changing any of it must change FormatVersion: chunk
// KV stored under one format is never served under another (Format.Key).
const FormatVersion = "seg1"

// Default prompt texts of the shared prefix P.
const (
	DefaultSystem      = "You are a helpful assistant. Answer the question using only the passages you are given. Be brief."
	DefaultInstruction = "Read the passages below and answer the question that follows them."
)

// Separators between segments (DESIGN.md "The prompt as segments").
const (
	ChunkSeparator    = "\n\n"
	QuestionSeparator = "\n\nQuestion: "
)

// Format turns a question and chunk texts into segments, each tokenized on
// its own:
//
//	P  = BOS + chat template(system, start of the user turn) + instruction
//	Ci = "\n\n" + chunk text
//	Q  = "\n\nQuestion: " + question + end of the user turn + assistant header
//
// P is the same for every question, so every chunk's KV is computed once
// after it.
type Format struct {
	tok            *tokenizer.Tokenizer
	prefix         []int32
	prefixText     string
	questionSuffix string // end of the user turn + assistant header
}

// NewFormat builds the segment format for the model's tokenizer and chat
// template; empty system or instruction take the defaults.
func NewFormat(tok *tokenizer.Tokenizer, system, instruction string) (*Format, error) {
	if system == "" {
		system = DefaultSystem
	}
	if instruction == "" {
		instruction = DefaultInstruction
	}
	// Render the template around a marker in the user turn and cut there:
	// what precedes it starts P, what follows it ends Q.
	const marker = "\x00BLENDRAG-USER\x00"
	full := tok.Template().Render([]tokenizer.Message{
		{Role: "system", Content: system},
		{Role: "user", Content: marker},
	}, true)
	before, after, ok := strings.Cut(full, marker)
	if !ok {
		return nil, fmt.Errorf("blend: chat template lost the user message")
	}
	f := &Format{tok: tok, prefixText: before + instruction, questionSuffix: after}
	if tok.AddBOS() {
		f.prefix = append(f.prefix, tok.BOS())
	}
	f.prefix = tok.AppendEncode(f.prefix, f.prefixText, true)
	return f, nil
}

// Prefix returns P's tokens (shared; do not modify).
func (f *Format) Prefix() []int32 { return f.prefix }

// Chunk returns the tokens of a chunk segment: "\n\n" + text, special
// tokens not parsed (document text is data).
func (f *Format) Chunk(text string) []int32 {
	return f.tok.Encode(ChunkSeparator+text, false)
}

// Question returns the tokens of the question segment: the question as
// data, then the template's end of user turn and assistant header.
func (f *Format) Question(q string) []int32 {
	ids := f.tok.Encode(QuestionSeparator+q, false)
	return f.tok.AppendEncode(ids, f.questionSuffix, true)
}

// Segments builds the segments of one prompt.
func (f *Format) Segments(question string, chunks []string) Segments {
	seg := Segments{Prefix: f.prefix, Question: f.Question(question)}
	for _, c := range chunks {
		seg.Chunks = append(seg.Chunks, f.Chunk(c))
	}
	return seg
}

// Key identifies the format for the KV store: FormatVersion and a hash of
// P's tokens. Chunk KV depends on both (and on nothing after the chunk).
func (f *Format) Key() string {
	h := sha256.New()
	var b [4]byte
	for _, id := range f.prefix {
		binary.LittleEndian.PutUint32(b[:], uint32(id))
		h.Write(b[:])
	}
	return FormatVersion + "-" + hex.EncodeToString(h.Sum(nil))[:16]
}
