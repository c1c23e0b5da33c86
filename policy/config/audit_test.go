package config

import (
	"strings"
	"testing"
	"time"

	"github.com/modelguard/modelguard/policy/audit"
)

func TestAuditValidation(t *testing.T) {
	audit := func(lines ...string) string {
		return doc(append([]string{okAuth, okPolicy, "audit:"}, lines...)...)
	}
	const url = "  http: {url: \"https://audit.example.com/in\"}"
	runErrorCases(t, []errorCase{
		{"file too small to rotate", audit("  max_file_bytes: 4095"), nil,
			[]string{`config.yaml:4: audit.max_file_bytes: must be at least 4096, got 4095`}},
		{"negative max files", audit("  max_files: -1"), nil,
			[]string{`config.yaml:4: audit.max_files: must not be negative`}},
		{"durability unknown", audit("  durability: sometimes"), nil,
			[]string{`config.yaml:4: audit.durability: "sometimes" is not one of write, fsync, async`}},
		{"flush interval zero", audit("  flush_interval: 0s"), nil,
			[]string{`config.yaml:4: audit.flush_interval: must be between 1ms and 10s, got 0s`}},
		{"flush interval too long", audit("  flush_interval: 11s"), nil,
			[]string{`config.yaml:4: audit.flush_interval: must be between 1ms and 10s, got 11s`}},
		{"queue empty", audit("  queue_size: 0"), nil,
			[]string{`config.yaml:4: audit.queue_size: must be between 1 and 1048576, got 0`}},
		{"queue too large", audit("  queue_size: 1048577"), nil,
			[]string{`config.yaml:4: audit.queue_size: must be between 1 and 1048576`}},
		{"on_full unknown", audit("  on_full: drop"), nil,
			[]string{`config.yaml:4: audit.on_full: "drop" is not one of deny, block`}},
		{"block timeout zero", audit("  block_timeout: 0s"), nil,
			[]string{`config.yaml:4: audit.block_timeout: must be between 1ms and 1m0s, got 0s`}},
		{"weak key", audit("  key_file: jwt/short.secret"), nil,
			[]string{`config.yaml:4: audit.key_file: weak key: 31 bytes, need at least 32`}},
		{"key file missing", audit("  key_file: nope.key"), nil,
			[]string{`config.yaml:4: audit.key_file: open DIR/nope.key: no such file`}},
		{"key variable unset", audit("  key_env: MODELGUARD_TEST_UNSET"), nil,
			[]string{`config.yaml:4: audit.key_env: environment variable MODELGUARD_TEST_UNSET is not set`}},
		{"weak key from the environment", audit("  key_env: MODELGUARD_TEST_KEY"), map[string]string{"MODELGUARD_TEST_KEY": strings.Repeat("k", 31) + "\n"},
			[]string{`config.yaml:4: audit.key_env: weak key: 31 bytes`}},
		{"two key sources", audit("  key_file: jwt/partner.secret", "  key_env: MODELGUARD_TEST_KEY"), nil,
			[]string{`config.yaml:5: audit.key_env: key_file and key_env are exclusive`}},
		{"spool without endpoint", audit("  spool_dir: spool"), nil,
			[]string{`config.yaml:4: audit.spool_dir: only used with audit.http.url`}},
		{"token without endpoint", audit("  http: {token_env: T}"), nil,
			[]string{`config.yaml:4: audit.http.url: required with a token`}},
		{"endpoint without spool", audit(url), nil,
			[]string{`config.yaml:3: audit.spool_dir: required with audit.http.url`}},
		{"plain http endpoint", audit("  http: {url: \"http://audit.example.com/in\"}", "  spool_dir: spool"), nil,
			[]string{`config.yaml:4: audit.http.url: must use https`}},
		{"endpoint with credentials", audit("  http: {url: \"https://u:p@audit.example.com/in\"}", "  spool_dir: spool"), nil,
			[]string{`config.yaml:4: audit.http.url: must not carry credentials`}},
		{"endpoint not http", audit("  http: {url: \"ftp://audit.example.com/in\"}", "  spool_dir: spool"), nil,
			[]string{`config.yaml:4: audit.http.url: must be an absolute https URL`}},
		{"endpoint timeout too short", audit("  http: {url: \"https://a.example\", timeout: 50ms}", "  spool_dir: spool"), nil,
			[]string{`config.yaml:4: audit.http.timeout: must be between 100ms and 5m0s, got 50ms`}},
		{"token with a space", audit("  http: {url: \"https://a.example\", token_env: MODELGUARD_TEST_TOKEN}", "  spool_dir: spool"),
			map[string]string{"MODELGUARD_TEST_TOKEN": "a b"}, []string{`config.yaml:4: audit.http.token_env: the token contains whitespace`}},
		{"two token sources", audit("  http: {url: \"https://a.example\", token_file: keys.yaml, token_env: T}", "  spool_dir: spool"), nil,
			[]string{`config.yaml:4: audit.http.token_env: token_file and token_env are exclusive`}},
		{"spool is a file", audit(url, "  spool_dir: keys.yaml"), nil,
			[]string{`config.yaml:5: audit.spool_dir: DIR/keys.yaml is not a directory`}},
		{"spool parent missing", audit(url, "  spool_dir: nope/spool"), nil,
			[]string{`config.yaml:5: audit.spool_dir: directory DIR/nope does not exist`}},
		{"spool next to the file", audit(url, "  output: audit/a.jsonl", "  spool_dir: audit"), nil,
			[]string{`config.yaml:6: audit.spool_dir: must not be the directory of audit.output`}},
		{"spool cap too small", audit(url, "  spool_dir: spool", "  spool_max_bytes: 1000"), nil,
			[]string{`config.yaml:6: audit.spool_max_bytes: must be at least 1048576, got 1000`}},
	})
}

