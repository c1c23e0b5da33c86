package audit

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"time"

	"github.com/modelguard/modelguard/policy/field"
	"github.com/modelguard/modelguard/policy/secret"
)

// Config is the audit section of the configuration file: one hash-chained
// record per decision and per operator event. DefaultConfig gives the value
// every absent key takes; New builds the Writer it describes.
type Config struct {
	// Output is "stdout" (default), "off", or a file path (appended; relative
	// to the configuration's directory; its directory must exist).
	Output string `yaml:"output"`
	// MaxFileBytes rotates a file output before it would exceed this size;
	// default 104857600 (100 MiB), at least 4096.
	MaxFileBytes int `yaml:"max_file_bytes"`
	// MaxFiles is how many rotated files are kept; default 0: all of them
	// (an audit trail is not deleted unless asked).
	MaxFiles int `yaml:"max_files"`
	// Durability is what a decision's answer waits for: "write" (default),
	// its record written (a process crash cannot lose it), "fsync", its
	// record fsynced (a power loss cannot either), or "async", its record
	// queued (a crash loses what is queued). See Durability.
	Durability Durability `yaml:"durability"`
	// FlushInterval is the group commit period: records are fsynced together
	// at most this long after the first of them (with durability fsync, each
	// batch at once). Default 100ms, 1ms to 10s.
	FlushInterval time.Duration `yaml:"flush_interval"`
	// QueueSize bounds the records waiting for the writer; default 10000,
	// 1 to 1048576.
	QueueSize int `yaml:"queue_size"`
	// OnFull says what a request gets while the trail cannot take records
	// (queue full, sink failing): "deny" (default) a 503 at once, or
	// "block" up to BlockTimeout, then a 503.
	OnFull string `yaml:"on_full"`
	// BlockTimeout bounds the wait with on_full: block, and the wait of an
	// admitted decision's record for room in the queue. Default 1s, 1ms to 60s.
	BlockTimeout time.Duration `yaml:"block_timeout"`
	// BodySHA256 adds the SHA-256 of each request body to its record.
	BodySHA256 bool `yaml:"body_sha256"`
	// KeyFile or KeyEnv (exclusive) hold an HMAC key (>= MinKeyBytes; one
	// trailing newline is not part of it) that keys the hash chain.
	KeyFile string `yaml:"key_file"`
	KeyEnv  string `yaml:"key_env"`
	// HTTP delivers records to an endpoint as well (or instead, with output
	// "off"), through SpoolDir.
	HTTP HTTPConfig `yaml:"http"`
	// SpoolDir holds records until the HTTP endpoint acknowledges them;
	// required with http.url, created if missing (its parent must exist).
	SpoolDir string `yaml:"spool_dir"`
	// SpoolMaxBytes caps the spool: beyond it requests are denied as with a
	// full queue. Default 1073741824 (1 GiB), at least 1048576.
	SpoolMaxBytes int `yaml:"spool_max_bytes"`
}

// HTTPConfig configures delivery of audit records to an HTTP endpoint.
type HTTPConfig struct {
	// URL receives POSTs of gzip-compressed JSON lines; https (http only for
	// loopback hosts). Empty: no HTTP delivery.
	URL string `yaml:"url"`
	// Timeout bounds one POST; default 10s, 100ms to 5m.
	Timeout time.Duration `yaml:"timeout"`
	// TokenFile or TokenEnv (exclusive, optional) hold a token sent as
	// "Authorization: Bearer <token>".
	TokenFile string `yaml:"token_file"`
	TokenEnv  string `yaml:"token_env"`
}

// Defaults and limits of Config; the Writer and the HTTP sink give zero
// Settings and HTTPSettings fields the same defaults.
const (
	DefaultOutput        = "stdout"
	DefaultMaxFileBytes  = 100 << 20
	MinFileBytes         = 4096
	DefaultDurability    = DurabilityWrite
	DefaultFlushInterval = 100 * time.Millisecond
	DefaultQueueSize     = 10000
	MaxQueueSize         = 1 << 20
	DefaultOnFull        = "deny"
	DefaultBlockTimeout  = time.Second
	DefaultHTTPTimeout   = 10 * time.Second
	DefaultSpoolMaxBytes = 1 << 30
	MinSpoolBytes        = 1 << 20
)

// DefaultConfig returns the value every absent key takes.
func DefaultConfig() Config {
	return Config{
		Output:        DefaultOutput,
		MaxFileBytes:  DefaultMaxFileBytes,
		Durability:    DefaultDurability,
		FlushInterval: DefaultFlushInterval,
		QueueSize:     DefaultQueueSize,
		OnFull:        DefaultOnFull,
		BlockTimeout:  DefaultBlockTimeout,
		HTTP:          HTTPConfig{Timeout: DefaultHTTPTimeout},
		SpoolMaxBytes: DefaultSpoolMaxBytes,
	}
}

// key returns the chain's HMAC key, nil when none is configured.
func (c Config) key(baseDir string) ([]byte, error) {
	return readSecret(c.KeyFile, c.KeyEnv, baseDir)
}

// token returns the HTTP endpoint's bearer token, "" when none is configured.
func (c Config) token(baseDir string) (string, error) {
	b, err := readSecret(c.HTTP.TokenFile, c.HTTP.TokenEnv, baseDir)
	return string(b), err
}

