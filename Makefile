# blendrag — common tasks. Run `make test` before sending a change.

GO   ?= go
DATA ?= ./data
ADDR ?= 127.0.0.1:8080
BIN  := bin/blendrag

.PHONY: build models test run fmt

## build: the CLI as a static binary in bin/blendrag (no CUDA, no cgo)
build:
	CGO_ENABLED=0 $(GO) build -o $(BIN) ./cmd/blendrag

## models: download and verify the default models (no-op when present)
models:
	$(GO) run ./cmd/blendrag model pull

## test: vet and run every test (the tests need the models), then every CUDA
## test (kernel parity, the model's and blend's parity with the CPU, the
## default model's logits, the server, bench and eval on the device) in the
## CPU emulation of the kernels (cgo, g++ ≥ 11; no GPU needed)
test: models
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 25m ./...
	CGO_ENABLED=1 $(GO) vet -tags cudaemu ./kernels/cuda/ ./model/ ./blend/ ./cmd/blendrag/ ./server/
	CGO_ENABLED=1 $(GO) test -count=1 -timeout 10m -tags cudaemu ./kernels/cuda/
	CGO_ENABLED=1 BLENDRAG_CUDAEMU_FULL=1 $(GO) test -count=1 -timeout 15m -tags cudaemu -run 'CUDA|Profile' ./model/ ./blend/ ./cmd/blendrag/ ./server/

## run: serve the API and the web UI on $(ADDR) over the store in $(DATA)
run: models build
	$(BIN) serve --data $(DATA) --addr $(ADDR)

## fmt: gofmt every package
fmt:
	$(GO) fmt ./...
