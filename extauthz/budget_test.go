package extauthz

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/modelguard/modelguard/policy"
	"github.com/modelguard/modelguard/policy/admission"
	"github.com/modelguard/modelguard/policy/config"
)

// budgetDecider allows every request and has a body budget; the first
// hold requests wait inside Decide until release is closed.
type budgetDecider struct {
	*admission.Limit
	hold    int32
	seen    atomic.Int32
	entered chan struct{}
	release chan struct{}
}

func (b *budgetDecider) Decide(context.Context, *policy.Request) *policy.Decision {
	if b.seen.Add(1) <= b.hold {
		b.entered <- struct{}{}
		<-b.release
	}
	return &policy.Decision{ID: "d", Allow: true, Status: 200, Reason: "allowed"}
}

func (b *budgetDecider) Deny(id string, status int, reason, message string) *policy.Decision {
	return deciderFunc(nil).Deny(id, status, reason, message)
}

func (b *budgetDecider) MaxBodyBytes() int { return deciderFunc(nil).MaxBodyBytes() }

func (b *budgetDecider) ReserveBody(ctx context.Context, n int64) bool {
	return b.Acquire(ctx, n) == nil
}

func (b *budgetDecider) ReleaseBody(n int64) { b.Release(n) }

// TestBodyBudgetShedsOverRealGRPC: while two checks hold 1.4 MiB of a
// 2 MiB budget, a third (which must count a whole 1 MiB message while it is
// read) is answered at once with a 503 overloaded CheckResponse, without
// reaching the decider; when the two finish, checks pass again.
func TestBodyBudgetShedsOverRealGRPC(t *testing.T) {
	cfg := serverConfig(config.TLS{}) // max_message_bytes: 1 MiB
	d := &budgetDecider{Limit: admission.NewLimit(2<<20, 0), hold: 2,
		entered: make(chan struct{}), release: make(chan struct{})}
	s := start(t, cfg, d)
	client := authv3.NewAuthorizationClient(dial(t, s.GRPCAddr().String(), insecure.NewCredentials()))
	withBody := func() *authv3.CheckRequest {
		cr := checkReq()
		cr.Attributes.Request.Http.RawBody = bytes.Repeat([]byte{'x'}, 700<<10)
		return cr
	}

	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			resp, err := client.Check(context.Background(), withBody())
			if err != nil || resp.GetOkResponse() == nil {
				t.Errorf("held check: %v, %v", resp, err)
			}
		})
		<-d.entered
	}

	resp, err := client.Check(context.Background(), withBody())
	if err != nil {
		t.Fatalf("shed as a gRPC error (Envoy's status_on_error), want a CheckResponse: %v", err)
	}
	denied := resp.GetDeniedResponse()
	if denied.GetStatus().GetCode() != 503 || resp.GetDynamicMetadata().GetFields()["reason"].GetStringValue() != policy.ReasonOverloaded {
		t.Fatalf("over the budget: %v, want 503 %s", resp, policy.ReasonOverloaded)
	}
	if err := checkErrorBody(denied); err != nil {
		t.Error(err)
	}
	retry := false
	for _, h := range denied.GetHeaders() {
		retry = retry || h.GetHeader().GetKey() == "retry-after"
	}
	if !retry {
		t.Errorf("no retry-after on the overloaded answer: %v", denied.GetHeaders())
	}
	if n := d.seen.Load(); n != 2 {
		t.Errorf("the decider saw %d checks, want 2: the shed one must not be decided", n)
	}

	close(d.release)
	wg.Wait()
	if resp, err := client.Check(context.Background(), withBody()); err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("after the held checks finished: %v, %v", resp, err)
	}
}

// TestBodyBudgetHoldsTheMessageSize: once read, a check holds its
// message's size, not a whole max message: two checks holding 1.4 MiB of
// a 2.5 MiB budget leave room for a third to be read (1 MiB while reading).
func TestBodyBudgetHoldsTheMessageSize(t *testing.T) {
	cfg := serverConfig(config.TLS{}) // max_message_bytes: 1 MiB
	d := &budgetDecider{Limit: admission.NewLimit(5<<19, 0), hold: 2,
		entered: make(chan struct{}), release: make(chan struct{})}
	s := start(t, cfg, d)
	client := authv3.NewAuthorizationClient(dial(t, s.GRPCAddr().String(), insecure.NewCredentials()))
	cr := checkReq()
	cr.Attributes.Request.Http.RawBody = bytes.Repeat([]byte{'x'}, 700<<10)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			if resp, err := client.Check(context.Background(), cr); err != nil || resp.GetOkResponse() == nil {
				t.Errorf("held check: %v, %v", resp, err)
			}
		})
		<-d.entered
	}
	resp, err := client.Check(context.Background(), checkReq())
	close(d.release)
	wg.Wait()
	if err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("third check: %v, %v: the held checks count more than their messages", resp, err)
	}
}