// keyPath and tokenPath name the field a key or token came from.
func (c Config) keyPath() string { return exclusivePath("key_file", "key_env", c.KeyEnv) }
func (c Config) tokenPath() string {
	return exclusivePath("http.token_file", "http.token_env", c.HTTP.TokenEnv)
}

func exclusivePath(file, env, envValue string) string {
	if envValue != "" {
		return env
	}
	return file
}

func readSecret(file, env, baseDir string) ([]byte, error) {
	if file == "" && env == "" {
		return nil, nil
	}
	return secret.Read(resolve(file, baseDir), env, true)
}

// resolve joins a relative path to baseDir; "" stays "".
func resolve(p, baseDir string) string {
	switch {
	case p == "":
		return ""
	case filepath.IsAbs(p):
		return filepath.Clean(p)
	}
	return filepath.Join(baseDir, p)
}

// Validate checks c, reading its key and token; paths resolve against
// baseDir. The errors are *field.Error relative to the section ("http.url").
func (c Config) Validate(baseDir string) []error {
	var errs field.List
	switch c.Output {
	case "stdout", "off":
	case "":
		errs.Addf("output", `want "stdout", "off" or a file path`)
	default:
		path := resolve(c.Output, baseDir)
		if st, err := os.Stat(filepath.Dir(path)); err != nil || !st.IsDir() {
			errs.Addf("output", "directory %s does not exist", filepath.Dir(path))
		} else if st, err := os.Stat(path); err == nil && st.IsDir() {
			errs.Addf("output", "%s is a directory, want a file", path)
		}
	}
	if c.MaxFileBytes < MinFileBytes {
		errs.Addf("max_file_bytes", "must be at least %d, got %d", MinFileBytes, c.MaxFileBytes)
	}
	if c.MaxFiles < 0 {
		errs.Addf("max_files", "must not be negative (0 keeps every rotated file), got %d", c.MaxFiles)
	}
	errs.OneOf("durability", string(c.Durability), string(DurabilityWrite), string(DurabilityFsync), string(DurabilityAsync))
	field.Range(&errs, "flush_interval", c.FlushInterval, time.Millisecond, 10*time.Second)
	field.Range(&errs, "queue_size", c.QueueSize, 1, MaxQueueSize)
	errs.OneOf("on_full", c.OnFull, "deny", "block")
	field.Range(&errs, "block_timeout", c.BlockTimeout, time.Millisecond, time.Minute)

	switch {
	case c.KeyFile != "" && c.KeyEnv != "":
		errs.Addf("key_env", "key_file and key_env are exclusive: set one")
	case c.KeyFile != "" || c.KeyEnv != "":
		if key, err := c.key(baseDir); err != nil {
			errs = append(errs, &field.Error{Path: c.keyPath(), Err: err})
		} else if len(key) < MinKeyBytes {
			errs.Addf(c.keyPath(), "weak key: %d bytes, need at least %d", len(key), MinKeyBytes)
		}
	}

	h := c.HTTP
	if h.URL == "" {
		if c.SpoolDir != "" {
			errs.Addf("spool_dir", "only used with audit.http.url")
		}
		if h.TokenFile != "" || h.TokenEnv != "" {
			errs.Addf("http.url", "required with a token")
		}
		return errs
	}
	if err := field.CheckHTTPSURL(h.URL, "use token_file or token_env", "audit records name who called what"); err != nil {
		errs = append(errs, &field.Error{Path: "http.url", Err: err})
	}
	field.Range(&errs, "http.timeout", h.Timeout, 100*time.Millisecond, 5*time.Minute)
	switch {
	case h.TokenFile != "" && h.TokenEnv != "":
		errs.Addf("http.token_env", "token_file and token_env are exclusive: set one")
	case h.TokenFile != "" || h.TokenEnv != "":
		if tok, err := c.token(baseDir); err != nil {
			errs = append(errs, &field.Error{Path: c.tokenPath(), Err: err})
		} else if bytes.ContainsAny([]byte(tok), " \t\r\n") {
			errs.Addf(c.tokenPath(), "the token contains whitespace: it must fit in one header value")
		}
	}
	if c.SpoolDir == "" {
		errs.Addf("spool_dir", "required with audit.http.url: records wait there until the endpoint takes them")
	} else {
		dir := resolve(c.SpoolDir, baseDir)
		if st, err := os.Stat(dir); err == nil && !st.IsDir() {
			errs.Addf("spool_dir", "%s is not a directory", dir)
		} else if err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, &field.Error{Path: "spool_dir", Err: err})
		} else if st, err := os.Stat(filepath.Dir(dir)); err != nil || !st.IsDir() {
			errs.Addf("spool_dir", "directory %s does not exist", filepath.Dir(dir))
		}
		if c.Output != "stdout" && c.Output != "off" && filepath.Dir(resolve(c.Output, baseDir)) == dir {
			errs.Addf("spool_dir", "must not be the directory of audit.output")
		}
	}
	if c.SpoolMaxBytes < MinSpoolBytes {
		errs.Addf("spool_max_bytes", "must be at least %d, got %d", MinSpoolBytes, c.SpoolMaxBytes)
	}
	return errs
}
