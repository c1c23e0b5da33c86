package test

import (
	"fmt"
	"io/fs"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/modelguard/modelguard/examples"
	"github.com/modelguard/modelguard/test/testkit"
)

// authorizationWith is the env's authorization section with source (the
// lines after its first indented by two spaces) in place of its policy
// directory.
func authorizationWith(source string) string {
	return strings.Replace(defaultAuthorization, "policy_dir: policy", source, 1)
}

// examplePolicyBundle is the shipped example policy and its data as a
// bundle, built with OPA's bundle package.
func examplePolicyBundle(t *testing.T) []byte {
	t.Helper()
	files := testkit.BundleFiles{}
	err := fs.WalkDir(examples.Demo, "policy", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(path, "_test.rego") {
			return err
		}
		data, err := fs.ReadFile(examples.Demo, path)
		files[strings.TrimPrefix(path, "policy/")] = string(data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return testkit.BuildBundle(t, files, "example", "", "")
}

// The policy comes from a bundle service: until its first bundle every
// request is denied 503 policy_unavailable (never served without a
// policy); then the bundle decides.
func TestEnvoyBundle(t *testing.T) {
	srv := testkit.NewBundleServer(t)
	srv.SetDown(true)
	e := newEnv(t, envOptions{authorization: authorizationWith(fmt.Sprintf(`bundle:
    url: %s
    polling: {min_delay: 1s, max_delay: 1s}
    persist_dir: bundle`, srv.URL))})
	alice := map[string]string{"x-api-key": e.keys["alice-key"]}

	r := e.do("POST", "/v1/chat/completions", alice, chatBody("gpt-4o-mini"))
	if r.status != 503 || r.reason() != "policy_unavailable" {
		t.Fatalf("before the first bundle: %d %q, want 503 policy_unavailable", r.status, r.reason())
	}
	assertClientError(t, r, "server_error", "policy_unavailable")
	// Not ready either, to /readyz and to the readiness probe's gRPC
	// health check of the Authorization service.
	if code := readyz(t, e); code != 503 {
		t.Errorf("/readyz before the first bundle: %d, want 503", code)
	}
	if st := authzHealth(t, e); st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("gRPC health before the first bundle: %v, want NOT_SERVING", st)
	}

	srv.Set(examplePolicyBundle(t))
	srv.SetDown(false)
	testkit.Eventually(t, "the bundle to decide", func() bool {
		return e.do("POST", "/v1/chat/completions", alice, chatBody("gpt-4o-mini")).status == 200
	})
	if code := readyz(t, e); code != 200 {
		t.Errorf("/readyz with a bundle: %d, want 200", code)
	}
	testkit.Eventually(t, "gRPC health SERVING with a bundle", func() bool {
		return authzHealth(t, e) == healthpb.HealthCheckResponse_SERVING
	})
	// Its data too: gpt-4o is outside the chat-user's allowlist in data.yaml.
	if r := e.do("POST", "/v1/chat/completions", alice, chatBody("gpt-4o")); r.status != 403 || r.reason() != "model_not_permitted" {
		t.Fatalf("with the bundle: %d %q, want 403 model_not_permitted", r.status, r.reason())
	}
	if n := e.metric(`modelguard_policy_reloads_total{outcome="ok"}`); n != 1 {
		t.Errorf("policy reloads ok = %v, want 1", n)
	}
}

// Dry-run for one model: the policy's denial is recorded as would_deny and
// the request goes on, through both gateways; other models stay enforced,
// and no step other than the policy is lifted.
func TestDryRunInBothGateways(t *testing.T) {
	e := newEnv(t, envOptions{authorization: authorizationWith("policy_dir: policy\n  dry_run: {models: [gpt-4o]}")})
	k := newKongEnv(t, e, kongBinary(t))
	alice := map[string]string{"x-api-key": e.keys["alice-key"]}
	reader := map[string]string{"x-api-key": e.keys["reader-key"]}
	tests := []struct {
		name           string
		headers        map[string]string
		model          string
		status         int
		record, reason string
	}{
		{"denial lifted for the dry-run model", alice, "gpt-4o", 200, "would_deny", "model_not_permitted"},
		{"another model enforced", reader, "gpt-4o-mini", 403, "deny", "read_only"},
		{"authentication enforced", nil, "gpt-4o", 401, "deny", "credentials_missing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do("POST", "/v1/chat/completions", tc.headers, chatBody(tc.model))
			if r.status != tc.status {
				t.Fatalf("envoy: %d %q, want %d", r.status, r.reason(), tc.status)
			}
			ev := e.gatewayAuditEvent(t, "envoy", r.log.RequestID)[0]
			if ev["result"] != tc.record || ev["reason"] != tc.reason {
				t.Fatalf("envoy record %v %v, want %s %s", ev["result"], ev["reason"], tc.record, tc.reason)
			}

			kr := k.do("POST", "/v1/chat/completions", tc.headers, []byte(chatBody(tc.model)))
			if kr.status != tc.status {
				t.Fatalf("kong: %d (%s), want %d", kr.status, kr.body, tc.status)
			}
			kev := e.kongRecord(t, kr.id)
			if kev["result"] != tc.record || kev["reason"] != tc.reason {
				t.Fatalf("kong record %v %v, want %s %s", kev["result"], kev["reason"], tc.record, tc.reason)
			}
		})
	}
	if n := e.metric(`modelguard_decisions_total{gateway="envoy",reason="model_not_permitted",result="would_deny"}`); n != 1 {
		t.Errorf("would_deny model_not_permitted = %v, want 1", n)
	}
}

// A shadow policy that denies every request never changes the answer; its
// disagreement is counted and recorded with both answers.
func TestEnvoyShadowPolicy(t *testing.T) {
	next := t.TempDir()
	testkit.WriteFile(t, next, "authz.rego", "package modelguard.authz\n\ndecision := {\"allow\": false, \"reason\": \"next_denies_all\"}\n")
	e := newEnv(t, envOptions{authorization: authorizationWith("policy_dir: policy\n  shadow: {policy_dir: " + next + "}")})
	alice := map[string]string{"x-api-key": e.keys["alice-key"]}

	r := e.do("POST", "/v1/chat/completions", alice, chatBody("gpt-4o-mini"))
	if r.status != 200 {
		t.Fatalf("%d %q: the shadow changed the answer", r.status, r.reason())
	}
	id := r.log.Metadata["decision_id"].(string)
	var shadow []map[string]any
	testkit.Eventually(t, "the shadow record", func() bool {
		shadow = e.gatewayRecords(t, "envoy", "shadow", "decision_id")[id]
		return len(shadow) > 0
	})
	ev := shadow[0]
	if ev["result"] != "allow" || ev["shadow_result"] != "deny" || ev["shadow_reason"] != "next_denies_all" {
		t.Fatalf("shadow record %v, want allow vs deny next_denies_all", ev)
	}
	if n := e.metric(`modelguard_shadow_decisions_total{outcome="disagree"}`); n != 1 {
		t.Errorf("shadow disagreements = %v, want 1", n)
	}
}

func readyz(t *testing.T, e *env) int {
	t.Helper()
	resp, err := http.Get(e.admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// authzHealth asks grpc.health.v1 for the Authorization service's status.
func authzHealth(t *testing.T, e *env) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	conn, err := grpc.NewClient(e.svc.GRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	res, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{Service: "envoy.service.auth.v3.Authorization"})
	if err != nil {
		t.Fatal(err)
	}
	return res.Status
}
