package policy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"golang.org/x/net/http/httpguts"

	"github.com/modelguard/modelguard/policy/apikey"
	"github.com/modelguard/modelguard/policy/jwtauth"
)

// credential names where a credential was found, so that it can be removed
// before the request goes upstream.
type credential struct{ header string }

// authenticate finds exactly one credential and verifies it. It returns the
// failure reason code for operators alongside the error.
func (e *Engine) authenticate(ctx context.Context, req *Request) (*Identity, credential, string, error) {
	if e.anonymous && !e.authenticates() {
		// Nothing to verify a credential with: the request is anonymous
		// and its credentials reach the policy and the upstream untouched
		// (a policy may verify a token itself, io.jwt.decode_verify).
		return &Identity{Method: "none"}, credential{}, "", nil
	}
	var (
		token, key, opaque string
		cred               credential
	)
	if e.keys != nil {
		if v, ok := req.Headers[e.apiKeyHeader]; ok {
			key, cred.header = v, e.apiKeyHeader
		}
	}
	if v, ok := req.Headers["authorization"]; ok {
		if cred.header != "" {
			return nil, cred, "credentials_ambiguous", errors.New("both an API key header and Authorization are present")
		}
		cred.header = "authorization"
		scheme, rest, found := strings.Cut(v, " ")
		if !found || !strings.EqualFold(scheme, "bearer") {
			return nil, cred, "auth_scheme_unsupported", errors.New("authorization is not a Bearer credential")
		}
		switch {
		case jwtauth.LooksLikeJWT(rest) && e.tokens != nil:
			token = rest
		case e.keys != nil && e.bearerKeys && !jwtauth.LooksLikeJWT(rest):
			key = rest
		case e.opaque != nil && !jwtauth.LooksLikeJWT(rest):
			opaque = rest
		default:
			return nil, cred, "credential_type_not_enabled", errors.New("bearer credential of a type that is not configured")
		}
	}
	if n := len(token) + len(key) + len(opaque); n > e.maxCredential {
		return nil, cred, "credential_too_long", fmt.Errorf("credential of %d bytes exceeds %d", n, e.maxCredential)
	}
	switch {
	case token != "":
		ji, err := e.tokens.Verify(ctx, token)
		if err != nil {
			return nil, cred, reasonOf(err, "jwt_invalid"), err
		}
		if err := headerSafe(ji.Subject, ji.Roles); err != nil {
			return nil, cred, "jwt_bad_claim", err
		}
		return &Identity{Subject: ji.Subject, Roles: ji.Roles, Method: "jwt", Issuer: ji.Issuer, Claims: ji.Claims,
			claimsValue: ji.Memo(identityClaims).(ast.Object)}, cred, "", nil
	case key != "":
		k, err := e.keys.Lookup(key)
		if err != nil {
			reason := reasonOf(err, "api_key_invalid")
			// A bearer value that is no key may be an opaque OAuth token.
			if e.opaque != nil && cred.header == "authorization" && (reason == apikey.ReasonUnknown || reason == apikey.ReasonMalformed) {
				return e.introspect(ctx, key, cred)
			}
			return nil, cred, reason, err
		}
		return &Identity{Subject: k.Subject, Roles: k.Roles, Method: "api_key", KeyID: k.ID}, cred, "", nil
	case opaque != "":
		return e.introspect(ctx, opaque, cred)
	case cred.header != "":
		return nil, cred, "credential_empty", errors.New("empty credential")
	case e.certs != nil:
		// Without a credential header, the client certificate the gateway
		// verified may authenticate the caller.
		if err := req.Complete(PartTLSPrincipal); err != nil {
			return nil, cred, "", asRefusal(err) // denied as refuse does, not as a caller's failure
		}
		if c, ok := e.certs.Lookup(req.TLSPrincipal); ok {
			return &Identity{Subject: c.Subject, Roles: c.Roles, Method: "client_cert"}, cred, "", nil
		}
		if e.anonymous {
			return &Identity{Method: "none"}, cred, "", nil
		}
		return nil, cred, "credentials_missing", errors.New("no credential, and no mapped client certificate, in the request")
	case e.anonymous:
		return &Identity{Method: "none"}, cred, "", nil
	default:
		return nil, cred, "credentials_missing", errors.New("no credential in the request")
	}
}

// introspect authenticates an opaque bearer token at the introspection
// endpoint.
func (e *Engine) introspect(ctx context.Context, token string, cred credential) (*Identity, credential, string, error) {
	ji, err := e.opaque.Introspect(ctx, token)
	if err != nil {
		return nil, cred, reasonOf(err, "token_invalid"), err
	}
	if err := headerSafe(ji.Subject, ji.Roles); err != nil {
		return nil, cred, "token_bad_claim", err
	}
	return &Identity{Subject: ji.Subject, Roles: ji.Roles, Method: "introspection", Issuer: ji.Issuer, Claims: ji.Claims}, cred, "", nil
}

// headerSafe checks a subject and roles that become upstream header
// values: a token must not smuggle header syntax (CR, LF) or split the
// roles list.
func headerSafe(subject string, roles []string) error {
	if !httpguts.ValidHeaderFieldValue(subject) || slices.ContainsFunc(roles, func(r string) bool { return !httpguts.ValidHeaderFieldValue(r) || strings.Contains(r, ",") }) {
		return errors.New("subject or role holds characters not allowed in a header value")
	}
	return nil
}

// authenticates reports whether a built-in authenticator (JWT issuers,
// API keys, token introspection, client certificates) is configured.
func (e *Engine) authenticates() bool {
	return e.tokens != nil || e.keys != nil || e.opaque != nil || e.certs != nil
}

// reasonOf extracts the reason code carried by the authentication packages'
// errors.
func reasonOf(err error, fallback string) string {
	var je *jwtauth.Error
	if errors.As(err, &je) {
		return je.Reason
	}
	var ke *apikey.Error
	if errors.As(err, &ke) {
		return ke.Reason
	}
	return fallback
}
