package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelguard/modelguard/policy/apikey"
)

// TestKeysMintFile: keys mint -file appends a line that then authenticates
// the printed key, and refuses, without writing, what the file would refuse.
func TestKeysMintFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.txt")
	mint := func(args ...string) (int, string) {
		var out, errOut bytes.Buffer
		code := keys(append([]string{"mint", "-file", path}, args...), &out, &errOut)
		return code, out.String() + errOut.String()
	}
	code, out := mint("-id", "ci-bot", "-subject", "ci", "-roles", "reader, batch")
	if code != 0 {
		t.Fatalf("keys mint = %d:\n%s", code, out)
	}
	key := strings.TrimSpace(strings.Split(out, "\n")[1])
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(data), "\n") != 1 || strings.Contains(string(data), key) {
		t.Fatalf("key file after mint: %q (key %q)", data, key)
	}
	set, err := apikey.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	k, err := set.Lookup(key, time.Now())
	if err != nil || k.ID != "ci-bot" || k.Subject != "ci" || strings.Join(k.Roles, ",") != "reader,batch" {
		t.Fatalf("Lookup of the minted key = %+v, %v", k, err)
	}

	for _, args := range [][]string{
		{"-id", "ci-bot", "-subject", "other"},        // id in use
		{"-id", "spaced", "-subject", "Ada Lovelace"}, // subject a line cannot hold
		{"-id", "has space", "-subject", "ci"},
	} {
		if code, out := mint(args...); code == 0 || strings.Contains(out, "mg_") {
			t.Errorf("keys mint %q = %d, want a refusal and no key:\n%s", args, code, out)
		}
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, data) {
		t.Errorf("refused mints changed the file:\n%s", after)
	}

	yaml := filepath.Join(t.TempDir(), "keys.yaml")
	os.WriteFile(yaml, []byte("keys: []\n"), 0o600)
	var out2 bytes.Buffer
	if code := keys([]string{"mint", "-file", yaml, "-id", "a", "-subject", "s"}, &out2, &out2); code == 0 {
		t.Errorf("keys mint appended to a YAML file:\n%s", out2.String())
	}
}
