// Package demo sets up what tests that run a whole modelguard (an engine, a
// plugin, a child "modelguard serve") start from: a directory holding the
// demo configuration and example policy, API keys minted for the test, and
// the configuration lines those tests share.
//
// Like testkit, it is for tests only (TestImportedByTestsOnly). It is a
// package of its own because it imports policy/apikey, whose tests import
// testkit.
package demo

import (
	"os"
	"strings"
	"testing"

	"github.com/modelguard/modelguard/examples"
	"github.com/modelguard/modelguard/policy/apikey"
	"github.com/modelguard/modelguard/test/testkit"
)

// Config is the configuration most tests start from: API keys from
// keys.yaml, then Policy. Tests append the sections they need (server,
// audit, rate_limits).
const Config = `authentication:
  api_keys: {file: keys.yaml}
` + Policy

// Policy is Config without its authentication section, for tests that
// configure more credentials: the example policy with a generous
// evaluation timeout (so a slow race-detector run is not a policy_error)
// and gpt-4o-mini as a chat model.
const Policy = `authorization:
  policy_dir: policy
  query: data.modelguard.authz.decision
  timeout: 2s
models:
  - {name: gpt-4o-mini, operation: chat}
`

// Dir copies the demo configuration and the example policy into a new
// temporary directory and returns it.
func Dir(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	if err := os.CopyFS(dir, examples.Demo); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// Key is one API key to mint.
type Key struct {
	ID, Subject string
	Roles       []string
}

// Alice is the key most tests use: a caller the example policy lets chat.
var Alice = Key{ID: "alice-key", Subject: "alice", Roles: []string{"chat-user"}}

// WriteKeys mints a key with prefix for each of keys, writes them to
// dir/keys.yaml and returns the plaintext keys by id.
func WriteKeys(tb testing.TB, dir, prefix string, keys ...Key) map[string]string {
	tb.Helper()
	plain := make(map[string]string, len(keys))
	var b strings.Builder
	b.WriteString("keys:\n")
	for _, k := range keys {
		key, err := apikey.Mint(prefix)
		if err != nil {
			tb.Fatal(err)
		}
		plain[k.ID] = key
		b.WriteString(apikey.Entry(k.ID, k.Subject, k.Roles, key))
	}
	testkit.WriteFile(tb, dir, "keys.yaml", b.String())
	return plain
}
