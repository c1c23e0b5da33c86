GO ?= go
export PATH := $(PATH):/usr/local/go/bin

.PHONY: build run test vet bench clean

## build: write the modelguard binary to bin/
build:
	$(GO) build -trimpath -o bin/modelguard ./cmd/modelguard

## run: start the ext_authz server on the embedded demo configuration
run: build
	bin/modelguard serve

## test: formatting, vet, and every test (Go and Rego) under the race detector
test: vet
	$(GO) test -race -count=1 ./...

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...

## bench: Go benchmarks of the decision path, then the load comparison with
## a no-op ext_authz server (scripts/loadbench.sh: ghz, one CPU each)
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./policy/... ./extauthz/...
	$(GO) test -run '^$$' -bench CheckGRPC -benchmem ./test/
	GO=$(GO) scripts/loadbench.sh

clean:
	rm -rf bin
