# blendrag — common tasks. Run `make test` before sending a change.

GO   ?= go
DATA ?= ./data
BIN  := bin/blendrag

.PHONY: build models test run fmt

## build: the CLI as a static binary in bin/blendrag (no CUDA, no cgo)
build:
	CGO_ENABLED=0 $(GO) build -o $(BIN) ./cmd/blendrag

## models: download and verify the default models (no-op when present)
models:
	$(GO) run ./cmd/blendrag model pull

## test: vet and run every test (the tests need the models)
test: models
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 25m ./...

## run: until the HTTP server lands (the product issue), a streamed demo completion
run: models build
	$(BIN) generate --chat --stats --prompt "$(or $(PROMPT),What is retrieval-augmented generation?)"

## fmt: gofmt every package
fmt:
	$(GO) fmt ./...