func TestAuditValidConfigurations(t *testing.T) {
	t.Setenv("MODELGUARD_TEST_KEY", strings.Repeat("k", 32)+"\n")
	t.Setenv("MODELGUARD_TEST_TOKEN", "tok\n")
	c := mustParse(t, doc(okAuth, okPolicy,
		"audit:",
		"  output: audit/decisions.jsonl",
		"  max_file_bytes: 4096",
		"  max_files: 3",
		"  durability: fsync",
		"  flush_interval: 1ms",
		"  queue_size: 1",
		"  on_full: block",
		"  block_timeout: 250ms",
		"  body_sha256: true",
		"  key_env: MODELGUARD_TEST_KEY",
		"  http: {url: \"http://127.0.0.1:8080/in\", timeout: 2s, token_env: MODELGUARD_TEST_TOKEN}",
		"  spool_dir: spool",
		"  spool_max_bytes: 1048576",
	))
	want := audit.Config{Output: "audit/decisions.jsonl", MaxFileBytes: 4096, MaxFiles: 3, Durability: audit.DurabilityFsync, FlushInterval: time.Millisecond,
		QueueSize: 1, OnFull: "block", BlockTimeout: 250 * time.Millisecond, BodySHA256: true, KeyEnv: "MODELGUARD_TEST_KEY",
		HTTP:     audit.HTTPConfig{URL: "http://127.0.0.1:8080/in", Timeout: 2 * time.Second, TokenEnv: "MODELGUARD_TEST_TOKEN"},
		SpoolDir: "spool", SpoolMaxBytes: 1 << 20}
	if c.Audit != want {
		t.Errorf("audit:\n got  %+v\n want %+v", c.Audit, want)
	}
	// HTTP only, no local output; a key file.
	mustParse(t, doc(okAuth, okPolicy, "audit:", "  output: \"off\"", "  key_file: jwt/partner.secret",
		"  http: {url: \"https://audit.example.com/in\"}", "  spool_dir: spool"))
}
