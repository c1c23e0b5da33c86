package test

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/modelguard/modelguard/test/testkit"
	"github.com/modelguard/modelguard/test/testkit/demo"
)

const (
	e2eTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	e2eSpanID  = "00f067aa0ba902b7"
)

// tracingSection turns tracing on towards a receiver.
func tracingSection(r *testkit.OTLPReceiver, exporter, extra string) string {
	return fmt.Sprintf("tracing:\n  enabled: true\n  exporter: %s\n  endpoint: %s\n%s", exporter, r.Endpoint, extra)
}

// stopTracing flushes the env's spans to the collector, as a graceful stop
// does.
func (e *env) stopTracing() {
	if e.tracer == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), testkit.WaitLimit)
	defer cancel()
	if err := e.tracer.Shutdown(ctx); err != nil {
		e.t.Errorf("tracing shutdown: %v", err)
	}
}

// traceSpans returns the spans of one trace by name.
func traceSpans(r *testkit.OTLPReceiver, traceID string) map[string]testkit.ReceivedSpan {
	out := map[string]testkit.ReceivedSpan{}
	for _, s := range r.Spans() {
		if fmt.Sprintf("%x", s.GetTraceId()) == traceID {
			out[s.GetName()] = s
		}
	}
	return out
}

func sortedNames(m map[string]testkit.ReceivedSpan) []string {
	var names []string
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// checkDecisionTrace checks one traced decision: its spans as documented,
// children of the decision span, whose parent is the caller's span, and
// its audit record naming the trace.
func checkDecisionTrace(t *testing.T, spans map[string]testkit.ReceivedSpan, want []string, parentSpanID, decisionID, reason string, record map[string]any) {
	t.Helper()
	if got := sortedNames(spans); !slices.Equal(got, want) {
		t.Fatalf("spans %v, want %v", got, want)
	}
	root := spans["modelguard.decision"]
	if got := fmt.Sprintf("%x", root.GetParentSpanId()); got != parentSpanID {
		t.Errorf("decision span's parent %s, want the caller's span %s", got, parentSpanID)
	}
	for name, s := range spans {
		if name != "modelguard.decision" && string(s.GetParentSpanId()) != string(root.GetSpanId()) {
			t.Errorf("%s is not a child of the decision span", name)
		}
	}
	if root.Service != "modelguard" || root.Attr("modelguard.decision_id") != decisionID || root.Attr("modelguard.reason") != reason ||
		root.Attr("modelguard.model") != "gpt-4o-mini" || root.Attr("modelguard.operation") != "chat" {
		t.Errorf("decision span (service %q) attributes %v", root.Service, root.GetAttributes())
	}
	if record["trace_id"] != fmt.Sprintf("%x", root.GetTraceId()) || record["span_id"] != fmt.Sprintf("%x", root.GetSpanId()) {
		t.Errorf("audit record trace_id %v span_id %v, want the decision span's", record["trace_id"], record["span_id"])
	}
}

// A real decision through the Envoy harness is traced to an OTLP collector
// over gRPC and over HTTP: the request's W3C or B3 trace context is the
// parent, the spans are the documented ones, and nothing the caller sent
// (credential, body text) nor who they are is in any export.
func TestTracingThroughEnvoy(t *testing.T) {
	for _, exporter := range []string{"otlp-grpc", "otlp-http"} {
		t.Run(exporter, func(t *testing.T) {
			rcv := testkit.NewOTLPGRPCReceiver(t)
			if exporter == "otlp-http" {
				rcv = testkit.NewOTLPHTTPReceiver(t)
			}
			e := newEnv(t, envOptions{tracing: tracingSection(rcv, exporter, "")})
			jwtToken := token(t, jwt.SigningMethodRS256, e.signer, "k1", nil)
			allowed := []string{"modelguard.audit", "modelguard.authenticate", "modelguard.body", "modelguard.decision", "modelguard.policy", "modelguard.rate_limits"}
			denied := []string{"modelguard.audit", "modelguard.authenticate", "modelguard.body", "modelguard.decision", "modelguard.policy"}
			tests := []struct {
				name    string
				headers map[string]string
				traceID string
				status  int
				reason  string
				spans   []string
			}{
				{"W3C traceparent, API key", map[string]string{"x-api-key": e.keys["alice-key"],
					"traceparent": "00-" + e2eTraceID + "-" + e2eSpanID + "-01", "tracestate": "vendor=x"}, e2eTraceID, 200, "allowed", allowed},
				{"B3 multiple headers, JWT", map[string]string{"authorization": "Bearer " + jwtToken,
					"x-b3-traceid": "5bf92f3577b34da6a3ce929d0e0e4736", "x-b3-spanid": e2eSpanID, "x-b3-sampled": "1"}, "5bf92f3577b34da6a3ce929d0e0e4736", 200, "allowed", allowed},
				{"B3 single header, denied", map[string]string{"x-api-key": e.keys["reader-key"],
					"b3": "6bf92f3577b34da6a3ce929d0e0e4736-" + e2eSpanID + "-1"}, "6bf92f3577b34da6a3ce929d0e0e4736", 403, "", denied},
			}
			type sent struct {
				decisionID, reason string
				record             map[string]any
			}
			got := make([]sent, len(tests))
			for i, tc := range tests {
				r := e.do("POST", "/v1/chat/completions", tc.headers, chatBody("gpt-4o-mini"))
				if r.status != tc.status {
					t.Fatalf("%s: status %d (%s)", tc.name, r.status, r.body)
				}
				id, _ := r.log.Metadata["decision_id"].(string)
				rec := e.gatewayAuditEvent(t, "envoy", r.log.RequestID)[0]
				got[i] = sent{id, rec["reason"].(string), rec}
			}
			e.stopTracing()
			for i, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					checkDecisionTrace(t, traceSpans(rcv, tc.traceID), tc.spans, e2eSpanID, got[i].decisionID, got[i].reason, got[i].record)
				})
			}
			for what, s := range map[string]string{"API key": e.keys["alice-key"], "JWT": jwtToken, "JWT signature": jwtToken[strings.LastIndexByte(jwtToken, '.')+1:],
				"body text": "Hello", "subject": "alice", "key id": "reader-key"} {
				if rcv.Contains(s) {
					t.Errorf("the exported spans hold the %s", what)
				}
			}
		})
	}
}

