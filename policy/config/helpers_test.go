package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Files every test configuration may refer to, relative to the fixture
// directory. Key files are not parsed by this package, so they hold text.
var fixtureFiles = map[string]string{
	"keys.yaml":           "keys: []\n",
	"jwt/batch.pem":       "-----BEGIN PUBLIC KEY-----\nnot parsed here\n-----END PUBLIC KEY-----\n",
	"jwt/empty.pem":       "",
	"jwt/partner.secret":  strings.Repeat("s", 32) + "\n",   // exactly long enough for HS256
	"jwt/crlf.secret":     strings.Repeat("s", 32) + "\r\n", // ditto, Windows editor
	"jwt/short.secret":    strings.Repeat("s", 31) + "\n",   // one byte short
	"jwt/hs512.secret":    strings.Repeat("s", 64),          // enough for HS512
	"jwt/hs384.secret":    strings.Repeat("s", 47) + "\n\n", // only one newline is trimmed: 48 bytes
	"tls/server.crt":      "certificate",
	"tls/server.key":      "private key",
	"tls/clients-ca.crt":  "client CA",
	"policies/authz.rego": "package modelguard.authz\n",
	"lists/threats.txt":   "203.0.113.0/24\n",
	"bundle/token":        "bundle-token\n",
	"bundle/ca.crt":       "bundle service CA",
	"bundle/signing.pem":  "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
}

// fixture returns a fresh directory holding fixtureFiles and an empty
// audit/ directory.
func fixture(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range fixtureFiles {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "audit"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// doc joins lines so that a test can count them: lines[i] is line i+1.
func doc(lines ...string) string { return strings.Join(lines, "\n") + "\n" }

// parse parses text as "config.yaml" in a fresh fixture directory.
func parse(t *testing.T, text string) (*Config, error) {
	t.Helper()
	return Parse([]byte(text), "config.yaml", fixture(t))
}

// mustParse is parse for configurations that must be valid.
func mustParse(t *testing.T, text string) *Config {
	t.Helper()
	c, err := parse(t, text)
	if err != nil {
		t.Fatalf("Parse: %v\n--- config:\n%s", err, text)
	}
	return c
}

// withoutDir replaces dir with "DIR" in err's message, so that expected
// messages can name files in a temporary directory.
func withoutDir(err error, dir string) error {
	if err == nil {
		return nil
	}
	return errors.New(strings.ReplaceAll(err.Error(), dir, "DIR"))
}

// checkLines fails unless err has exactly len(want) lines, line i starting
// with want[i] (typically "config.yaml:LINE: path: reason").
func checkLines(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %q", want)
	}
	got := strings.Split(err.Error(), "\n")
	if len(got) != len(want) {
		t.Fatalf("got %d error lines, want %d:\n%v\nwant prefixes:\n%s", len(got), len(want), err, strings.Join(want, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("error line %d:\n got  %s\n want %s...", i+1, got[i], want[i])
		}
	}
}
