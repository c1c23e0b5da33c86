package policy

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/modelguard/modelguard/policy/audit"
	"github.com/modelguard/modelguard/policy/certid"
	"github.com/modelguard/modelguard/policy/dlp"
	"github.com/modelguard/modelguard/policy/iplist"
	"github.com/modelguard/modelguard/policy/lockout"
	"github.com/modelguard/modelguard/policy/rego"
)

type fakeAddresses map[string]iplist.Verdict

func (f fakeAddresses) Check(a string) iplist.Verdict { return f[a] }

// TestScreenAddress: the address lists run before authentication, name
// the deciding list in the decision and its record, and a failure to read
// the address from the gateway denies.
func TestScreenAddress(t *testing.T) {
	lists := fakeAddresses{
		"203.0.113.9:1": {Reason: iplist.ReasonDenied, List: "threats"},
		"10.0.0.1:1":    {List: "corp"},
		"":              {Reason: iplist.ReasonUnknown},
	}
	for _, tc := range []struct {
		name, addr   string
		fetchErr     error
		creds        map[string]string
		status       int
		reason, list string
	}{
		{"denied before authentication", "203.0.113.9:1", nil, nil, 403, "ip_denied", "threats"},
		{"allowed, list named", "10.0.0.1:1", nil, map[string]string{"x-api-key": "mg_alice"}, 200, "allowed", "corp"},
		{"no address fails closed", "", nil, map[string]string{"x-api-key": "mg_alice"}, 403, "ip_unknown", ""},
		{"gateway read error fails closed", "10.0.0.1:1", errors.New("pdk: broken pipe"), map[string]string{"x-api-key": "mg_alice"}, 503, "gateway_read_error", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, rec := testEngine(t, allowAll)
			e.ipLists = lists
			req := chat(tc.creds)
			req.Fetch = func(r *Request, parts Part) error {
				if parts&PartSourceAddress != 0 {
					if tc.fetchErr != nil {
						return tc.fetchErr
					}
					r.SourceAddress = tc.addr
				}
				return nil
			}
			d := e.Decide(context.Background(), req)
			if d.Status != tc.status || d.Reason != tc.reason || d.IPList != tc.list {
				t.Fatalf("got %d %q list %q, want %d %q list %q", d.Status, d.Reason, d.IPList, tc.status, tc.reason, tc.list)
			}
			if ev := rec.Events(); len(ev) != 1 || ev[0].IPList != tc.list {
				t.Fatalf("audit %+v", ev)
			}
		})
	}
}

type brokenGuard struct{}

func (brokenGuard) Locked(context.Context, string) (time.Duration, error) {
	return 0, lockout.ErrUnavailable
}
func (brokenGuard) Failed(context.Context, string, string) error { return lockout.ErrUnavailable }
func (brokenGuard) Status() int                                  { return 429 }

// TestLockout: failures from one address lock it out (429 with
// retry-after) before authentication, also for a valid key; other
// addresses are unaffected; the lockout is recorded once; a store that
// cannot answer denies 503.
func TestLockout(t *testing.T) {
	e, rec := testEngine(t, allowAll)
	e.lockout = lockout.New(lockout.Settings{MaxFailures: 3}, nil, lockout.Options{OnLockout: e.lockedOut})
	from := func(addr string, creds map[string]string) *Decision {
		r := chat(creds)
		r.SourceAddress = addr
		return e.Decide(context.Background(), r)
	}
	bad, good := map[string]string{"x-api-key": "mg_guess"}, map[string]string{"x-api-key": "mg_alice"}
	for range 3 {
		if d := from("192.0.2.7:4000", bad); d.Status != 401 {
			t.Fatalf("bad key: %d %s", d.Status, d.Reason)
		}
	}
	d := from("192.0.2.7:4001", good)
	if d.Status != 429 || d.Reason != "locked_out" || d.Identity != nil {
		t.Fatalf("locked source with a good key: %d %s", d.Status, d.Reason)
	}
	if i := slices.IndexFunc(d.ResponseHeaders, func(h Header) bool { return h.Name == "retry-after" }); i < 0 || d.ResponseHeaders[i].Value != "900" {
		t.Errorf("retry-after: %v", d.ResponseHeaders)
	}
	if d := from("192.0.2.8:4000", good); !d.Allow {
		t.Fatalf("another source: %d %s", d.Status, d.Reason)
	}
	locks := rec.Filter(func(ev audit.Event) bool { return ev.Kind == audit.KindLockout })
	if len(locks) != 1 || locks[0].SourceAddress != "192.0.2.7" || locks[0].Reason != "failures_by_source" {
		t.Fatalf("lockout records: %+v", locks)
	}

	e.lockout = brokenGuard{}
	if d := from("192.0.2.8:4000", good); d.Status != 503 || d.Reason != "lockout_unavailable" {
		t.Fatalf("store down: %d %s", d.Status, d.Reason)
	}
}

