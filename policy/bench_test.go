package policy_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/modelguard/modelguard/examples"
	"github.com/modelguard/modelguard/policy"
	"github.com/modelguard/modelguard/policy/apikey"
	"github.com/modelguard/modelguard/policy/audit"
	"github.com/modelguard/modelguard/policy/config"
)

// benchSetup is a real engine on the example policy, a static RS256 key and
// a key file: the whole core decision, as a gateway adapter calls it.
type benchSetup struct {
	engine *policy.Engine
	token  string
	key    string
}

// newBenchSetup builds the engine; durability "" means no audit trail.
func newBenchSetup(b *testing.B, durability audit.Durability) benchSetup {
	return newBenchSetupJWT(b, durability, "")
}

// newBenchSetupJWT adds jwtYAML (lines under authentication.jwt) and
// extra (top-level sections) to the configuration.
func newBenchSetupJWT(b *testing.B, durability audit.Durability, jwtYAML string, extra ...string) benchSetup {
	return newBenchSetupWith(b, durability, jwtYAML, "", policy.Options{}, extra...)
}

// newBenchSetupWith builds the engine with opts (the audit trail is added
// for a durability), authzYAML (lines under authorization) and extra
// (top-level sections).
func newBenchSetupWith(b *testing.B, durability audit.Durability, jwtYAML, authzYAML string, opts policy.Options, extra ...string) benchSetup {
	b.Helper()
	dir := b.TempDir()
	if err := os.CopyFS(dir, examples.Demo); err != nil {
		b.Fatal(err)
	}
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	os.WriteFile(filepath.Join(dir, "jwt.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644)
	key, _ := apikey.Mint("")
	os.WriteFile(filepath.Join(dir, "keys.yaml"), []byte("keys:\n"+apikey.Entry("k1", "bob", []string{"chat-user"}, key)), 0o644)
	cfgYAML := `authentication:
  jwt:
    issuers:
      - issuer: https://idp.bench
        audiences: [models]
        algorithms: [RS256]
        keys: [{pem_file: jwt.pub}]
` + jwtYAML + `
  api_keys: {file: keys.yaml}
authorization:
  policy_dir: policy
  query: data.modelguard.authz.decision
  timeout: 10s # many callers on a shared machine: CPU waits are not policy errors
` + authzYAML + `
models:
  - {name: gpt-4o-mini, operation: chat}
# The parallel benchmarks measure deciding, not load shedding: every caller
# waits for a check slot.
admission: {max_concurrent_checks: 64, max_wait: 1s}
` + strings.Join(extra, "")
	cfg, err := config.Parse([]byte(cfgYAML), "bench.yaml", dir)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	if durability != "" {
		// The server's pipeline: hash-chained, group commit to a file
		// (fsync every 100ms, or per batch with fsync durability).
		// on_full: block, so that a moment of CPU starvation on a shared
		// machine slows the benchmark down instead of failing it with 503s.
		w, err := audit.NewWriter(audit.Settings{Durability: durability, Block: true, BlockTimeout: time.Minute}, audit.Options{},
			audit.NewFileSink(filepath.Join(dir, "audit.jsonl"), 0, 0, nil))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { w.Close() })
		opts.Audit = w
	}
	engine, err := policy.New(ctx, cfg, opts)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"iss": "https://idp.bench", "aud": "models", "sub": "alice",
		"roles": []string{"chat-user"}, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}).SignedString(priv)
	if err != nil {
		b.Fatal(err)
	}
	return benchSetup{engine: engine, token: tok, key: key}
}

func benchRequest(auth string) *policy.Request {
	return &policy.Request{
		Gateway: "envoy", ID: "bench", Method: "POST", Path: "/v1/chat/completions", Host: "models.local", Scheme: "https",
		Headers: map[string]string{
			":authority": "models.local", ":method": "POST", ":path": "/v1/chat/completions", ":scheme": "https",
			"authorization": auth, "content-type": "application/json", "user-agent": "OpenAI/Python 1.54.0",
			"x-request-id": "bench", "accept": "application/json",
		},
		SourceAddress: "10.0.0.7:51000",
		Body:          []byte(`{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are helpful."},{"role":"user","content":"Hello there"}],"max_tokens":128}`),
	}
}

// benchDecide decides a fresh copy of req each time: a request with a
// Fetch hands each part over once.
func benchDecide(b *testing.B, e *policy.Engine, req *policy.Request) {
	ctx := context.Background()
	r := new(policy.Request)
	*r = *req
	if d := e.Decide(ctx, r); !d.Allow {
		b.Fatalf("benchmark request denied: %d %s", d.Status, d.Reason)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		*r = *req
		e.Decide(ctx, r)
	}
}

