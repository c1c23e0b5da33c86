package kongplugin

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/Kong/go-pdk"
	"github.com/Kong/go-pdk/client"
	"github.com/Kong/go-pdk/entities"
	kpp "github.com/Kong/go-pdk/server/kong_plugin_protocol"
	"github.com/google/uuid"
	"golang.org/x/net/http/httpguts"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/modelguard/modelguard/kongplugin/kongpath"
	"github.com/modelguard/modelguard/policy"
	"github.com/modelguard/modelguard/policy/certid"
)

const gateway = "kong"

// maxHeaders is what the access phase asks kong.request.get_headers for:
// Kong's maximum. go-pdk turns -1 into 100, and Kong silently drops header
// lines past the limit, so a request with that many lines is refused
// rather than decided on a partial view.
const maxHeaders = 1000

// The headers Kong's own authentication plugins set for the upstream
// (constants.HEADERS in Kong); client-sent copies never pass.
const (
	headerConsumerID       = "X-Consumer-ID"
	headerConsumerCustomID = "X-Consumer-Custom-ID"
	headerConsumerUsername = "X-Consumer-Username"
	headerCredentialID     = "X-Credential-Identifier"
	headerAnonymous        = "X-Anonymous-Consumer"
)

// kongHeaders are the consumer headers above as the request map names them.
var kongHeaders = []string{strings.ToLower(headerConsumerID), strings.ToLower(headerConsumerCustomID),
	strings.ToLower(headerConsumerUsername), strings.ToLower(headerCredentialID), strings.ToLower(headerAnonymous)}

// readHeaders starts the request from one kong.request.get_headers call;
// the core asks for the rest through Fetch (fetcher), so that a request is
// read only as far as its decision needs. The host comes from the Host
// header (nginx adds it from :authority for HTTP/2). A failed call is an
// error; a request with more header lines than Kong returns is a
// *policy.Refusal.
func readHeaders(kong *pdk.PDK) (req *policy.Request, lines int, err error) {
	var hs structpb.Struct
	if err := kong.Request.Ask("kong.request.get_headers", &kpp.Int{V: maxHeaders}, &hs); err != nil {
		return nil, 0, fmt.Errorf("kong.request.get_headers: %w", err)
	}
	headers, lines := foldHeaders(&hs)
	req = &policy.Request{Gateway: gateway, Headers: headers, ID: policy.RequestID(headers, ""), Host: headers["host"]}
	if lines >= maxHeaders {
		return req, lines, &policy.Refusal{Status: http.StatusRequestHeaderFieldsTooLarge, Reason: "request_headers_too_many", Message: "too many request headers",
			Err: fmt.Errorf("%d header lines: Kong returns at most %d", lines, maxHeaders)}
	}
	return req, lines, nil
}

// fetcher reads the parts of a request the core asks for (policy.Part),
// one PDK call each: the request line ($request, through
// kong.nginx.get_var) for the method and path, get_raw_body,
// get_raw_query, get_scheme, client.get_forwarded_ip (or client.get_ip
// with client_ip: direct), and nginx's client certificate variables.
type fetcher struct {
	kong    *pdk.PDK
	maxBody int
	direct  bool
	// noRequestLine: Plugin.noRequestLine.
	noRequestLine bool
	// principals: Plugin.principals.
	principals *certid.Principals
	// query is the request line's query, once read.
	query    string
	hasQuery bool
	// failure is the read that failed, for the operator message access
	// sends once the decision has its id.
	failure *policy.Refusal
}

