package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary configuration files to the loader: it never
// panics, every refusal reads "file:line: path: reason" (or at least starts
// with the file name, one line per problem), and an accepted file validates
// again without errors.
func FuzzParse(f *testing.F) {
	example, err := os.ReadFile("example.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	for _, s := range []string{
		"", "server: {}\n", "server:\n  grpc_address: 127.0.0.1:0\n  max_message_bytes: -1\n",
		"authorization:\n  timeout: 1h\n", "models:\n  - {name: a, operation: chat, paths: ['/x/{model}']}\n",
		"server: &a {}\nlog: *a\n", "audit:\n  output: audit.jsonl\n  on_full: maybe\n",
		"server:\n  shutdown_grace: 10\n", "unknown: 1\n", "- 1\n", "a: b: c\n", "server:\n\tx: 1\n",
		"models:\n  - name: a\n    operation: custom\n    paths: ['/{model}/{model}']\n",
		"request_body:\n  max_bytes: 99999999999999999999\n", "---\n---\n",
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "policy"), 0o755); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "fuzz.yaml", dir)
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "fuzz.yaml") {
					t.Fatalf("%q: error line %q does not name the file", data, line)
				}
			}
			return
		}
		if errs := c.validate(); len(errs) > 0 {
			t.Fatalf("%q: accepted, but validating again fails: %v", data, errs)
		}
	})
}