// BenchmarkDecideJWT is the whole core decision for an RS256 JWT, a
// repeat caller (the verified-token cache answers).
func BenchmarkDecideJWT(b *testing.B) {
	s := newBenchSetup(b, "")
	benchDecide(b, s.engine, benchRequest("Bearer "+s.token))
}

// BenchmarkDecideJWTUncached verifies the signature every time.
func BenchmarkDecideJWTUncached(b *testing.B) {
	s := newBenchSetupJWT(b, "", "    cache: {enabled: false}")
	benchDecide(b, s.engine, benchRequest("Bearer "+s.token))
}

// BenchmarkDecideAPIKey is the whole core decision for an OpenAI-style
// bearer API key.
func BenchmarkDecideAPIKey(b *testing.B) {
	s := newBenchSetup(b, "")
	benchDecide(b, s.engine, benchRequest("Bearer "+s.key))
}

// BenchmarkDecideAPIKeyShadow adds a shadow policy (the same example
// policy, from its own directory): compare with BenchmarkDecideAPIKey from
// the same run. The shadow decides on its own goroutine after the answer;
// what remains on the request path is queueing its input.
func BenchmarkDecideAPIKeyShadow(b *testing.B) {
	s := newBenchSetupWith(b, "", "", "  shadow: {policy_dir: policy}", policy.Options{})
	benchDecide(b, s.engine, benchRequest("Bearer "+s.key))
}

// BenchmarkDecideAPIKeyAudit adds the audit record per decision, written by
// the group-commit writer to a file: compare with BenchmarkDecideAPIKey
// from the same run.
func BenchmarkDecideAPIKeyAudit(b *testing.B) {
	s := newBenchSetup(b, audit.DefaultDurability)
	benchDecide(b, s.engine, benchRequest("Bearer "+s.key))
}

// BenchmarkDecideAPIKeyParallel and BenchmarkDecideAPIKeyAuditParallel
// keep every core deciding, so the audit writer's work (encoding, hashing,
// writing, fsync) competes with decisions instead of using an idle core.
func BenchmarkDecideAPIKeyParallel(b *testing.B) {
	s := newBenchSetup(b, "")
	benchDecideParallel(b, s.engine, "Bearer "+s.key)
}

func BenchmarkDecideAPIKeyAuditParallel(b *testing.B) {
	s := newBenchSetup(b, audit.DefaultDurability)
	benchDecideParallel(b, s.engine, "Bearer "+s.key)
}

func benchDecideParallel(b *testing.B, e *policy.Engine, auth string) {
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req := benchRequest(auth)
		for pb.Next() {
			if d := e.Decide(ctx, req); !d.Allow {
				b.Errorf("denied: %d %s", d.Status, d.Reason)
				return
			}
		}
	})
}

// BenchmarkDecideDurability compares, in one run, decisions per second and
// the 99th percentile of Decide's latency with the audit trail off and in
// each durability mode, with 32 concurrent callers (as many checks in
// flight as a busy gateway sends) so that group commit has company.
func BenchmarkDecideDurability(b *testing.B) {
	for _, d := range []audit.Durability{"", audit.DurabilityAsync, audit.DurabilityWrite, audit.DurabilityFsync} {
		name := string(d)
		if d == "" {
			name = "off"
		}
		b.Run(name, func(b *testing.B) {
			s := newBenchSetup(b, d)
			ctx := context.Background()
			var (
				mu  sync.Mutex
				all []time.Duration
			)
			b.SetParallelism(16) // 16 per core: 32 callers on this machine
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				req := benchRequest("Bearer " + s.key)
				var took []time.Duration
				for pb.Next() {
					start := time.Now()
					if dec := s.engine.Decide(ctx, req); !dec.Allow {
						b.Errorf("denied: %d %s", dec.Status, dec.Reason)
						return
					}
					took = append(took, time.Since(start))
				}
				mu.Lock()
				all = append(all, took...)
				mu.Unlock()
			})
			b.StopTimer()
			if len(all) == 0 {
				return
			}
			slices.Sort(all)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
			b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-us")
		})
	}
}

// BenchmarkDecideDenyMissing is the cheapest path: no credential, 401.
func BenchmarkDecideDenyMissing(b *testing.B) {
	s := newBenchSetup(b, "")
	req := benchRequest("")
	delete(req.Headers, "authorization")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		s.engine.Decide(ctx, req)
	}
}
