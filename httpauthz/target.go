package httpauthz

import (
	"errors"
	"net/http"
	"strings"

	"github.com/modelguard/modelguard/policy"
)

// A targetParser sets the checked request's method, path, query, host,
// scheme and source address from the headers a gateway's subrequest
// carries, or returns the refusal that denies it (once the caller is
// authenticated, so that the audit record shows who). Each endpoint reads
// only its own gateway's headers: a header another gateway would set is
// one the client may have sent.
type targetParser func(req *policy.Request, r *http.Request) *policy.Refusal

// nginxTarget reads what nginx/modelguard.conf sets on the subrequest:
// X-Original-Method and X-Original-URI ($request_method, $request_uri),
// Host ($host), X-Forwarded-Proto ($scheme) and X-Real-IP ($remote_addr).
func nginxTarget(req *policy.Request, r *http.Request) *policy.Refusal {
	req.Method = req.Headers["x-original-method"]
	req.Host = r.Host
	req.Scheme = req.Headers["x-forwarded-proto"]
	req.SourceAddress = req.Headers["x-real-ip"]
	return setTarget(req, req.Headers["x-original-uri"], "X-Original-Method and X-Original-URI")
}

// ingressNginxTarget reads what ingress-nginx's auth-url sends:
// X-Original-Method, X-Original-URL ($scheme://$http_host$request_uri)
// and X-Real-IP.
func ingressNginxTarget(req *policy.Request, r *http.Request) *policy.Refusal {
	req.Method = req.Headers["x-original-method"]
	req.SourceAddress = req.Headers["x-real-ip"]
	url := req.Headers["x-original-url"]
	scheme, rest, ok := strings.Cut(url, "://")
	if !ok {
		return setTarget(req, "", "X-Original-Method and an absolute X-Original-URL")
	}
	host, target, _ := strings.Cut(rest, "/")
	req.Scheme, req.Host = scheme, host
	return setTarget(req, "/"+target, "X-Original-Method and an absolute X-Original-URL")
}

// forwardTarget reads what Traefik's forwardAuth and Caddy's forward_auth
// set: X-Forwarded-Method, -Uri, -Host, -Proto and -For.
func forwardTarget(req *policy.Request, r *http.Request) *policy.Refusal {
	req.Method = req.Headers["x-forwarded-method"]
	req.Host = req.Headers["x-forwarded-host"]
	req.Scheme = req.Headers["x-forwarded-proto"]
	req.SourceAddress = lastForwardedFor(req.Headers["x-forwarded-for"])
	return setTarget(req, req.Headers["x-forwarded-uri"], "X-Forwarded-Method and X-Forwarded-Uri")
}

// setTarget sets req's path and query from an origin-form target. Without
// a method or target the gateway is misconfigured: 503, and the operator
// learns which headers to set.
func setTarget(req *policy.Request, target, need string) *policy.Refusal {
	if req.Method == "" || target == "" {
		return &policy.Refusal{Status: http.StatusServiceUnavailable, Reason: "subrequest_target_missing",
			Message: "service unavailable", Err: errors.New("the gateway must set " + need + " on the authentication subrequest")}
	}
	if target[0] != '/' {
		return &policy.Refusal{Status: http.StatusBadRequest, Reason: "route_ambiguous",
			Message: "request path or method not accepted for a model API", Err: errors.New("request target not in origin form")}
	}
	req.Path, req.Query = splitTarget(target)
	return nil
}

// splitTarget cuts a request target into its path and query, dropping a
// fragment.
func splitTarget(target string) (path, query string) {
	path, query, _ = strings.Cut(target, "?")
	path, _, _ = strings.Cut(path, "#")
	query, _, _ = strings.Cut(query, "#")
	return path, query
}

// lastForwardedFor is the address the gateway itself appended to
// X-Forwarded-For: its peer. Earlier entries are the client's to write.
func lastForwardedFor(xff string) string {
	if i := strings.LastIndexByte(xff, ','); i >= 0 {
		xff = xff[i+1:]
	}
	return strings.TrimSpace(xff)
}
