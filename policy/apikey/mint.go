package apikey

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
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

// CheckLine reports whether a line-format key file would accept an entry
// with these values: CheckEntry's rules, and no whitespace in the subject,
// which separates the fields of a line.
func CheckLine(id, subject string, roles []string) error {
	if err := CheckEntry(id, subject, roles); err != nil {
		return err
	}
	if strings.ContainsAny(subject, " \t") {
		return errors.New("subject: whitespace cannot be written in a one-line key file (use a YAML key file)")
	}
	return nil
}

// Line returns the line-format entry for a key, newline included. It holds
// the key's hash, never the key; CheckLine tells whether Load will accept it.
func Line(id, subject string, roles []string, key string) string {
	var b strings.Builder
	b.WriteString(Hash(key))
	b.WriteByte(' ')
	b.WriteString(id)
	b.WriteByte(' ')
	b.WriteString(subject)
	if len(roles) > 0 {
		b.WriteString(" roles=")
		b.WriteString(strings.Join(roles, ","))
	}
	b.WriteByte('\n')
	return b.String()
}

// AppendLine appends line to the line-format key file at path, creating it
// (mode 0600) if needed, after checking that the file with the line loads:
// an id or key already in the file, or a file that is already broken, is
// refused before anything is written. The line is written with one append,
// so a Store reading the file meanwhile sees it whole or not at all (and
// refuses a cut-off last line).
func AppendLine(path, line string) error {
	if isYAML(path) {
		return fmt.Errorf("%s: a YAML key file is edited by hand; append lines to a one-line key file (any name but *.yaml, *.yml)", path)
	}
	if !strings.HasSuffix(line, "\n") || strings.Count(line, "\n") != 1 {
		return errors.New("append key line: want exactly one line ending in a newline")
	}
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read key file: %w", err)
	}
	if _, err := Parse(path, append(old, line...)); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("append to key file: %w", err)
	}
	if _, err := f.WriteString(line); err != nil {
		f.Close()
		return fmt.Errorf("append to key file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("append to key file: %w", err)
	}
	return nil
}
