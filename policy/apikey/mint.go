package apikey

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// DefaultPrefix starts keys made by Mint when no prefix is given. A fixed
// prefix lets secret scanners and people recognise a leaked key.
const DefaultPrefix = "mg_"

const (
	base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	// bodyLen base62 digits carry 256 bits (43 * log2(62) > 256).
	bodyLen        = 43
	maxPrefixBytes = 32
)

// Mint returns a new random key: prefix (DefaultPrefix when empty) followed by
// 43 base62 characters from crypto/rand, 256 bits of entropy. Base62 keeps the
// key one word for double-click selection and safe in headers and URLs. The
// prefix may hold ASCII letters, digits, '_' and '-', at most 32 bytes.
func Mint(prefix string) (string, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if err := checkPrefix(prefix); err != nil {
		return "", fmt.Errorf("mint api key: %w", err)
	}
	key := make([]byte, len(prefix), len(prefix)+bodyLen)
	copy(key, prefix)
	var buf [64]byte
	for len(key) < cap(key) {
		if _, err := rand.Read(buf[:]); err != nil {
			return "", fmt.Errorf("mint api key: %w", err)
		}
		for _, c := range buf {
			// 248 = 4*62: dropping larger bytes keeps every digit equally likely.
			if c >= 248 {
				continue
			}
			key = append(key, base62[c%62])
			if len(key) == cap(key) {
				break
			}
		}
	}
	return string(key), nil
}

func checkPrefix(p string) error {
	if len(p) > maxPrefixBytes {
		return fmt.Errorf("prefix longer than %d bytes", maxPrefixBytes)
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; !isAlnum(c) && c != '_' && c != '-' {
			return fmt.Errorf("prefix %q: use ASCII letters, digits, _ and -", p)
		}
	}
	return nil
}

// Hash returns the form a key is stored in: "sha256:" and the lowercase hex
// SHA-256 of the whole key, prefix included.
func Hash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hashPrefix + hex.EncodeToString(sum[:])
}

// CheckEntry reports whether Load would accept an entry with these values,
// so that a CLI can refuse them before printing a key that cannot be used.
func CheckEntry(id, subject string, roles []string) error {
	if msg := checkID(id); msg != "" {
		return fmt.Errorf("id: %s", msg)
	}
	if msg := checkSubject(subject); msg != "" {
		return fmt.Errorf("subject: %s", msg)
	}
	for _, r := range roles {
		if msg := checkRole(r); msg != "" {
			return fmt.Errorf("role %q: %s", r, msg)
		}
	}
	return nil
}

// Entry returns the key file entry for a key, indented to go under "keys:".
// It holds the key's hash, never the key. Values are quoted as YAML needs;
// CheckEntry tells whether Load will accept them.
func Entry(id, subject string, roles []string, key string) string {
	if roles == nil {
		roles = []string{} // "roles: []" rather than "roles: null"
	}
	entry := []struct {
		ID      string   `yaml:"id"`
		Hash    string   `yaml:"hash"`
		Subject string   `yaml:"subject"`
		Roles   []string `yaml:"roles,flow"`
	}{{ID: id, Hash: Hash(key), Subject: subject, Roles: roles}}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(entry); err != nil {
		// Encoding strings cannot fail; a failure is a bug in the encoder.
		panic(fmt.Sprintf("apikey: encode entry: %v", err))
	}
	if err := enc.Close(); err != nil {
		panic(fmt.Sprintf("apikey: encode entry: %v", err))
	}
	var out strings.Builder
	for line := range strings.Lines(buf.String()) {
		out.WriteString("  ")
		out.WriteString(line)
	}
	return out.String()
}
