GO ?= go
export PATH := $(PATH):/usr/local/go/bin
# The toolchain line of go.mod decides (a Go release with no known
# vulnerability reachable from modelguard); Go downloads it once.
export GOTOOLCHAIN := auto

.PHONY: build run test vet vulncheck bench clean

## build: write the modelguard binary to bin/
build:
	$(GO) build -trimpath -o bin/modelguard ./cmd/modelguard

## run: start the ext_authz server on the embedded demo configuration
run: build
	bin/modelguard serve

## test: formatting, vet, known vulnerabilities, and every test (Go and Rego,
## with the fuzz targets' seed corpora) under the race detector; test/'s
## end-to-end tests outlast go test's default 10m timeout on a loaded machine
test: vet vulncheck
	$(GO) test -race -count=1 -timeout 30m ./...

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...

# govulncheck reads a vulnerability database built locally from the pinned
# golang.org/x/vulndb module (its data/osv entries, indexed by the module's
# own indexdb command), so the check runs offline once the modules are
# cached and never depends on vuln.go.dev. Bump VULNDB_VERSION (go list -m
# golang.org/x/vulndb@latest) to pick up new entries.
VULN_VERSION := v1.9.0
VULNDB_VERSION := v0.0.0-20261105234957-e22db6528018
VULNDB := $(CURDIR)/build/vulndb-$(VULNDB_VERSION)

## vulncheck: govulncheck; fails on any vulnerability reachable from the code
vulncheck: $(VULNDB)/index/db.json
	$(GO) run golang.org/x/vuln/cmd/govulncheck@$(VULN_VERSION) -db file://$(VULNDB) ./...

$(VULNDB)/index/db.json:
	src=$$($(GO) mod download -json golang.org/x/vulndb@$(VULNDB_VERSION) | sed -n 's/^\t"Dir": "\(.*\)",$$/\1/p') && \
	rm -rf $(VULNDB).tmp && \
	$(GO) run golang.org/x/vulndb/cmd/indexdb@$(VULNDB_VERSION) -vulns "$$src/data/osv" -out $(VULNDB).tmp && \
	rm -rf $(VULNDB) && mv $(VULNDB).tmp $(VULNDB)

## bench: Go benchmarks of the decision path, then the load comparison with
## a no-op ext_authz server (scripts/loadbench.sh: ghz, one CPU each)
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./policy/... ./extauthz/...
	$(GO) test -run '^$$' -bench CheckGRPC -benchmem ./test/
	GO=$(GO) scripts/loadbench.sh

clean:
	rm -rf bin build
