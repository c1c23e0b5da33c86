package policy

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
)

// What both gateway adapters need from the core besides Evaluate, Decide
// and Record, so that neither re-derives it from the configuration nor
// keeps its own copy.

// RequestIDHeader is the request id header both gateways propagate.
const RequestIDHeader = "x-request-id"

// NewDecisionID returns a fresh decision id: 128 random bits in hex.
// crypto/rand does not fail on supported platforms (Go 1.24+).
func NewDecisionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	var h [32]byte // the string's only allocation (EncodeToString: two)
	hex.Encode(h[:], b[:])
	return string(h[:])
}

// Deny returns a denial the adapter decides rather than Evaluate: the core
// was not reached (the gateway could not hand the request over, a panic) or
// its answer could not be applied. id is NewDecisionID() for a new decision,
// or the id of the decision being overturned, so that logs, audit and the
// decision id header agree.
func (e *Engine) Deny(id string, status int, reason, message string) *Decision {
	d := &Decision{ID: id, Start: e.now()}
	e.deny(d, status, reason, message)
	return d
}

// Refusal is a denial an adapter decides while handing a request over (a
// body it cannot read, more header lines than the gateway returns). A
// Request.Fetch returns one, and Evaluate denies with it.
type Refusal struct {
	Status          int
	Reason, Message string
	Err             error // for operators
}

func (r *Refusal) Error() string { return r.Reason + ": " + r.Err.Error() }
func (r *Refusal) Unwrap() error { return r.Err }

// MaxBodyBytes is the largest body any model accepts: an adapter that reads
// the body itself needs no more to decide (a longer one is cut and flagged
// truncated).
func (e *Engine) MaxBodyBytes() int { return e.maxBody }

// DecisionIDHeader is the header carrying the decision id upstream on an
// allow and to the client on a denial ("" when disabled).
func (e *Engine) DecisionIDHeader() string { return e.identity.DecisionID }

// RecordsBody reports whether the decision record carries the hash of the
// request body: an adapter that reads the body only when the decision
// needs it (Kong) then reads it for the record too.
func (e *Engine) RecordsBody() bool { return e.bodySHA256 }

// AddHeader adds one header line to headers under its lower-case name,
// joining a repeated header's values with "," (no space), the form Envoy's
// CheckRequest header map uses and the core expects.
func AddHeader(headers map[string]string, name, value string) {
	name = strings.ToLower(name)
	if prev, ok := headers[name]; ok {
		value = prev + "," + value
	}
	headers[name] = value
}

// RequestID is the request's id for correlation: its x-request-id header,
// else fallback (a gateway's own id, or "").
func RequestID(headers map[string]string, fallback string) string {
	if id := headers[RequestIDHeader]; id != "" {
		return id
	}
	return fallback
}

// UnderscoreVariants returns the header names in headers (lower-case, as
// adapters hand them to the core) that are not one of names but become one
// when "_" is read as "-". Kong runs nginx with underscores_in_headers on
// and Envoy passes such names by default (headers_with_underscores_action
// ALLOW), while many upstream frameworks (CGI and WSGI environments, Rails,
// ...) fold "_" and "-" together: a client's x_modelguard_subject would
// reach them as the identity header. Adapters remove these too. Allocates
// only when a variant is found.
func UnderscoreVariants(headers map[string]string, names []string) []string {
	var out []string
	for h := range headers {
		if strings.IndexByte(h, '_') < 0 {
			continue
		}
		for _, n := range names {
			if len(n) == len(h) && foldsTo(h, n) && h != n {
				out = append(out, h)
				break
			}
		}
	}
	return out
}

// foldsTo reports whether h equals name, ASCII case-insensitively, with
// "_" read as "-"; both have the same length.
func foldsTo(h, name string) bool {
	for i := 0; i < len(h); i++ {
		if foldByte(h[i]) != foldByte(name[i]) {
			return false
		}
	}
	return true
}

func foldByte(c byte) byte {
	switch {
	case c == '_':
		return '-'
	case 'A' <= c && c <= 'Z':
		return c + 'a' - 'A'
	}
	return c
}
