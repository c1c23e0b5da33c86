#!/bin/sh
# Load comparison of "make bench": builds modelguard and the load driver,
# installs ghz v0.121.0 if missing, then runs test/loadbench: a no-op
# ext_authz server and modelguard under the same ghz load (-c 50, 4
# connections, the same CheckRequest bytes), the servers pinned to CPU 0
# and ghz to CPU 1. It measures in rounds (each: both servers back to back
# on each workload, the order alternating, every run after a warm-up), then
# at a fixed rate of half the no-op's median throughput, and prints the
# medians of the per-round ratios with their range, each server's CPU time
# per call, and whether ghz or the server limited each run.
#
# Arguments are passed to test/loadbench: -rounds 5 -duration 5s
# -warmup 2s -ghz-env 'GOGC=off GOMEMLIMIT=1GiB' are the defaults.
set -eu
GO=${GO:-go}
GHZ_VERSION=v0.121.0
cd "$(dirname "$0")/.."

ghz=$("$GO" env GOPATH)/bin/ghz
# "ghz --version" says "dev" when built by go install: ask the binary's
# build information instead.
if ! "$GO" version -m "$ghz" 2>/dev/null | grep -Eq "mod[[:space:]]+github.com/bojand/ghz[[:space:]]+$GHZ_VERSION"; then
	echo "installing ghz $GHZ_VERSION" >&2
	"$GO" install "github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION"
fi
command -v taskset >/dev/null || { echo "loadbench needs taskset (util-linux)" >&2; exit 1; }

mkdir -p bin
"$GO" build -trimpath -o bin/modelguard ./cmd/modelguard
"$GO" build -trimpath -o bin/loadbench ./test/loadbench
exec bin/loadbench -modelguard "$PWD/bin/modelguard" -ghz "$ghz" "$@"
