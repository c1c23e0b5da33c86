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
		token, key string
		cred       credential
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
		default:
			return nil, cred, "credential_type_not_enabled", errors.New("bearer credential of a type that is not configured")
		}
	}
	if len(token)+len(key) > e.maxCredential {
		return nil, cred, "credential_too_long", fmt.Errorf("credential of %d bytes exceeds %d", len(token)+len(key), e.maxCredential)
	}
	switch {
	case token != "":
		ji, err := e.tokens.Verify(ctx, token)
		if err != nil {
			return nil, cred, reasonOf(err, "jwt_invalid"), err
		}
		// Subject and roles become upstream header values: a signed token
		// must not smuggle header syntax (CR, LF) or split the roles list.
		if !httpguts.ValidHeaderFieldValue(ji.Subject) || slices.ContainsFunc(ji.Roles, func(r string) bool { return !httpguts.ValidHeaderFieldValue(r) || strings.Contains(r, ",") }) {
			return nil, cred, "jwt_bad_claim", errors.New("subject or role holds characters not allowed in a header value")
		}
		return &Identity{Subject: ji.Subject, Roles: ji.Roles, Method: "jwt", Issuer: ji.Issuer, Claims: ji.Claims,
			claimsValue: ji.Memo(identityClaims).(ast.Object)}, cred, "", nil
	case key != "":
		k, err := e.keys.Lookup(key)
		if err != nil {
			return nil, cred, reasonOf(err, "api_key_invalid"), err
		}
		return &Identity{Subject: k.Subject, Roles: k.Roles, Method: "api_key", KeyID: k.ID}, cred, "", nil
	case cred.header != "":
		return nil, cred, "credential_empty", errors.New("empty credential")
	case e.anonymous:
		return &Identity{Method: "none"}, cred, "", nil
	default:
		return nil, cred, "credentials_missing", errors.New("no credential in the request")
	}
}

// authenticates reports whether a built-in authenticator (JWT issuers,
// API keys) is configured.
func (e *Engine) authenticates() bool { return e.tokens != nil || e.keys != nil }

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
