package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/modelguard/modelguard/examples"
	"github.com/modelguard/modelguard/policy/apikey"
	"github.com/modelguard/modelguard/policy/config"
)

// demoSetup is the embedded demo written to a temporary directory: files
// there reload live, so the user can edit the policy while it runs.
type demoSetup struct {
	dir       string
	cfg       *config.Config
	token     string // RS256 JWT for alice, role chat-user
	readerKey string // API key for bob, role reader
	trialKey  string // API key for tess, role trial (3 requests an hour)
}

const demoIssuer, demoAudience = "https://demo.modelguard.local", "modelguard-demo"

func newDemo() (*demoSetup, error) {
	dir, err := os.MkdirTemp("", "modelguard-demo-")
	if err != nil {
		return nil, err
	}
	d := &demoSetup{dir: dir}
	if err := d.write(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return d, nil
}

// demoFiles maps the files the demo writes, relative to its directory, to
// their embedded source ("" for those generated at each run).
func demoFiles() (map[string]string, error) {
	files := map[string]string{"demo-jwt.pub": "", "keys.yaml": ""}
	err := fs.WalkDir(examples.Demo, ".", func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		dst := p
		if p == "demo.yaml" {
			dst = "config.yaml"
		}
		files[filepath.FromSlash(dst)] = p
		return nil
	})
	return files, err
}

// writeNew creates a file that must not exist yet: init never overwrites.
func writeNew(path string, data []byte, perm os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	return errors.Join(err, f.Close())
}

func (d *demoSetup) write() error {
	files, err := demoFiles()
	if err != nil {
		return fmt.Errorf("write demo files: %w", err)
	}
	for dst, src := range files {
		if src == "" {
			continue
		}
		b, err := examples.Demo.ReadFile(src)
		if err != nil {
			return err
		}
		if err := writeNew(filepath.Join(d.dir, dst), b, 0o644); err != nil {
			return fmt.Errorf("write demo files: %w", err)
		}
	}

	// A fresh signing key per run: no private key is ever committed.
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		return err
	}
	if err := writeNew(filepath.Join(d.dir, "demo-jwt.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644); err != nil {
		return err
	}
	now := time.Now()
	d.token, err = jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"iss": demoIssuer, "aud": demoAudience, "sub": "alice", "roles": []string{"chat-user"},
		"iat": now.Unix(), "exp": now.Add(24 * time.Hour).Unix(),
	}).SignedString(priv)
	if err != nil {
		return err
	}

	if d.readerKey, err = apikey.Mint("mg_demo_"); err != nil {
		return err
	}
	if d.trialKey, err = apikey.Mint("mg_demo_"); err != nil {
		return err
	}
	keyFile := "keys:\n" + apikey.Entry("bob-reader", "bob", []string{"reader"}, d.readerKey) +
		apikey.Entry("tess-trial", "tess", []string{"trial"}, d.trialKey)
	if err := writeNew(filepath.Join(d.dir, "keys.yaml"), []byte(keyFile), 0o600); err != nil {
		return err
	}
	d.cfg, err = config.Load(filepath.Join(d.dir, "config.yaml"))
	return err
}

func (d *demoSetup) printIntro(w io.Writer, addr, admin string) {
	self := os.Args[0]
	chat := `'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}'`
	fmt.Fprintf(w, `
modelguard demo: ext_authz gRPC on %[1]s, metrics on http://%[7]s/metrics
Configuration, policy and keys: %[2]s (edit policy/data.yaml or keys.yaml: changes apply live)
Audit records go to stdout (alone: "modelguard audit verify" checks it), this and the logs to stderr.
Try, in another terminal:

  # ALLOW: alice's JWT (role chat-user) may chat with gpt-4o-mini
  %[3]s check -server %[1]s -H 'authorization: Bearer %[4]s' -d %[6]s POST /v1/chat/completions

  # DENY 403: bob's API key has the read-only role (a GET /v1/models with it is allowed)
  %[3]s check -server %[1]s -H 'authorization: Bearer %[5]s' -d %[6]s POST /v1/chat/completions

  # DENY 401: no credential
  %[3]s check -server %[1]s -d %[6]s POST /v1/chat/completions

  # DENY 429 the 4th time: tess's key is in the trial tier, 3 requests an hour
  for i in 1 2 3 4; do %[3]s check -server %[1]s -H 'x-api-key: %[8]s' -d %[6]s POST /v1/chat/completions; done

`, addr, d.dir, self, d.token, d.readerKey, chat, admin, d.trialKey)
}
