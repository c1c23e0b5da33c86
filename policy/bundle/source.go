// Package bundle delivers policies from an OPA bundle service with OPA's
// own packages: v1/download polls (with ETags, and long polling where the
// service supports it), v1/bundle reads and verifies signed bundles
// (.signatures.json) and v1/plugins/rest is the HTTP client. Each bundle
// that arrives is handed to the caller to activate; one it refuses, or one
// that cannot be read or verified, changes nothing. The last activated
// bundle is persisted (atomically) and read again at the next start, so a
// restart works while the service is down.
package bundle

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	opabundle "github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/download"
	"github.com/open-policy-agent/opa/v1/keys"
	"github.com/open-policy-agent/opa/v1/logging"
	"github.com/open-policy-agent/opa/v1/plugins/rest"
)

// persistName is the last good bundle's file in the persist directory.
const persistName = "bundle.tar.gz"

// Update is a bundle read and verified, ready to activate.
type Update struct {
	Bundle *opabundle.Bundle
	// Revision is the short hex SHA-256 of the bundle file: two bundles
	// with the same manifest revision but other content differ here.
	Revision string
	// Persisted is set for the bundle read from the persist directory at
	// start.
	Persisted bool
}

// FetchError is a failure to reach the service or a refusal by it (an
// HTTP error status): no bundle was read.
type FetchError struct{ Err error }

func (e *FetchError) Error() string { return "bundle service: " + e.Err.Error() }
func (e *FetchError) Unwrap() error { return e.Err }

// Options connect a Source to its caller.
type Options struct {
	Logger *slog.Logger
	// Activate compiles and swaps in a verified bundle; an error refuses
	// it, and a refused bundle is not persisted. Calls never overlap.
	Activate func(ctx context.Context, u Update) error
	// OnFailure is told of every bundle that could not be read or
	// verified (a tampered or unsigned bundle when signing is configured),
	// and, as a *FetchError, of every failed download. Called from the
	// goroutine that calls Activate.
	OnFailure func(err error)
}

// Start activates the persisted bundle, if there is one and it still
// verifies, then downloads from the service until ctx ends. Only settings
// errors (the verification key, the client configuration) fail it; the
// service being down does not.
func Start(ctx context.Context, s Settings, baseDir string, opts Options) error {
	s = s.OrDefaults()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	vc, err := verification(s, baseDir)
	if err != nil {
		return err
	}
	client, err := newClient(s, baseDir)
	if err != nil {
		return err
	}
	src := &source{opts: opts, vc: vc, url: s.URL + "/" + s.Resource}
	if s.PersistDir != "" {
		src.persistDir = Resolve(s.PersistDir, baseDir)
		if err := os.MkdirAll(src.persistDir, 0o700); err != nil {
			return fmt.Errorf("persist_dir: %w", err)
		}
		src.loadPersisted(ctx)
	}
	cfg := download.Config{Polling: download.PollingConfig{
		MinDelaySeconds: seconds(s.Polling.MinDelay),
		MaxDelaySeconds: seconds(s.Polling.MaxDelay),
	}}
	if s.Polling.LongPollingTimeout > 0 {
		cfg.Polling.LongPollingTimeoutSeconds = seconds(s.Polling.LongPollingTimeout)
	}
	if err := cfg.ValidateAndInjectDefaults(); err != nil {
		return fmt.Errorf("polling: %w", err)
	}
	d := download.New(cfg, client, s.Resource).
		WithBundleVerificationConfig(vc).
		WithBundlePersistence(true). // keeps the raw bytes: persisted and hashed
		WithBundleParserOpts(ast.ParserOptions{RegoVersion: ast.RegoV1, ProcessAnnotation: true}).
		WithCallback(src.update)
	d.Start(ctx)
	context.AfterFunc(ctx, func() { d.Stop(context.Background()) })
	return nil
}

// source is one running bundle source.
type source struct {
	opts       Options
	vc         *opabundle.VerificationConfig // nil: signatures not required
	url        string                        // for logs
	persistDir string                        // "" : not persisted
}

