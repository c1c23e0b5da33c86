package apikey

import (
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
