package policy

import (
	"context"
	"net"
	"net/http"

	"github.com/modelguard/modelguard/policy/models"
	"github.com/modelguard/modelguard/policy/ratelimit"
)

// limit applies the rate limits to a request the policy allowed, with the
// limit class the policy picked. It reports whether the request may go on;
// either way the x-ratelimit-* headers are added for the client.
func (e *Engine) limit(ctx context.Context, req *Request, d *Decision, id *Identity, mr *models.Model, class string) bool {
	if e.limiter.KeysBySource() {
		if err := req.Complete(PartSourceAddress); err != nil {
			e.refuse(d, req, err)
			return false
		}
	}
	lr := ratelimit.Request{
		Subject: id.Subject, KeyID: id.KeyID, Source: host(req.SourceAddress),
		Model: d.Model.Name, Roles: id.Roles, Class: class, Claims: id.Claims,
	}
	if mr != nil {
		// A model request decided without its body (Request.HeadersOnly)
		// whose operation is unknown reserves a completion, to be safe.
		completes := mr.Operation == "chat" || mr.Operation == "completion" || mr.Unchecked && mr.Operation == ""
		completion := mr.Facts.MaxTokens
		if completion == 0 {
			completion = e.modelMaxTokens[mr.Name]
		}
		lr.Tokens = e.limiter.Estimate(mr.Facts.PromptChars, completion, completes)
	}
	res, _ := e.limitResults.Get().(*ratelimit.Result)
	if res == nil {
		res = new(ratelimit.Result)
	}
	defer e.limitResults.Put(res)
	if err := e.limiter.Check(ctx, &lr, res); err != nil { // ratelimit.ErrUnavailable
		e.log.Error("rate limits could not be decided: denied", d.logIDs(), "request_id", req.ID, "error", err)
		e.deny(d, http.StatusServiceUnavailable, "ratelimit_unavailable", "service unavailable")
		return false
	}
	if res.Fallback {
		e.log.Warn("rate limits decided locally: redis unavailable", d.logIDs(), "request_id", req.ID)
	}
	res.Headers(func(name, value string) { d.ResponseHeaders = append(d.ResponseHeaders, Header{name, value}) })
	if res.Allowed {
		if e.holdLimits {
			d.Reservation = e.limiter.Hold(res)
		}
		return true
	}
	typ, code, msg := res.Error()
	e.deny(d, http.StatusTooManyRequests, res.Reason(), msg)
	d.ErrorType, d.ErrorCode = typ, code
	d.RateLimit, d.RateLimitKey = res.Rule, res.KeyKind
	return false
}

// host is addr without its port, when it has one.
func host(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}