// TestPromptDLP: a deny rule refuses with 400 naming the rule and not the
// match; a flag rule lets the request through, named in the record; every
// kind of prompt text is scanned.
func TestPromptDLP(t *testing.T) {
	sc, err := dlp.Compile(dlp.Settings{Rules: []dlp.RuleSettings{
		{Name: "aws-keys", Detector: "aws_access_key_id"},
		{Name: "cards", Detector: "payment_card", Action: dlp.ActionFlag},
	}})
	if err != nil {
		t.Fatal(err)
	}
	const key = "AKIAIOSFODNN7EXAMPLE"
	body := func(content string) []byte {
		return []byte(`{"model":"gpt-4o-mini","messages":[{"role":"system","content":"be brief"},{"role":"user","content":` + content + `}]}`)
	}
	for _, tc := range []struct {
		name, content string
		status        int
		reason, dlp   string
	}{
		{"clean", `"hello"`, 200, "allowed", ""},
		{"key in a string", `"my key is ` + key + `"`, 400, "dlp_denied", "aws-keys"},
		{"key in a text part", `[{"type":"text","text":"see"},{"type":"text","text":"` + key + `"}]`, 400, "dlp_denied", "aws-keys"},
		{"card flagged", `"card 4111 1111 1111 1111"`, 200, "allowed", "cards"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, rec := testEngine(t, allowAll)
			e.dlp = sc
			req := chat(map[string]string{"x-api-key": "mg_alice"})
			req.Body = body(tc.content)
			d := e.Decide(context.Background(), req)
			if d.Status != tc.status || d.Reason != tc.reason || d.DLP != tc.dlp {
				t.Fatalf("got %d %q dlp %q, want %d %q %q", d.Status, d.Reason, d.DLP, tc.status, tc.reason, tc.dlp)
			}
			if b := string(d.Body()); !d.Allow && (!strings.Contains(b, `\"aws-keys\"`) || strings.Contains(b, key)) {
				t.Errorf("client body %s", b)
			}
			if ev := rec.Events(); len(ev) != 1 || ev[0].DLP != tc.dlp {
				t.Fatalf("audit %+v", ev)
			}
		})
	}
}

// TestClientCertIdentity: without a credential header, a mapped client
// certificate principal authenticates; a credential header still decides
// when present; an unmapped principal is no credential.
func TestClientCertIdentity(t *testing.T) {
	e, _ := testEngine(t, allowAll)
	e.certs = certid.New(certid.Settings{{Principal: "spiffe://c/sa/batch", Subject: "batch", Roles: []string{"ml-engineer"}}})
	for _, tc := range []struct {
		name, principal string
		creds           map[string]string
		status          int
		subject, method string
	}{
		{"mapped certificate", "spiffe://c/sa/batch", nil, 200, "batch", "client_cert"},
		{"credential header wins", "spiffe://c/sa/batch", map[string]string{"x-api-key": "mg_alice"}, 200, "alice", "api_key"},
		{"bad credential is not rescued by the certificate", "spiffe://c/sa/batch", map[string]string{"x-api-key": "mg_nope"}, 401, "", ""},
		{"unmapped certificate", "spiffe://c/sa/other", nil, 401, "", ""},
		{"no certificate", "", nil, 401, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := chat(tc.creds)
			req.TLSPrincipal = tc.principal
			d := e.Decide(context.Background(), req)
			if d.Status != tc.status || tc.status == 200 && (d.Identity.Subject != tc.subject || d.Identity.Method != tc.method) {
				t.Fatalf("got %d %s identity %+v", d.Status, d.Reason, d.Identity)
			}
		})
	}
}

// TestClientCertFetched: a gateway that hands the certificate over on
// demand (Kong) is asked for it only when it may authenticate the caller
// (no credential header) or the policy reads tls_principal; a failing
// read denies with the adapter's refusal (or 503), never as a caller
// without credentials.
func TestClientCertFetched(t *testing.T) {
	readsPrincipal := evalInputFunc(func(build func(rego.Inputs) ast.Value) { build(rego.InputTLSPrincipal) })
	readsNone := evalInputFunc(func(build func(rego.Inputs) ast.Value) { build(0) })
	refused := &Refusal{Status: 503, Reason: "kong_pdk_error", Message: "service unavailable", Err: errors.New("injected")}
	for _, tc := range []struct {
		name     string
		authz    authorizer
		creds    map[string]string
		failWith error
		want     []Part
		status   int
		reason   string
	}{
		{"no credential: the certificate authenticates", readsNone, nil, nil, []Part{PartTLSPrincipal, PartTarget, PartBody}, 200, "allowed"},
		{"credential header: never asked", readsNone, map[string]string{"x-api-key": "mg_alice"}, nil, []Part{PartTarget, PartBody}, 200, "allowed"},
		{"credential header, policy reads it", readsPrincipal, map[string]string{"x-api-key": "mg_alice"}, nil, []Part{PartTarget, PartBody, PartTLSPrincipal}, 200, "allowed"},
		{"read refused", readsNone, nil, refused, []Part{PartTLSPrincipal}, 503, "kong_pdk_error"},
		{"read failed", readsNone, nil, errors.New("gone"), []Part{PartTLSPrincipal}, 503, "gateway_read_error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := testEngine(t, tc.authz)
			e.certs = certid.New(certid.Settings{{Principal: "spiffe://c/sa/batch", Subject: "batch", Roles: []string{"ml-engineer"}}})
			full := chat(tc.creds)
			var asked []Part
			req := &Request{Gateway: "kong", Headers: full.Headers, Fetch: func(r *Request, parts Part) error {
				asked = append(asked, parts)
				switch {
				case parts&PartTLSPrincipal != 0 && tc.failWith != nil:
					return tc.failWith
				case parts&PartTLSPrincipal != 0:
					r.TLSPrincipal = "spiffe://c/sa/batch"
				case parts&PartTarget != 0:
					r.Method, r.Path = full.Method, full.Path
				case parts&PartBody != 0:
					r.Body = full.Body
				}
				return nil
			}}
			d := e.Evaluate(context.Background(), req)
			if !slices.Equal(asked, tc.want) || d.Status != tc.status || d.Reason != tc.reason {
				t.Errorf("asked for %v, decided %d %s; want %v, %d %s", asked, d.Status, d.Reason, tc.want, tc.status, tc.reason)
			}
		})
	}
}
