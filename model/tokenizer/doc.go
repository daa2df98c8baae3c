// Package tokenizer turns text into token ids and back for the generator
// models, configured entirely from GGUF metadata: GPT-2 style byte-level BPE
// with the pre-tokenizer named by tokenizer.ggml.pre, SentencePiece-style BPE
// (Llama 2, Mistral), special tokens, and the chat template.
//
// The reference is llama.cpp (llama-vocab.cpp, unicode.cpp, llama-chat.cpp):
// Encode, Decode, Piece, the special ids and the end-of-generation set agree
// with llama_tokenize, llama_detokenize, llama_token_to_piece and
// llama_vocab_is_eog token for token. The pre-tokenizer regular expressions
// are implemented as hand-written scanners (Go's regexp has no look-ahead),
// transcribed from llama.cpp's own hand-written versions. testdata holds
// golden outputs produced by llama-cpp-python (testdata/make_golden.py) for
// SmolLM2's vocabulary and two small committed vocabularies.
//
// Typical use:
//
//	tok, err := tokenizer.Load(path) // or FromGGUF(f), or New(Config{...})
//	prompt := tok.Template().Render(msgs, true)
//	ids := tok.Encode(prompt, true) // parse "<|im_start|>" etc. as tokens
//	if tok.AddBOS() {
//		ids = append([]int32{tok.BOS()}, ids...)
//	}
//	d := tok.NewDecoder()
//	for _, id := range generated {
//		if tok.IsEOG(id) {
//			break
//		}
//		fmt.Print(d.Add(id))
//	}
//	fmt.Print(d.Flush())
package tokenizer
