package apikey

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMint(t *testing.T) {
	tests := []struct {
		prefix, want string // want: the prefix keys start with
	}{
		{"", DefaultPrefix},
		{"mg_live_", "mg_live_"},
		{"svc-", "svc-"},
		{strings.Repeat("p", maxPrefixBytes), strings.Repeat("p", maxPrefixBytes)},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			const n = 2000
			seen := make(map[string]bool, n)
			chars := make(map[rune]bool)
			for range n {
				key, err := Mint(tt.prefix)
				if err != nil {
					t.Fatalf("Mint(%q): %v", tt.prefix, err)
				}
				body, ok := strings.CutPrefix(key, tt.want)
				if !ok || len(body) != bodyLen {
					t.Fatalf("key %q: want %q and %d characters", key, tt.want, bodyLen)
				}
				for _, c := range body {
					if !strings.ContainsRune(base62, c) {
						t.Fatalf("key %q: %q is not base62", key, c)
					}
					chars[c] = true
				}
				if !wellFormed(key) {
					t.Fatalf("minted key %q is refused as malformed", key)
				}
				if seen[key] {
					t.Fatalf("duplicate key %q", key)
				}
				seen[key] = true
			}
			// 86,000 digits: a missing one means a broken alphabet mapping.
			if len(chars) != len(base62) {
				t.Errorf("keys use %d distinct characters, want all %d", len(chars), len(base62))
			}
		})
	}
}

func TestMintBadPrefix(t *testing.T) {
	for _, p := range []string{"mg live", "mg\n", "mg:", "ключ_", strings.Repeat("p", maxPrefixBytes+1)} {
		if key, err := Mint(p); err == nil {
			t.Errorf("Mint(%q) = %q, want an error", p, key)
		}
	}
}