// Sampling 0 for every decision exports nothing, even for a caller that
// sampled its trace; the audit record still names the caller's trace (it
// exists upstream) but no span.
func TestTracingSampleZero(t *testing.T) {
	rcv := testkit.NewOTLPGRPCReceiver(t)
	e := newEnv(t, envOptions{tracing: tracingSection(rcv, "otlp-grpc", "  sample_ratio: 0\n  follow_parent: false\n")})
	r := e.do("POST", "/v1/chat/completions", map[string]string{"x-api-key": e.keys["alice-key"],
		"traceparent": "00-" + e2eTraceID + "-" + e2eSpanID + "-01"}, chatBody("gpt-4o-mini"))
	if r.status != 200 {
		t.Fatalf("status %d (%s)", r.status, r.body)
	}
	rec := e.gatewayAuditEvent(t, "envoy", r.log.RequestID)[0]
	e.stopTracing()
	if n := rcv.Exports(); n != 0 {
		t.Errorf("%d exports with sampling 0", n)
	}
	if rec["trace_id"] != e2eTraceID || rec["span_id"] != nil {
		t.Errorf("audit record trace_id %v span_id %v", rec["trace_id"], rec["span_id"])
	}
}

// Behind Kong the plugin reads traceparent from the request headers it
// decides on; stopping the plugin server (SIGTERM, as Kong does) flushes
// the spans.
func TestTracingThroughKong(t *testing.T) {
	rcv := testkit.NewOTLPGRPCReceiver(t)
	e := newEnv(t, envOptions{tracing: tracingSection(rcv, "otlp-grpc", "")})
	e.stopTracing() // the env's own server decides nothing here
	k := newKongEnv(t, e, kongBinary(t))
	r := k.do("POST", "/v1/chat/completions", map[string]string{"x-api-key": e.keys["alice-key"],
		"traceparent": "00-" + e2eTraceID + "-" + e2eSpanID + "-01"}, []byte(chatBody("gpt-4o-mini")))
	if r.status != 200 {
		t.Fatalf("status %d (%s)", r.status, r.body)
	}
	rec := e.gatewayAuditEvent(t, "kong", r.id)[0]
	if err := k.proc.Stop(); err != nil {
		t.Fatalf("plugin server stop: %v", err)
	}
	spans := traceSpans(rcv, e2eTraceID)
	checkDecisionTrace(t, spans, []string{"modelguard.audit", "modelguard.authenticate", "modelguard.body", "modelguard.decision", "modelguard.policy", "modelguard.rate_limits"},
		e2eSpanID, rec["decision_id"].(string), "allowed", rec)
	if g := spans["modelguard.decision"].Attr("modelguard.gateway"); g != "kong" {
		t.Errorf("gateway attribute %q", g)
	}
}

// serve flushes the spans of its last decisions when SIGTERM stops it; with
// tracing off it exports nothing.
func TestTracingServeFlushOnSIGTERM(t *testing.T) {
	bin := buildBinary(t)
	for _, enabled := range []bool{true, false} {
		t.Run(fmt.Sprint("enabled=", enabled), func(t *testing.T) {
			dir := demo.Dir(t)
			key := demo.WriteKeys(t, dir, "mg_", demo.Alice)[demo.Alice.ID]
			rcv := testkit.NewOTLPGRPCReceiver(t)
			cfg := writeServeConfig(t, dir, fmt.Sprintf("tracing: {enabled: %v, endpoint: %q}\naudit: {output: \"off\"}\n", enabled, rcv.Endpoint))
			srv := startServe(t, bin, cfg)
			out, err := exec.Command(bin, "check", "-server", srv.grpc, "-H", "x-api-key: "+key,
				"-H", "traceparent: 00-"+e2eTraceID+"-"+e2eSpanID+"-01",
				"-d", chatBody("gpt-4o-mini"), "POST", "/v1/chat/completions").CombinedOutput()
			if err != nil {
				t.Fatalf("check: %v: %s", err, out)
			}
			srv.stop(t)
			// The batch exporter would send them 5 s later: only the flush
			// at stop can have delivered them by now.
			spans := traceSpans(rcv, e2eTraceID)
			if want := []string{"modelguard.audit", "modelguard.authenticate", "modelguard.body", "modelguard.decision", "modelguard.policy"}; enabled && !slices.Equal(sortedNames(spans), want) {
				t.Errorf("after SIGTERM the collector has spans %v, want the decision's %v", sortedNames(spans), want)
			}
			if !enabled && rcv.Exports() != 0 {
				t.Errorf("tracing off, yet %d exports", rcv.Exports())
			}
		})
	}
}
