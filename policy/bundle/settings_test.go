package bundle

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("pub.pem", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
	write("priv.pem", "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n")
	write("secret", "a shared secret of some length")
	write("file", "x")
	ok := func(edit func(*Settings)) Settings {
		s := DefaultSettings()
		s.URL = "https://bundles.example.com"
		edit(&s)
		return s
	}
	tests := []struct {
		name string
		s    Settings
		want string // "" valid
	}{
		{"defaults", ok(func(*Settings) {}), ""},
		{"signed", ok(func(s *Settings) { s.Signing.PublicKeyFile = "pub.pem" }), ""},
		{"hmac", ok(func(s *Settings) { s.Signing.PublicKeyFile, s.Signing.Algorithm = "secret", "HS256" }), ""},
		{"loopback http", ok(func(s *Settings) { s.URL = "http://127.0.0.1:8181" }), ""},
		{"long polling", ok(func(s *Settings) { s.Polling.LongPollingTimeout = 30 * time.Second }), ""},
		{"plain http", ok(func(s *Settings) { s.URL = "http://bundles.example.com" }), "url: must use https"},
		{"credentials in the url", ok(func(s *Settings) { s.URL = "https://u:p@bundles.example.com" }), "url: must not carry credentials"},
		{"no resource", ok(func(s *Settings) { s.Resource = "" }), "resource: required"},
		{"max below min", ok(func(s *Settings) { s.Polling.MinDelay = time.Minute; s.Polling.MaxDelay = 30 * time.Second }), "polling.max_delay: smaller than"},
		{"fraction of a second", ok(func(s *Settings) { s.Polling.MinDelay = 1500 * time.Millisecond }), "polling.min_delay: must be a whole number of seconds"},
		{"zero delay", ok(func(s *Settings) { s.Polling.MinDelay = 0 }), "polling.min_delay: must be between"},
		{"long polling under a second", ok(func(s *Settings) { s.Polling.LongPollingTimeout = time.Millisecond }), "polling.long_polling_timeout"},
		{"private key for verification", ok(func(s *Settings) { s.Signing.PublicKeyFile = "priv.pem" }), "signing.public_key_file: PEM block is RSA PRIVATE KEY"},
		{"key not PEM", ok(func(s *Settings) { s.Signing.PublicKeyFile = "secret" }), "signing.public_key_file: no PEM block"},
		{"key missing", ok(func(s *Settings) { s.Signing.PublicKeyFile = "nope.pem" }), "signing.public_key_file: open"},
		{"unknown algorithm", ok(func(s *Settings) { s.Signing.Algorithm = "EdDSA" }), "signing.algorithm: \"EdDSA\" is not supported"},
		{"empty key id", ok(func(s *Settings) { s.Signing.KeyID = "" }), "signing.key_id: must not be empty"},
		{"persist dir is a file", ok(func(s *Settings) { s.PersistDir = "file" }), "persist_dir: " + filepath.Join(dir, "file") + " is not a directory"},
		{"token file missing", ok(func(s *Settings) { s.BearerTokenFile = "nope" }), "bearer_token_file: open"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := errors.Join(tc.s.Validate(dir)...)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}
