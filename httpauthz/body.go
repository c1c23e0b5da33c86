package httpauthz

import (
	"context"
	"errors"
	"io"
	"net/http"

	"github.com/modelguard/modelguard/policy"
)

// partialBodyHeader is the marker Envoy adds when it buffered a body for
// the check: "true" when it cut the body at max_request_bytes. The HTTP
// service receives it only when allowed_headers lists it.
const partialBodyHeader = "x-envoy-auth-partial-body"

var errNoBody = errors.New("the gateway's authentication subrequest carries no body")

// envoyBody reads the body Envoy forwards, once, when the core asks for it
// (a model request from an authenticated caller) or the audit record
// hashes it. It holds room in the body budget until release.
type envoyBody struct {
	h    *Handler
	r    *http.Request
	done bool
	err  error
	held int64
}

func (b *envoyBody) fetch(req *policy.Request, parts policy.Part) error {
	if parts&policy.PartBody != 0 {
		b.read(b.r.Context(), req)
	}
	return b.err
}

// read sets req's body from the request. Envoy's HTTP client sends its own
// content-length (the forwarded bytes), never the client's, so a cut body
// is known only from the marker: without it (the header is not in
// allowed_headers, or with_request_body is off) the body is treated as not
// forwarded, and a model request is refused rather than checked on a body
// that may be partial. A body of exactly the limit with marker "false" may
// still be cut (docs/envoy-ext-authz.md), and counts as cut.
func (b *envoyBody) read(ctx context.Context, req *policy.Request) {
	if b.done {
		return
	}
	b.done = true
	marker := req.Headers[partialBodyHeader]
	if marker == "" {
		req.BodyOmitted = true
		return
	}
	maxBody := b.h.decider.MaxBodyBytes()
	size := int64(maxBody) + 1 // one more byte tells a body over the limit
	if cl := b.r.ContentLength; cl >= 0 && cl < size {
		size = cl
	}
	if b.h.budget != nil {
		if !b.h.budget.ReserveBody(ctx, size) {
			b.err = &policy.Refusal{Status: http.StatusServiceUnavailable, Reason: policy.ReasonOverloaded,
				Message: "server overloaded, retry later", Err: errors.New("no room in admission.max_inflight_body_bytes")}
			return
		}
		b.held = size
	}
	body, err := readAtMost(b.r.Body, size)
	if err != nil {
		b.err = err // the core denies 503 gateway_read_error
		return
	}
	if len(body) == 0 {
		// Envoy buffered a body but sent none: pack_as_bytes puts it
		// where its HTTP client does not look.
		req.BodyOmitted = true
		return
	}
	if len(body) > maxBody {
		body = body[:maxBody]
	}
	req.Body = body
	req.BodyTruncated = marker != "false" || len(body) >= maxBody
}

func (b *envoyBody) release() {
	if b.held > 0 {
		b.h.budget.ReleaseBody(b.held)
	}
}

// readAtMost reads up to n bytes of r into one buffer of that size (the
// content-length Envoy sends sizes it exactly). Only a clean end of the
// body is one: a body that ends before its content-length (the connection
// dropped) is an error, never a shorter whole (io.ReadFull would not tell
// them apart).
func readAtMost(r io.Reader, n int64) ([]byte, error) {
	buf := make([]byte, n)
	got := 0
	for got < len(buf) {
		m, err := r.Read(buf[got:])
		got += m
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	return buf[:got], nil
}