// update is the downloader's callback: an error, a new bundle, or nothing
// new (304). Returning an error makes the downloader retry with backoff.
func (s *source) update(ctx context.Context, u download.Update) error {
	if ctx.Err() != nil {
		return nil // stopping: a download cut short is no failure
	}
	if u.Error != nil {
		err := classify(u.Error)
		if _, fetch := errors.AsType[*FetchError](err); fetch {
			s.opts.Logger.Warn("bundle download failed, keeping the running policy", "url", s.url, "error", err)
		} else {
			s.opts.Logger.Error("bundle refused, keeping the running policy", "url", s.url, "error", err)
		}
		s.failed(err)
		return nil // the downloader already retries after an error
	}
	if u.Bundle == nil {
		return nil // not modified
	}
	raw, err := io.ReadAll(u.Raw)
	if err != nil {
		err = fmt.Errorf("bundle %s: %w", s.url, err)
		s.failed(err)
		return err
	}
	rev := revision(raw)
	if err := s.opts.Activate(ctx, Update{Bundle: u.Bundle, Revision: rev}); err != nil {
		return err // the caller logged and counted it
	}
	if s.persistDir != "" {
		if err := writeAtomic(filepath.Join(s.persistDir, persistName), raw); err != nil {
			s.opts.Logger.Error("persisting the bundle failed: a restart while the service is down would serve the previous one", "dir", s.persistDir, "revision", rev, "error", err)
		}
	}
	return nil
}

// loadPersisted activates the last good bundle, verified again: the file
// may have been edited since.
func (s *source) loadPersisted(ctx context.Context) {
	path := filepath.Join(s.persistDir, persistName)
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err == nil {
		var b opabundle.Bundle
		b, err = opabundle.NewCustomReader(opabundle.NewTarballLoaderWithBaseURL(bytes.NewReader(raw), s.url)).
			WithBundleVerificationConfig(s.vc).
			WithRegoVersion(ast.RegoV1).
			WithProcessAnnotations(true).
			Read()
		if err == nil {
			rev := revision(raw)
			s.opts.Logger.Info("activating the persisted bundle", "file", path, "revision", rev)
			// A refusal is logged and counted by the caller.
			_ = s.opts.Activate(ctx, Update{Bundle: &b, Revision: rev, Persisted: true})
			return
		}
	}
	err = fmt.Errorf("persisted bundle %s: %w", path, err)
	s.opts.Logger.Error("persisted bundle refused", "error", err)
	s.failed(err)
}

func (s *source) failed(err error) {
	if s.opts.OnFailure != nil {
		s.opts.OnFailure(err)
	}
}

// classify tells a failed download (network error, HTTP error status) from
// a bundle that could not be read or verified.
func classify(err error) error {
	var httpErr download.HTTPError
	var urlErr *url.Error
	var netErr net.Error
	if errors.As(err, &httpErr) || errors.As(err, &urlErr) || errors.As(err, &netErr) {
		return &FetchError{Err: err}
	}
	return fmt.Errorf("bundle refused: %w", err)
}

// verification returns the signature requirement (nil: none).
func verification(s Settings, baseDir string) (*opabundle.VerificationConfig, error) {
	sg := s.Signing
	if sg.PublicKeyFile == "" {
		return nil, nil
	}
	key, err := os.ReadFile(Resolve(sg.PublicKeyFile, baseDir))
	if err != nil {
		return nil, fmt.Errorf("signing.public_key_file: %w", err)
	}
	ks := map[string]*keys.Config{sg.KeyID: {Key: string(key), Algorithm: sg.Algorithm}}
	vc := opabundle.NewVerificationConfig(ks, sg.KeyID, "", nil)
	if err := vc.ValidateAndInjectDefaults(ks); err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	return vc, nil
}

// newClient builds OPA's REST client from the settings, as OPA's own
// services configuration would.
func newClient(s Settings, baseDir string) (rest.Client, error) {
	cfg := map[string]any{"url": s.URL}
	if s.CACertFile != "" {
		cfg["tls"] = map[string]any{"ca_cert": Resolve(s.CACertFile, baseDir)}
	}
	if s.BearerTokenFile != "" {
		cfg["credentials"] = map[string]any{"bearer": map[string]any{"token_path": Resolve(s.BearerTokenFile, baseDir)}}
	}
	data, err := json.Marshal(cfg)
	if err != nil {
		return rest.Client{}, err
	}
	// OPA's logs would bypass modelguard's; every outcome reaches the
	// callback and is logged there.
	c, err := rest.New(data, nil, rest.Logger(logging.NewNoOpLogger()))
	if err != nil {
		return rest.Client{}, fmt.Errorf("url: %w", err)
	}
	return c, nil
}

func seconds(d time.Duration) *int64 {
	n := int64(d / time.Second)
	return &n
}

// revision is the short hex SHA-256 of a bundle file.
func revision(raw []byte) string {
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:6])
}

// writeAtomic replaces path with data: a crash leaves the old file or the
// new one, never a torn one.
func writeAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*.tmp")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
