package main

import (
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
)

const initUsage = `Usage:
  modelguard init DIR

Writes a starter configuration into DIR (created if missing): config.yaml,
the example RBAC policy (policy/), a key file with two fresh API keys
(keys.yaml, holding only their hashes) and the public key of a fresh
signing key for JWTs (demo-jwt.pub), as "modelguard serve" does for its
demo. The keys and a sample JWT are printed once. Existing files are
never overwritten: init refuses if any of them is already there.
`

func initCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), initUsage) }
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	if fs.NArg() != 1 {
		return usageError(fs, "want one directory, got %d arguments", fs.NArg())
	}
	dir := fs.Arg(0)
	files, err := demoFiles()
	if err != nil {
		fmt.Fprintf(stderr, "modelguard init: %v\n", err)
		return 1
	}
	// Refuse before writing anything, so that a refusal leaves DIR as it was.
	var existing []string
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			existing = append(existing, name)
		}
	}
	if len(existing) > 0 {
		fmt.Fprintf(stderr, "modelguard init: %s already holds %v: nothing written (init never overwrites; pick an empty directory)\n", dir, existing)
		return 1
	}
	d := &demoSetup{dir: dir}
	if err := d.write(); err != nil {
		fmt.Fprintf(stderr, "modelguard init: %v\n", err)
		return 1
	}
	d.printInit(stdout, os.Args[0])
	return 0
}

// printInit tells what init wrote and how to try it without a server.
func (d *demoSetup) printInit(w io.Writer, self string) {
	cfg := filepath.Join(d.dir, "config.yaml")
	chat := `'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}'`
	fmt.Fprintf(w, `Wrote %[1]s: config.yaml, policy/ (authz.rego, its tests, data.yaml), keys.yaml, demo-jwt.pub.

Shown once, store them now:
  API key of bob (role reader):     %[2]s
  API key of tess (role trial):     %[3]s
  JWT of alice (role chat-user, issuer %[4]s, valid 24 h; its signing key was not kept):
    %[5]s

Try it without a server:
  %[6]s check -config %[7]s -H 'authorization: Bearer %[5]s' -d %[8]s POST /v1/chat/completions
  %[6]s check -config %[7]s -H 'x-api-key: %[2]s' GET /v1/models

Serve it: %[6]s serve -config %[7]s
Then replace demo-jwt.pub and the issuer with yours, and mint keys with
"%[6]s keys mint".
`, d.dir, d.readerKey, d.trialKey, demoIssuer, d.token, self, cfg, chat)
}
