package policy

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/modelguard/modelguard/policy/audit"
	"github.com/modelguard/modelguard/policy/rego"
)

// shadowQueue bounds the decisions waiting for the shadow policy: beyond
// it they are dropped (and counted) rather than slowing requests down.
const shadowQueue = 1024

// shadowAuthorizer is the shadow policy: it evaluates the input built for
// the enforced one and says which optional inputs it reads, so that
// requests build them.
type shadowAuthorizer interface {
	Eval(ctx context.Context, input ast.Value) (rego.Result, error)
	Inputs() rego.Inputs
}

// shadow evaluates a second policy on the inputs the enforced one decided
// on, after the answer, on its own goroutine: its cost and its failures
// never reach the request. Disagreements are counted and recorded.
type shadow struct {
	policy   shadowAuthorizer
	jobs     chan shadowJob
	outcomes *prometheus.CounterVec
	record   func(*audit.Event) // queues a record without waiting
	log      *slog.Logger
}

// shadowJob is one decision for the shadow policy.
type shadowJob struct {
	decisionID, requestID, gateway string
	start                          time.Time
	input                          ast.Value
	enforced                       verdict
}

// verdict is a policy's answer as the shadow comparison sees it.
type verdict struct {
	result   string // allow, deny or error
	reason   string
	revision string
	err      error
}

func newVerdict(res rego.Result, err error) verdict {
	switch {
	case errors.Is(err, rego.ErrNoPolicy):
		return verdict{result: "error", reason: rego.ReasonUnavailable, err: err}
	case err != nil:
		return verdict{result: "error", reason: "policy_error", revision: res.Revision, err: err}
	case res.Allow:
		return verdict{result: "allow", revision: res.Revision}
	}
	_, reason, _ := policyDenial(res)
	return verdict{result: "deny", reason: reason, revision: res.Revision}
}

func newShadow(ctx context.Context, p shadowAuthorizer, outcomes *prometheus.CounterVec, record func(*audit.Event), log *slog.Logger) *shadow {
	s := &shadow{policy: p, jobs: make(chan shadowJob, shadowQueue), outcomes: outcomes, record: record, log: log}
	go s.run(ctx)
	return s
}

// reads are the optional inputs the shadow policy reads (none without one).
func (s *shadow) reads() rego.Inputs {
	if s == nil {
		return 0
	}
	return s.policy.Inputs()
}

// offer queues the decision for the shadow policy, without waiting.
func (s *shadow) offer(d *Decision, req *Request, input ast.Value, res rego.Result, err error) {
	if s == nil || input == nil {
		return
	}
	select {
	case s.jobs <- shadowJob{decisionID: d.ID, requestID: req.ID, gateway: req.Gateway, start: d.Start, input: input, enforced: newVerdict(res, err)}:
	default:
		s.outcomes.WithLabelValues("dropped").Inc()
	}
}

func (s *shadow) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-s.jobs:
			s.compare(ctx, j)
		}
	}
}

// compare evaluates the shadow policy on j's input, counts the outcome and
// records a disagreement or a shadow failure.
func (s *shadow) compare(ctx context.Context, j shadowJob) {
	var sv verdict
	func() {
		// A panic in the shadow policy is its failure, never the server's.
		defer func() {
			if r := recover(); r != nil {
				sv = verdict{result: "error", reason: "internal_error", err: errors.New("panic in the shadow policy")}
			}
		}()
		// Its print() output carries the decision id, as the enforced one's.
		sv = newVerdict(s.policy.Eval(rego.WithDecisionID(ctx, j.decisionID), j.input))
	}()
	outcome := "agree"
	switch {
	case sv.result == j.enforced.result:
	case sv.result == "error":
		outcome = "shadow_error"
	default:
		outcome = "disagree"
	}
	s.outcomes.WithLabelValues(outcome).Inc()
	if outcome == "agree" {
		return
	}
	s.log.Info("shadow policy "+outcome, "decision_id", j.decisionID, "request_id", j.requestID,
		"result", j.enforced.result, "reason", j.enforced.reason, "shadow_result", sv.result, "shadow_reason", sv.reason, "shadow_error", sv.err)
	ev := &audit.Event{
		Kind: audit.KindShadow, Time: j.start, DecisionID: j.decisionID, RequestID: j.requestID, Gateway: j.gateway,
		Result: j.enforced.result, Reason: j.enforced.reason, PolicyRevision: j.enforced.revision,
		ShadowResult: sv.result, ShadowReason: sv.reason, ShadowRevision: sv.revision,
	}
	if sv.err != nil {
		ev.Detail = truncate(sv.err.Error())
	}
	s.record(ev)
}

// policyDenial is the denial a policy's result asks for, with the defaults
// for what it leaves out (403, policy_denied, "access denied").
func policyDenial(res rego.Result) (status int, reason, message string) {
	status, reason, message = res.Status, res.Reason, res.Message
	if status == 0 {
		status = http.StatusForbidden
	}
	if reason == "" {
		reason = "policy_denied"
	}
	if message == "" {
		message = "access denied"
	}
	return status, reason, message
}
