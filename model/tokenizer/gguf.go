package tokenizer

import (
	"errors"
	"fmt"
	"math"

	"github.com/blendrag/blendrag/model/gguf"
)

// GGUF metadata keys read by FromGGUF.
const (
	KeyModel          = "tokenizer.ggml.model"
	KeyPre            = "tokenizer.ggml.pre"
	KeyTokens         = "tokenizer.ggml.tokens"
	KeyTokenType      = "tokenizer.ggml.token_type"
	KeyScores         = "tokenizer.ggml.scores"
	KeyMerges         = "tokenizer.ggml.merges"
	KeyBOS            = "tokenizer.ggml.bos_token_id"
	KeyEOS            = "tokenizer.ggml.eos_token_id"
	KeyEOT            = "tokenizer.ggml.eot_token_id"
	KeyUNK            = "tokenizer.ggml.unknown_token_id"
	KeyPAD            = "tokenizer.ggml.padding_token_id"
	KeyAddBOS         = "tokenizer.ggml.add_bos_token"
	KeyAddEOS         = "tokenizer.ggml.add_eos_token"
	KeyAddSpacePrefix = "tokenizer.ggml.add_space_prefix"
	KeyChatTemplate   = "tokenizer.chat_template"
)

// ConfigFromGGUF reads the tokenizer.* metadata of f into a Config, applying
// llama.cpp's defaults (llama_vocab::impl::load) for absent keys: "llama"
// vocabularies default to BOS 1, EOS 2, UNK 0, a space prefix and AddBOS;
// "gpt2" ones to BOS = EOS = 11, no space prefix, and AddBOS only for the
// Llama 3 pre-tokenizers. A special id at or past the vocabulary size is
// ignored (the default stays), as llama.cpp does.
func ConfigFromGGUF(f *gguf.File) (Config, error) {
	var c Config
	var ok bool
	if c.Model, ok = f.String(KeyModel); !ok {
		return c, fmt.Errorf("tokenizer: missing or non-string %s", KeyModel)
	}
	c.Pre, _ = f.String(KeyPre)
	if c.Tokens, ok = f.Strings(KeyTokens); !ok {
		return c, fmt.Errorf("tokenizer: missing or non-string-array %s", KeyTokens)
	}
	n := len(c.Tokens)
	if types, ok := f.Ints(KeyTokenType); ok {
		if len(types) < n {
			return c, fmt.Errorf("tokenizer: %s has %d entries for %d tokens", KeyTokenType, len(types), n)
		}
		c.Types = make([]int32, n)
		for i := range c.Types {
			c.Types[i] = int32(types[i])
		}
	} else if _, present := f.Value(KeyTokenType); present {
		return c, fmt.Errorf("tokenizer: %s is not an integer array", KeyTokenType)
	}
	if scores, ok := f.Floats(KeyScores); ok {
		if len(scores) < n {
			return c, fmt.Errorf("tokenizer: %s has %d entries for %d tokens", KeyScores, len(scores), n)
		}
		c.Scores = make([]float32, n)
		for i := range c.Scores {
			c.Scores[i] = float32(scores[i])
		}
	} else if iscores, ok := f.Ints(KeyScores); ok { // llama.cpp also accepts int32 scores
		if len(iscores) < n {
			return c, fmt.Errorf("tokenizer: %s has %d entries for %d tokens", KeyScores, len(iscores), n)
		}
		c.Scores = make([]float32, n)
		for i := range c.Scores {
			c.Scores[i] = float32(iscores[i])
		}
	} else if _, present := f.Value(KeyScores); present {
		return c, fmt.Errorf("tokenizer: %s is not a numeric array", KeyScores)
	}
	c.BOS, c.EOS, c.UNK, c.PAD, c.EOT = -1, -1, -1, -1, -1
	switch c.Model {
	case "llama":
		c.BOS, c.EOS, c.UNK = 1, 2, 0
		c.AddSpacePrefix, c.AddBOS = true, true
	case "gpt2":
		if c.Merges, ok = f.Strings(KeyMerges); !ok {
			return c, fmt.Errorf("tokenizer: missing or non-string-array %s", KeyMerges)
		}
		c.BOS, c.EOS = 11, 11
		if p, ok := resolvePre(c.Pre); ok {
			c.AddBOS = p.addBOS
		}
	}
	for _, sp := range []struct {
		key string
		dst *int32
	}{{KeyBOS, &c.BOS}, {KeyEOS, &c.EOS}, {KeyEOT, &c.EOT}, {KeyUNK, &c.UNK}, {KeyPAD, &c.PAD}} {
		if *sp.dst >= int32(n) {
			*sp.dst = -1
		}
		if id, ok := f.Uint(sp.key); ok && id < uint64(n) && id <= math.MaxInt32 {
			*sp.dst = int32(id)
		}
	}
	for _, b := range []struct {
		key string
		dst *bool
	}{{KeyAddBOS, &c.AddBOS}, {KeyAddEOS, &c.AddEOS}, {KeyAddSpacePrefix, &c.AddSpacePrefix}} {
		if v, ok := f.Bool(b.key); ok {
			*b.dst = v
		}
	}
	c.ChatTemplate, _ = f.String(KeyChatTemplate)
	return c, nil
}

// FromGGUF builds the tokenizer described by f's tokenizer.* metadata.
func FromGGUF(f *gguf.File) (*Tokenizer, error) {
	if f == nil {
		return nil, errors.New("tokenizer: nil GGUF file")
	}
	c, err := ConfigFromGGUF(f)
	if err != nil {
		return nil, err
	}
	return New(c)
}

// Load opens the GGUF file at path, builds its tokenizer and closes the file.
func Load(path string) (*Tokenizer, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	defer f.Close()
	return FromGGUF(f)
}
