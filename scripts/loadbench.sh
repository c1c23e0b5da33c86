#!/bin/sh
# Load comparison of "make bench": builds modelguard and the load driver,
# installs ghz v0.121.0 if missing, then runs test/loadbench (a no-op
# ext_authz server and modelguard under the same ghz load, each pinned to
# its own CPU). Arguments are passed to test/loadbench (-duration 20s ...).
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