func (f *fetcher) fetch(req *policy.Request, parts policy.Part) error {
	kong := f.kong
	var err error
	if parts&policy.PartTarget != 0 {
		if err := f.target(req); err != nil {
			return err
		}
	}
	if parts&policy.PartBody != 0 {
		if err := f.body(req); err != nil {
			return err
		}
	}
	if parts&policy.PartQuery != 0 {
		if f.hasQuery {
			req.Query = f.query
		} else if req.Query, err = kong.Request.GetRawQuery(); err != nil {
			return f.failed("kong.request.get_raw_query", err)
		}
	}
	if parts&policy.PartScheme != 0 {
		if req.Scheme, err = kong.Request.GetScheme(); err != nil {
			return f.failed("kong.request.get_scheme", err)
		}
	}
	if parts&policy.PartSourceAddress != 0 {
		// Kong gives the address without its port. get_ip is the peer (a
		// load balancer, behind one); get_forwarded_ip honours Kong's
		// trusted_ips and real_ip_header, as Kong's own plugins do.
		if f.direct {
			req.SourceAddress, err = kong.Client.GetIp()
		} else {
			req.SourceAddress, err = kong.Client.GetForwardedIp()
		}
		if err != nil {
			return f.failed("kong.client address", err)
		}
	}
	if parts&policy.PartTLSPrincipal != 0 {
		if err := f.principal(req); err != nil {
			return err
		}
	}
	return nil
}

// principal sets the client certificate's principal, derived as Envoy
// derives source.principal (certid.FromPEM), from what nginx verified in
// the TLS handshake: a certificate counts only when $ssl_client_verify is
// exactly SUCCESS (not NONE, not FAILED:reason, not nil on a plain-text
// connection; ssl_verify_client optional_no_ca lets unverified
// certificates through as FAILED). One get_var for a request without a
// verified certificate, two with one ($ssl_client_raw_cert), three when
// the certificate has no URI or DNS SAN ($ssl_client_s_dn). A
// certificate that does not parse is no identity, and reported.
func (f *fetcher) principal(req *policy.Request) error {
	verify, err := f.kong.Nginx.GetVar("ssl_client_verify")
	if err != nil {
		return f.failed("kong.nginx.get_var ssl_client_verify", err)
	}
	if verify != "SUCCESS" {
		return nil
	}
	cert, err := f.kong.Nginx.GetVar("ssl_client_raw_cert")
	if err != nil {
		return f.failed("kong.nginx.get_var ssl_client_raw_cert", err)
	}
	p, err := f.principals.FromPEM(cert, func() (string, error) {
		dn, err := f.kong.Nginx.GetVar("ssl_client_s_dn")
		if err != nil {
			return "", f.failed("kong.nginx.get_var ssl_client_s_dn", err)
		}
		return dn, nil
	})
	if errors.Is(err, certid.ErrMalformed) {
		tell(f.kong.Log.Warn, "the verified client certificate is no identity", "error", err.Error())
		return nil
	}
	req.TLSPrincipal = p
	return err
}

// target sets the method and path from the request line in one call:
// $request is the method, the target as received and the protocol (nginx
// builds it from :method and :path for HTTP/2), so its target's path is
// kong.request.get_raw_path and kongpath.Normalize of it
// kong.request.get_path, the normalised path Kong routes on and forwards
// (escaped reserved characters such as %2F stay escaped). A target not in
// origin form (absolute, "*") falls back to get_method and get_path.
func (f *fetcher) target(req *policy.Request) error {
	if !f.noRequestLine {
		line, err := f.kong.Nginx.GetVar("request")
		if err != nil {
			return f.failed("kong.nginx.get_var request", err)
		}
		method, rest, ok1 := strings.Cut(line, " ")
		target, _, ok2 := strings.Cut(rest, " ")
		if ok1 && ok2 && method != "" && strings.HasPrefix(target, "/") && !strings.Contains(rest[len(target)+1:], " ") {
			path, query, _ := strings.Cut(target, "?")
			req.Method, req.Path = method, kongpath.Normalize(path)
			f.query, f.hasQuery = query, true
			return nil
		}
	}
	var err error
	if req.Method, err = f.kong.Request.GetMethod(); err != nil {
		return f.failed("kong.request.get_method", err)
	}
	if req.Path, err = f.kong.Request.GetPath(); err != nil {
		return f.failed("kong.request.get_path", err)
	}
	return nil
}

