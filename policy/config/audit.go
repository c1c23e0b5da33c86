package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"time"

	"github.com/modelguard/modelguard/policy/field"
)

// Audit defaults and limits, documented on the Audit fields.
const (
	defaultAuditMaxFileBytes  = 100 << 20
	minAuditFileBytes         = 4096
	defaultAuditFlush         = 100 * time.Millisecond
	defaultAuditQueue         = 10000
	maxAuditQueue             = 1 << 20
	defaultAuditOnFull        = "deny"
	defaultAuditBlockTimeout  = time.Second
	defaultAuditHTTPTimeout   = 10 * time.Second
	defaultAuditSpoolMaxBytes = 1 << 30
	minAuditSpoolBytes        = 1 << 20
	// MinAuditKeyBytes is the shortest audit HMAC key: SHA-256's output size.
	MinAuditKeyBytes = 32
)

func (c *Config) auditDefaults() {
	a := &c.Audit
	orDefault(c, "audit.output", &a.Output, defaultAuditOutput)
	orDefault(c, "audit.max_file_bytes", &a.MaxFileBytes, defaultAuditMaxFileBytes)
	orDefault(c, "audit.flush_interval", &a.FlushInterval, defaultAuditFlush)
	orDefault(c, "audit.queue_size", &a.QueueSize, defaultAuditQueue)
	orDefault(c, "audit.on_full", &a.OnFull, defaultAuditOnFull)
	orDefault(c, "audit.block_timeout", &a.BlockTimeout, defaultAuditBlockTimeout)
	orDefault(c, "audit.http.timeout", &a.HTTP.Timeout, defaultAuditHTTPTimeout)
	orDefault(c, "audit.spool_max_bytes", &a.SpoolMaxBytes, defaultAuditSpoolMaxBytes)
}

// AuditKey returns the audit chain's HMAC key, nil when none is configured.
func (c *Config) AuditKey() ([]byte, error) {
	return c.readSecret(c.Audit.KeyFile, c.Audit.KeyEnv)
}

// AuditToken returns the HTTP endpoint's bearer token, "" when none is
// configured; one trailing newline is not part of it.
func (c *Config) AuditToken() (string, error) {
	b, err := c.readSecret(c.Audit.HTTP.TokenFile, c.Audit.HTTP.TokenEnv)
	return string(b), err
}

func (v *validator) audit(a *Audit) {
	switch a.Output {
	case "stdout", "off":
	case "":
		v.fail("audit.output", `want "stdout", "off" or a file path`)
	default:
		path := v.c.Path(a.Output)
		if st, err := os.Stat(filepath.Dir(path)); err != nil || !st.IsDir() {
			v.fail("audit.output", "directory %s does not exist", filepath.Dir(path))
		} else if st, err := os.Stat(path); err == nil && st.IsDir() {
			v.fail("audit.output", "%s is a directory, want a file", path)
		}
	}
	if a.MaxFileBytes < minAuditFileBytes {
		v.fail("audit.max_file_bytes", "must be at least %d, got %d", minAuditFileBytes, a.MaxFileBytes)
	}
	if a.MaxFiles < 0 {
		v.fail("audit.max_files", "must not be negative (0 keeps every rotated file), got %d", a.MaxFiles)
	}
	v.durationRange("audit.flush_interval", a.FlushInterval, time.Millisecond, 10*time.Second)
	v.intRange("audit.queue_size", a.QueueSize, 1, maxAuditQueue)
	v.oneOf("audit.on_full", a.OnFull, "deny", "block")
	v.durationRange("audit.block_timeout", a.BlockTimeout, time.Millisecond, time.Minute)

	switch {
	case a.KeyFile != "" && a.KeyEnv != "":
		v.fail("audit.key_env", "key_file and key_env are exclusive: set one")
	case a.KeyFile != "" || a.KeyEnv != "":
		p := "audit.key_file"
		if a.KeyEnv != "" {
			p = "audit.key_env"
		}
		if key, err := v.c.AuditKey(); err != nil {
			v.fail(p, "%v", err)
		} else if len(key) < MinAuditKeyBytes {
			v.fail(p, "weak key: %d bytes, need at least %d", len(key), MinAuditKeyBytes)
		}
	}

	h := a.HTTP
	if h.URL == "" {
		if a.SpoolDir != "" {
			v.fail("audit.spool_dir", "only used with audit.http.url")
		}
		if h.TokenFile != "" || h.TokenEnv != "" {
			v.fail("audit.http.url", "required with a token")
		}
		return
	}
	if err := field.CheckHTTPSURL(h.URL, "use token_file or token_env", "audit records name who called what"); err != nil {
		v.fail("audit.http.url", "%v", err)
	}
	v.durationRange("audit.http.timeout", h.Timeout, 100*time.Millisecond, 5*time.Minute)
	switch {
	case h.TokenFile != "" && h.TokenEnv != "":
		v.fail("audit.http.token_env", "token_file and token_env are exclusive: set one")
	case h.TokenFile != "" || h.TokenEnv != "":
		p := "audit.http.token_file"
		if h.TokenEnv != "" {
			p = "audit.http.token_env"
		}
		if tok, err := v.c.AuditToken(); err != nil {
			v.fail(p, "%v", err)
		} else if bytes.ContainsAny([]byte(tok), " \t\r\n") {
			v.fail(p, "the token contains whitespace: it must fit in one header value")
		}
	}
	if a.SpoolDir == "" {
		v.fail("audit.spool_dir", "required with audit.http.url: records wait there until the endpoint takes them")
	} else {
		dir := v.c.Path(a.SpoolDir)
		if st, err := os.Stat(dir); err == nil && !st.IsDir() {
			v.fail("audit.spool_dir", "%s is not a directory", dir)
		} else if err != nil && !errors.Is(err, os.ErrNotExist) {
			v.fail("audit.spool_dir", "%v", err)
		} else if st, err := os.Stat(filepath.Dir(dir)); err != nil || !st.IsDir() {
			v.fail("audit.spool_dir", "directory %s does not exist", filepath.Dir(dir))
		}
		if a.Output != "stdout" && a.Output != "off" && filepath.Dir(v.c.Path(a.Output)) == dir {
			v.fail("audit.spool_dir", "must not be the directory of audit.output")
		}
	}
	if a.SpoolMaxBytes < minAuditSpoolBytes {
		v.fail("audit.spool_max_bytes", "must be at least %d, got %d", minAuditSpoolBytes, a.SpoolMaxBytes)
	}
}

func (v *validator) durationRange(p string, d, lo, hi time.Duration) {
	if d < lo || d > hi {
		v.fail(p, "must be between %v and %v, got %v", lo, hi, d)
	}
}
