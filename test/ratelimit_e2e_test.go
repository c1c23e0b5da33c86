package test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/modelguard/modelguard/extauthz"
	"github.com/modelguard/modelguard/test/redisserver"
	"github.com/modelguard/modelguard/test/testkit"
	"github.com/modelguard/modelguard/test/testkit/demo"
)

// TestTwoProcessesShareOneRedisLimit runs two modelguard servers on one
// Redis and sends 200 concurrent requests, half to each: exactly K are
// admitted by a request limit, and a token budget taken by requests of
// mixed sizes never overshoots.
func TestTwoProcessesShareOneRedisLimit(t *testing.T) {
	const K, budget, N = 37, 3000, 200
	redis := redisserver.Start(t)
	bin := buildBinary(t)
	dir := demo.Dir(t)
	keys := demo.WriteKeys(t, dir, "mg_",
		demo.Key{ID: "req-key", Subject: "req-user", Roles: []string{"chat-user"}},
		demo.Key{ID: "tok-key", Subject: "tok-user", Roles: []string{"chat-user"}})
	cfg := writeServeConfig(t, dir, fmt.Sprintf(`rate_limits:
  store: redis
  redis: {address: "%s", timeout: 1s}
  rules:
    - {name: burst, requests: %d, per: 1h, key: [key_id], match: {subjects: [req-user]}}
    - {name: budget, tokens: %d, per: 24h, key: [key_id], match: {subjects: [tok-user]}}
audit: {output: "off"}
# The burst is the point here: let every check wait for a slot rather than
# be shed as overloaded.
admission: {max_concurrent_checks: 256, max_wait: 1s}
`, redis.Addr, K, budget))
	servers := []*serveProcess{startServe(t, bin, cfg), startServe(t, bin, cfg)}
	var clients []authv3.AuthorizationClient
	for _, s := range servers {
		conn, err := grpc.NewClient(s.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		clients = append(clients, authv3.NewAuthorizationClient(conn))
	}

	// burst sends N checks at once, request i with body(i), and returns
	// which were admitted.
	burst := func(key string, body func(i int) string) []bool {
		admitted := make([]bool, N)
		var start, done sync.WaitGroup
		start.Add(1)
		for i := range N {
			done.Go(func() {
				b := []byte(body(i))
				r, _ := http.NewRequest("POST", "http://models.local/v1/chat/completions", bytes.NewReader(b))
				r.Header.Set("x-api-key", key)
				r.Header.Set("content-type", "application/json")
				req := extauthz.CheckRequestFromHTTP(r, b, extauthz.EnvoyOptions{WithBody: true, PackAsBytes: true})
				start.Wait()
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				resp, err := clients[i%2].Check(ctx, req)
				if err != nil {
					t.Errorf("check: %v", err)
					return
				}
				if code := resp.GetDeniedResponse().GetStatus().GetCode(); resp.GetStatus().GetCode() != 0 && code != 429 {
					t.Errorf("request %d: denied %v, want 429", i, code)
				}
				admitted[i] = resp.GetStatus().GetCode() == 0
			})
		}
		start.Done()
		done.Wait()
		return admitted
	}

	n := 0
	for _, ok := range burst(keys["req-key"], func(int) string { return chatBody("gpt-4o-mini") }) {
		if ok {
			n++
		}
	}
	if n != K {
		t.Errorf("two processes admitted %d of %d, want exactly %d", n, N, K)
	}

	// "Hello": 2 prompt tokens, plus max_tokens of 1 to 97.
	size := func(i int) int { return 2 + 1 + (i*37)%97 }
	admitted := burst(keys["tok-key"], func(i int) string {
		return fmt.Sprintf(`{"model":"gpt-4o-mini","max_tokens":%d,"messages":[{"role":"user","content":"Hello"}]}`, size(i)-2)
	})
	sum := 0
	for i, ok := range admitted {
		if ok {
			sum += size(i)
		}
	}
	if sum > budget {
		t.Fatalf("admitted %d tokens of a %d budget", sum, budget)
	}
	for i, ok := range admitted {
		if !ok && size(i) <= budget-sum {
			t.Errorf("refused %d tokens with %d left", size(i), budget-sum)
		}
	}
	if sum < budget/2 {
		t.Errorf("only %d of %d tokens admitted", sum, budget)
	}
}

// TestPolicyEditMovesCallerToAnotherTier edits the policy data so that
// chat users fall in the trial tier: the trial limits apply from the reload
// on, without a restart.
func TestPolicyEditMovesCallerToAnotherTier(t *testing.T) {
	e := newEnv(t, envOptions{})
	alice := map[string]string{"x-api-key": e.keys["alice-key"]}
	for range 3 {
		if r := e.do("POST", "/v1/chat/completions", alice, chatBody("gpt-4o-mini")); r.status != 200 {
			t.Fatalf("standard tier: %d %s", r.status, r.reason())
		}
	}
	data := filepath.Join(e.dir, "policy", "data.yaml")
	b, err := os.ReadFile(data)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(b), "rate_limit_class: standard", "rate_limit_class: trial", 1)
	if edited == string(b) {
		t.Fatal("the example policy data has no standard tier to edit")
	}
	writeAtomic(t, data, edited)
	// The trial tier admits 2 requests and 400 tokens an hour per
	// key (a request without max_tokens reserves the model's 4096): from
	// the reload on, alice is refused.
	testkit.Eventually(t, "the trial tier's limit to apply", func() bool {
		r := e.do("POST", "/v1/chat/completions", alice, chatBody("gpt-4o-mini"))
		return r.status == 429 && strings.HasPrefix(r.reason(), "rate_limited_")
	})
}