func (f *fetcher) body(req *policy.Request) error {
	var rb kpp.RawBodyResult
	if err := f.kong.Request.Ask("kong.request.get_raw_body", nil, &rb); err != nil {
		return f.failed("kong.request.get_raw_body", err)
	}
	unreadable := func(err error) error {
		f.failure = &policy.Refusal{Status: http.StatusServiceUnavailable, Reason: "body_unreadable", Message: "service unavailable", Err: err}
		return f.failure
	}
	switch k := rb.Kind.(type) {
	case *kpp.RawBodyResult_Content:
		req.Body = k.Content
	case *kpp.RawBodyResult_BodyFilepath:
		b, truncated, err := readSpilled(k.BodyFilepath, f.maxBody)
		if err != nil {
			return unreadable(err)
		}
		req.Body, req.BodyTruncated = b, truncated
	case *kpp.RawBodyResult_Error:
		return unreadable(fmt.Errorf("kong.request.get_raw_body: %s", k.Error))
	}
	return nil
}

// failed denies (503 kong_pdk_error) a request whose PDK call failed.
func (f *fetcher) failed(call string, err error) error {
	f.failure = &policy.Refusal{Status: http.StatusServiceUnavailable, Reason: "kong_pdk_error", Message: "service unavailable", Err: fmt.Errorf("%s: %w", call, err)}
	return f.failure
}

// foldHeaders turns ngx.req.get_headers' shape (a string, or a list for a
// repeated header) into lower-case names with repeats joined by ",", and
// counts the header lines.
func foldHeaders(hs *structpb.Struct) (map[string]string, int) {
	out := make(map[string]string, len(hs.GetFields()))
	lines := 0
	for name, v := range hs.GetFields() {
		var value string
		switch k := v.GetKind().(type) {
		case *structpb.Value_StringValue:
			value = k.StringValue
			lines++
		case *structpb.Value_ListValue:
			vals := k.ListValue.GetValues()
			parts := make([]string, 0, len(vals))
			for _, e := range vals {
				parts = append(parts, e.GetStringValue())
			}
			value = strings.Join(parts, ",")
			lines += len(vals)
		default:
			continue
		}
		policy.AddHeader(out, name, value)
	}
	return out, lines
}