func TestHash(t *testing.T) {
	tests := []struct{ key, want string }{
		{"test", "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"},
		{"", "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
	}
	for _, tt := range tests {
		if got := Hash(tt.key); got != tt.want {
			t.Errorf("Hash(%q) = %s, want %s", tt.key, got, tt.want)
		}
	}
}

// TestEntryRoundTrip: a minted key, written into a file with Entry, is found
// by Lookup with the same identity, and the file never holds the key.
func TestEntryRoundTrip(t *testing.T) {
	tests := []struct {
		id, subject string
		roles       []string
	}{
		{"alice-laptop", "alice", []string{"chat-user"}},
		{"no-roles", "svc", nil},
		{"quoted", "null", []string{"yes", "123", "true"}},
		{"yaml-special", "team: ml #1", []string{"a:b", "[x]", "&y", "*z"}},
		{"unicode", "Zoë Ünal", []string{"rôle"}},
		{"123", "'quoted' \"subject\"", []string{"r"}},
	}
	var file strings.Builder
	file.WriteString("keys:\n")
	keys := make([]string, len(tests))
	for i, tt := range tests {
		key, err := Mint("")
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = key
		e := Entry(tt.id, tt.subject, tt.roles, key)
		if strings.Contains(e, key[len(DefaultPrefix):]) {
			t.Fatalf("entry holds the key:\n%s", e)
		}
		if !strings.HasPrefix(e, "  - id: ") || !strings.HasSuffix(e, "\n") {
			t.Errorf("entry not ready to paste under keys:\n%s", e)
		}
		file.WriteString(e)
	}
	set, err := Parse("minted.yaml", []byte(file.String()))
	if err != nil {
		t.Fatalf("Parse of Entry output: %v\n%s", err, file.String())
	}
	for i, tt := range tests {
		k, err := set.Lookup(keys[i], time.Now())
		if err != nil {
			t.Errorf("%s: Lookup: %v", tt.id, err)
			continue
		}
		if k.ID != tt.id || k.Subject != tt.subject || strings.Join(k.Roles, "|") != strings.Join(tt.roles, "|") {
			t.Errorf("got %+v, want id %q subject %q roles %q", *k, tt.id, tt.subject, tt.roles)
		}
	}
}

func TestCheckEntry(t *testing.T) {
	tests := []struct {
		id, subject string
		roles       []string
		ok          bool
	}{
		{"alice-laptop", "alice", []string{"chat-user"}, true},
		{"svc.batch@prod:1", "svc", nil, true},
		{"", "alice", nil, false},
		{"alice laptop", "alice", nil, false},
		{"alice", "", nil, false},
		{"alice", " alice", nil, false},
		{"alice", "alice", []string{"a,b"}, false},
		{"alice", "alice", []string{""}, false},
	}
	for _, tt := range tests {
		err := CheckEntry(tt.id, tt.subject, tt.roles)
		if (err == nil) != tt.ok {
			t.Errorf("CheckEntry(%q, %q, %q) = %v, want ok %v", tt.id, tt.subject, tt.roles, err, tt.ok)
			continue
		}
		// CheckEntry must agree with Load on the same values.
		key, err := Mint("")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Parse("k.yaml", []byte("keys:\n"+Entry(tt.id, tt.subject, tt.roles, key))); (err == nil) != tt.ok {
			t.Errorf("Load of the same entry: %v, want ok %v", err, tt.ok)
		}
	}
}

// TestLineRoundTrip: a minted key, written with Line and AppendLine,
// authenticates with its identity; CheckLine agrees with the loader; and
// AppendLine refuses what would break the file, leaving it unchanged.
func TestLineRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.txt")
	tests := []struct {
		id, subject string
		roles       []string
		ok          bool
	}{
		{"alice-laptop", "alice", []string{"chat-user", "reader"}, true},
		{"no-roles", "svc@example.com", nil, true},
		{"unicode", "Zoë", []string{"rôle"}, true},
		{"alice-laptop", "alice", nil, false}, // id in use
		{"spaced", "Zoë Ünal", nil, false},
		{"tabbed", "a\tb", nil, false},
		{"bad id", "alice", nil, false},
		{"a", "s", []string{""}, false},
	}
	tests[6].id = "has space"
	keys := map[string]*Key{}
	for _, tt := range tests {
		key, err := Mint("")
		if err != nil {
			t.Fatal(err)
		}
		before, _ := os.ReadFile(path)
		l := Line(tt.id, tt.subject, tt.roles, key)
		if strings.Contains(l, key[len(DefaultPrefix):]) {
			t.Fatalf("line holds the key: %s", l)
		}
		checked := CheckLine(tt.id, tt.subject, tt.roles)
		err = AppendLine(path, l)
		if (err == nil) != tt.ok {
			t.Fatalf("AppendLine(%q) = %v, want ok %v", l, err, tt.ok)
		}
		if tt.id != "alice-laptop" && (checked == nil) != tt.ok {
			t.Errorf("CheckLine(%q, %q, %q) = %v, want ok %v", tt.id, tt.subject, tt.roles, checked, tt.ok)
		}
		if after, _ := os.ReadFile(path); !tt.ok && string(after) != string(before) {
			t.Fatalf("refused append changed the file")
		}
		if tt.ok {
			keys[key] = &Key{ID: tt.id, Subject: tt.subject, Roles: tt.roles}
		}
	}
	set, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range keys {
		if k, err := set.Lookup(key, time.Now()); err != nil || !sameKey(k, want) {
			t.Errorf("Lookup = %+v, %v; want %+v", k, err, want)
		}
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("created key file: %v, %v; want mode 0600", fi, err)
	}

	yaml := filepath.Join(t.TempDir(), "keys.yaml")
	if err := os.WriteFile(yaml, []byte("keys: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := AppendLine(yaml, Line("a", "s", nil, keyAlice)); err == nil {
		t.Error("AppendLine wrote a line into a YAML file")
	}
	if err := AppendLine(path, "two\nlines\n"); err == nil {
		t.Error("AppendLine took two lines")
	}
}
