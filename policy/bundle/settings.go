package bundle

import (
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"time"

	"github.com/open-policy-agent/opa/v1/keys"

	"github.com/modelguard/modelguard/policy/field"
)

// Settings configure a bundle source: the authorization.bundle section.
type Settings struct {
	// URL is the bundle service's base URL (https; http only for
	// loopback). Set: the policy comes from this service.
	URL string `yaml:"url"`
	// Resource is the bundle's path under URL. Default
	// bundles/bundle.tar.gz.
	Resource string `yaml:"resource"`
	// BearerTokenFile, when set, holds a token sent as
	// "Authorization: Bearer <token>", read on every request (rotations apply).
	BearerTokenFile string `yaml:"bearer_token_file"`
	// CACertFile, when set, is the PEM bundle of CAs the service's
	// certificate must chain to (instead of the system's).
	CACertFile string  `yaml:"ca_cert_file"`
	Polling    Polling `yaml:"polling"`
	Signing    Signing `yaml:"signing"`
	// PersistDir, when set, keeps the last good bundle (written atomically
	// after it is activated) so that a restart serves it while the
	// service is down. Created if missing.
	PersistDir string `yaml:"persist_dir"`
}

// Polling paces the downloads (OPA's polling settings, in whole seconds).
type Polling struct {
	// MinDelay and MaxDelay bound the wait between downloads (a random
	// delay in between); default 60s and 120s, as OPA's.
	MinDelay time.Duration `yaml:"min_delay"`
	MaxDelay time.Duration `yaml:"max_delay"`
	// LongPollingTimeout, when positive, asks the service to hold each
	// request up to this long until the bundle changes (only servers that
	// answer with content-type application/vnd.openpolicyagent.bundles do;
	// others are polled). Default 0: off.
	LongPollingTimeout time.Duration `yaml:"long_polling_timeout"`
}

// Signing requires bundles signed with a key (OPA's bundle signatures:
// .signatures.json). Set PublicKeyFile to require it.
type Signing struct {
	// PublicKeyFile is the PEM public key (or, for HS256/384/512, the
	// shared secret) bundles must be signed with.
	PublicKeyFile string `yaml:"public_key_file"`
	// Algorithm is the signing algorithm; default RS256.
	Algorithm string `yaml:"algorithm"`
	// KeyID names the key as OPA's keys configuration does; as in OPA,
	// the configured key verifies every bundle, whatever key id its
	// signature carries. Default "default".
	KeyID string `yaml:"key_id"`
}

// Defaults and limits.
const (
	DefaultResource  = "bundles/bundle.tar.gz"
	DefaultMinDelay  = 60 * time.Second
	DefaultMaxDelay  = 120 * time.Second
	DefaultAlgorithm = "RS256"
	DefaultKeyID     = "default"
	maxDelay         = 24 * time.Hour
)

// DefaultSettings returns the value every absent key takes.
func DefaultSettings() Settings {
	return Settings{
		Resource: DefaultResource,
		Polling:  Polling{MinDelay: DefaultMinDelay, MaxDelay: DefaultMaxDelay},
		Signing:  Signing{Algorithm: DefaultAlgorithm, KeyID: DefaultKeyID},
	}
}

// Configured reports whether s names a bundle service.
func (s Settings) Configured() bool { return s.URL != "" }

// OrDefaults gives zero fields their defaults, for settings built in code.
func (s Settings) OrDefaults() Settings {
	def := DefaultSettings()
	if s.Resource == "" {
		s.Resource = def.Resource
	}
	if s.Polling.MinDelay == 0 {
		s.Polling.MinDelay = def.Polling.MinDelay
	}
	if s.Polling.MaxDelay == 0 {
		s.Polling.MaxDelay = max(def.Polling.MaxDelay, s.Polling.MinDelay)
	}
	if s.Signing.Algorithm == "" {
		s.Signing.Algorithm = def.Signing.Algorithm
	}
	if s.Signing.KeyID == "" {
		s.Signing.KeyID = def.Signing.KeyID
	}
	return s
}

// Validate checks configured settings; files resolve against baseDir. The
// errors are *field.Error relative to the section ("polling.min_delay").
func (s Settings) Validate(baseDir string) []error {
	var errs field.List
	if err := field.CheckHTTPSURL(s.URL, "use bearer_token_file", "the policy would travel unauthenticated"); err != nil {
		errs = append(errs, &field.Error{Path: "url", Err: err})
	}
	if s.Resource == "" {
		errs.Addf("resource", "required: the bundle's path under url")
	}
	for _, f := range []struct{ path, file string }{
		{"bearer_token_file", s.BearerTokenFile},
		{"ca_cert_file", s.CACertFile},
	} {
		if f.file != "" {
			if err := field.CheckFile(Resolve(f.file, baseDir)); err != nil {
				errs = append(errs, &field.Error{Path: f.path, Err: err})
			}
		}
	}
	p := s.Polling
	wholeSeconds(&errs, "polling.min_delay", p.MinDelay, time.Second)
	wholeSeconds(&errs, "polling.max_delay", p.MaxDelay, time.Second)
	if p.MaxDelay < p.MinDelay {
		errs.Addf("polling.max_delay", "smaller than polling.min_delay (%v)", p.MinDelay)
	}
	if p.LongPollingTimeout != 0 {
		wholeSeconds(&errs, "polling.long_polling_timeout", p.LongPollingTimeout, time.Second)
	}
	if s.Signing.PublicKeyFile != "" {
		if err := checkKey(Resolve(s.Signing.PublicKeyFile, baseDir), s.Signing.Algorithm); err != nil {
			errs = append(errs, &field.Error{Path: "signing.public_key_file", Err: err})
		}
	}
	if !keys.IsSupportedAlgorithm(s.Signing.Algorithm) {
		errs.Addf("signing.algorithm", "%q is not supported: use one of RS256/384/512, PS256/384/512, ES256/384/512 or HS256/384/512", s.Signing.Algorithm)
	}
	if s.Signing.KeyID == "" {
		errs.Addf("signing.key_id", "must not be empty")
	}
	if d := s.PersistDir; d != "" {
		if st, err := os.Stat(Resolve(d, baseDir)); err == nil && !st.IsDir() {
			errs.Addf("persist_dir", "%s is not a directory", Resolve(d, baseDir))
		}
	}
	return errs
}

// wholeSeconds adds an error unless d is a whole number of seconds between
// lo and a day: OPA's downloader counts in seconds.
func wholeSeconds(errs *field.List, path string, d, lo time.Duration) {
	switch {
	case d < lo || d > maxDelay:
		errs.Addf(path, "must be between %v and %v, got %v", lo, maxDelay, d)
	case d%time.Second != 0:
		errs.Addf(path, "must be a whole number of seconds, got %v", d)
	}
}

// checkKey checks that the key file can be read and, for the public key
// algorithms, holds a PEM block: a mistyped path or a pasted private key
// fails at start rather than at the first bundle.
func checkKey(path, alg string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if len(data) == 0 {
		return errors.New("empty key file")
	}
	if alg != "" && alg[0] == 'H' {
		return nil // a shared secret
	}
	b, _ := pem.Decode(data)
	switch {
	case b == nil:
		return errors.New("no PEM block: want the public key bundles are signed with")
	case b.Type != "PUBLIC KEY" && b.Type != "RSA PUBLIC KEY" && b.Type != "CERTIFICATE":
		return errors.New("PEM block is " + b.Type + ", want a PUBLIC KEY")
	}
	return nil
}

// Resolve joins a relative path to baseDir.
func Resolve(p, baseDir string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(baseDir, p)
}