// readSpilled reads a body nginx wrote to a file (bodies larger than
// client_body_buffer_size). It reads at most max bytes: a longer body is
// cut and flagged truncated, which the core refuses for model requests
// (413), rather than loaded whole into memory.
func readSpilled(path string, max int) ([]byte, bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, false, fmt.Errorf("spilled request body: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, int64(max)+1))
	if err != nil {
		return nil, false, fmt.Errorf("spilled request body %s: %w", path, err)
	}
	if len(b) > max {
		return b[:max], true, nil
	}
	return b, false, nil
}

// applyAllow makes the upstream changes of an allowed request: one
// set_headers call sets the identity headers and Kong's consumer headers
// and clears the headers to remove that the request has (the credential;
// identity and Kong headers not set, when the client sent them: an empty
// array clears a header, as ngx.req.set_header does with an empty table);
// kong.client.authenticate when consumer is on; the groups for Kong's acl
// plugin when groups is on and there are roles; the policy's
// dynamic_metadata in kong.ctx.shared (metadataKey) and its response
// headers when it gave any. headers is the request's, as read in this
// access phase (with the changes of plugins that ran before). Names are
// sent in lower case, so that a name set and cleared cannot collide.
func applyAllow(kong *pdk.PDK, d *policy.Decision, headers map[string]string, consumer, groups bool) error {
	set := &structpb.Struct{Fields: make(map[string]*structpb.Value, len(d.UpstreamHeaders)+4)}
	for _, h := range d.UpstreamHeaders {
		set.Fields[strings.ToLower(h.Name)] = structpb.NewStringValue(h.Value)
	}
	// Kong's headers win over a policy header of the same name.
	setKong := func(name, value string) { set.Fields[strings.ToLower(name)] = structpb.NewStringValue(value) }
	remove := d.RemoveHeaders
	who, cred := consumerOf(d.Identity)
	if who != nil {
		setKong(headerConsumerID, who.Id)
		setKong(headerConsumerCustomID, who.CustomId)
		setKong(headerConsumerUsername, who.Username)
		setKong(headerCredentialID, cred.Id)
		remove = append(remove[:len(remove):len(remove)], headerAnonymous)
	} else {
		setKong(headerAnonymous, "true")
		remove = append(remove[:len(remove):len(remove)], headerConsumerID, headerConsumerCustomID, headerConsumerUsername, headerCredentialID)
	}
	// nginx passes names with "_" (underscores_in_headers on) and
	// clearing does not fold "_" into "-": clear a client's X_Consumer_ID
	// too (the core does the same for its own headers).
	remove = append(remove[:len(remove):len(remove)], policy.UnderscoreVariants(headers, kongHeaders)...)
	for name, v := range set.Fields {
		if !httpguts.ValidHeaderFieldValue(v.GetStringValue()) {
			return fmt.Errorf("upstream header %s: %w", name, errHeaderValue)
		}
	}
	for _, h := range remove {
		h = strings.ToLower(h)
		if _, sent := headers[h]; sent {
			set.Fields[h] = clearValue()
		}
	}
	if err := kong.ServiceRequest.Ask("kong.service.request.set_headers", set, nil); err != nil {
		return fmt.Errorf("kong.service.request.set_headers: %w", err)
	}
	if consumer && who != nil {
		if err := kong.Client.Authenticate(who, cred); err != nil {
			return fmt.Errorf("kong.client.authenticate: %w", err)
		}
	}
	if id := d.Identity; groups && id != nil && len(id.Roles) > 0 {
		gs := make([]any, len(id.Roles))
		for i, r := range id.Roles {
			gs[i] = r
		}
		if err := kong.Ctx.SetShared(groupsKey, gs); err != nil {
			return fmt.Errorf("kong.ctx.shared.set %s: %w", groupsKey, err)
		}
	}
	if len(d.Metadata) > 0 {
		if err := kong.Ctx.SetShared(metadataKey, d.Metadata); err != nil {
			return fmt.Errorf("kong.ctx.shared.set %s: %w", metadataKey, err)
		}
	}
	if len(d.ResponseHeaders) > 0 {
		rh := &structpb.Struct{Fields: make(map[string]*structpb.Value, len(d.ResponseHeaders))}
		for _, h := range d.ResponseHeaders {
			if !httpguts.ValidHeaderFieldValue(h.Value) {
				return fmt.Errorf("response header %s: %w", h.Name, errHeaderValue)
			}
			rh.Fields[h.Name] = structpb.NewStringValue(h.Value)
		}
		if err := kong.Response.Ask("kong.response.set_headers", rh, nil); err != nil {
			return fmt.Errorf("kong.response.set_headers: %w", err)
		}
	}
	return nil
}

// clearValue in set_headers removes a header: Kong passes the empty array
// to ngx.req.set_header, which clears a header given an empty table, as
// ngx.req.clear_header does (docs/kong-plugin-server.md).
func clearValue() *structpb.Value { return structpb.NewListValue(&structpb.ListValue{}) }

// consumerOf maps an identity to the consumer and credential Kong's other
// plugins read (rate-limiting by consumer or credential, acl, loggers).
// modelguard's callers are not Kong consumers: the consumer id is a
// name-based UUID of the subject, stable across requests, methods and
// restarts; username and custom_id are the subject. The credential id is
// the API key id, or issuer#subject for a JWT. Anonymous callers get none.
func consumerOf(id *policy.Identity) (*entities.Consumer, *client.AuthenticatedCredential) {
	if id == nil || id.Subject == "" || id.Method == "none" {
		return nil, nil
	}
	c := &entities.Consumer{Id: subjectUUID(id.Subject), Username: id.Subject, CustomId: id.Subject}
	credID := id.KeyID
	if credID == "" {
		credID = id.Issuer + "#" + id.Subject
	}
	return c, &client.AuthenticatedCredential{Id: credID, ConsumerId: c.Id}
}

// consumerNamespace is the UUID namespace of consumer ids: the 16 bytes
// of "mg.kong.consumer".
var consumerNamespace = uuid.UUID([]byte("mg.kong.consumer"))

// subjectUUID is the version 5 (SHA-1, name-based, RFC 9562) UUID of
// subject.
func subjectUUID(subject string) string {
	return uuid.NewSHA1(consumerNamespace, []byte(subject)).String()
}

// errHeaderValue: a header value the decision would send has control
// characters (CR and LF above all): a subject claim must not be able to
// inject upstream headers.
var errHeaderValue = errors.New("value with control characters")
