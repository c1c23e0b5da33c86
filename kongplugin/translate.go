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

	"github.com/modelguard/modelguard/policy"
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

// refusal is a request the adapter refuses before the core sees it.
type refusal struct {
	status          int
	reason, message string
	err             error
}

// readRequest reads what the core needs in seven PDK calls: get_headers,
// get_raw_body, get_method, get_path, get_raw_query, get_scheme and
// client.get_forwarded_ip (or client.get_ip with direct). The host comes
// from the Host header (nginx adds it from :authority for HTTP/2). err is a
// failed PDK call.
func readRequest(kong *pdk.PDK, maxBody int, direct bool) (*policy.Request, *refusal, error) {
	var hs structpb.Struct
	if err := kong.Request.Ask("kong.request.get_headers", &kpp.Int{V: maxHeaders}, &hs); err != nil {
		return nil, nil, fmt.Errorf("kong.request.get_headers: %w", err)
	}
	headers, lines := foldHeaders(&hs)
	req := &policy.Request{Gateway: gateway, Headers: headers, ID: policy.RequestID(headers, ""), Host: headers["host"]}
	if lines >= maxHeaders {
		return req, &refusal{http.StatusRequestHeaderFieldsTooLarge, "request_headers_too_many", "too many request headers",
			fmt.Errorf("%d header lines: Kong returns at most %d", lines, maxHeaders)}, nil
	}

	var rb kpp.RawBodyResult
	if err := kong.Request.Ask("kong.request.get_raw_body", nil, &rb); err != nil {
		return req, nil, fmt.Errorf("kong.request.get_raw_body: %w", err)
	}
	switch k := rb.Kind.(type) {
	case *kpp.RawBodyResult_Content:
		req.Body = k.Content
	case *kpp.RawBodyResult_BodyFilepath:
		b, truncated, err := readSpilled(k.BodyFilepath, maxBody)
		if err != nil {
			return req, &refusal{http.StatusServiceUnavailable, "body_unreadable", "service unavailable", err}, nil
		}
		req.Body, req.BodyTruncated = b, truncated
	case *kpp.RawBodyResult_Error:
		return req, &refusal{http.StatusServiceUnavailable, "body_unreadable", "service unavailable",
			fmt.Errorf("kong.request.get_raw_body: %s", k.Error)}, nil
	}

	var err error
	if req.Method, err = kong.Request.GetMethod(); err != nil {
		return req, nil, fmt.Errorf("kong.request.get_method: %w", err)
	}
	// get_path is the normalized path, the one Kong routes on and forwards
	// (escaped reserved characters such as %2F stay escaped).
	if req.Path, err = kong.Request.GetPath(); err != nil {
		return req, nil, fmt.Errorf("kong.request.get_path: %w", err)
	}
	if req.Query, err = kong.Request.GetRawQuery(); err != nil {
		return req, nil, fmt.Errorf("kong.request.get_raw_query: %w", err)
	}
	if req.Scheme, err = kong.Request.GetScheme(); err != nil {
		return req, nil, fmt.Errorf("kong.request.get_scheme: %w", err)
	}
	// Kong gives the address without its port. get_ip is the peer (a load
	// balancer, behind one); get_forwarded_ip honours Kong's trusted_ips
	// and real_ip_header, as Kong's own plugins do.
	if direct {
		req.SourceAddress, err = kong.Client.GetIp()
	} else {
		req.SourceAddress, err = kong.Client.GetForwardedIp()
	}
	if err != nil {
		return req, nil, fmt.Errorf("kong.client address: %w", err)
	}
	return req, nil, nil
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
// set_headers call for the identity headers and Kong's consumer headers,
// one clear_header per header to remove that the request has (the
// credential; identity and Kong headers not set, when the client sent
// them), kong.client.authenticate, the groups for Kong's acl plugin when
// there are roles, and the policy's response headers when it gave any.
// headers is the request's, as read in this access phase (with the changes
// of plugins that ran before).
func applyAllow(kong *pdk.PDK, d *policy.Decision, headers map[string]string) error {
	set := &structpb.Struct{Fields: make(map[string]*structpb.Value, len(d.UpstreamHeaders)+4)}
	for _, h := range d.UpstreamHeaders {
		set.Fields[h.Name] = structpb.NewStringValue(h.Value)
	}
	// Kong's headers win over a policy header of the same name.
	setKong := func(name, value string) {
		delete(set.Fields, strings.ToLower(name))
		set.Fields[name] = structpb.NewStringValue(value)
	}
	remove := d.RemoveHeaders
	consumer, cred := consumerOf(d.Identity)
	if consumer != nil {
		setKong(headerConsumerID, consumer.Id)
		setKong(headerConsumerCustomID, consumer.CustomId)
		setKong(headerConsumerUsername, consumer.Username)
		setKong(headerCredentialID, cred.Id)
		remove = append(remove[:len(remove):len(remove)], headerAnonymous)
	} else {
		setKong(headerAnonymous, "true")
		remove = append(remove[:len(remove):len(remove)], headerConsumerID, headerConsumerCustomID, headerConsumerUsername, headerCredentialID)
	}
	// nginx passes names with "_" (underscores_in_headers on) and
	// clear_header does not fold "_" into "-": clear a client's
	// X_Consumer_ID too (the core does the same for its own headers).
	remove = append(remove[:len(remove):len(remove)], policy.UnderscoreVariants(headers, kongHeaders)...)
	for name, v := range set.Fields {
		if !httpguts.ValidHeaderFieldValue(v.GetStringValue()) {
			return fmt.Errorf("upstream header %s: %w", name, errHeaderValue)
		}
	}

	if err := kong.ServiceRequest.Ask("kong.service.request.set_headers", set, nil); err != nil {
		return fmt.Errorf("kong.service.request.set_headers: %w", err)
	}
	for _, h := range remove {
		if _, sent := headers[strings.ToLower(h)]; !sent {
			continue
		}
		if err := kong.ServiceRequest.ClearHeader(h); err != nil {
			return fmt.Errorf("kong.service.request.clear_header %s: %w", h, err)
		}
	}
	if consumer != nil {
		if err := kong.Client.Authenticate(consumer, cred); err != nil {
			return fmt.Errorf("kong.client.authenticate: %w", err)
		}
	}
	if id := d.Identity; id != nil && len(id.Roles) > 0 {
		groups := make([]any, len(id.Roles))
		for i, r := range id.Roles {
			groups[i] = r
		}
		if err := kong.Ctx.SetShared(groupsKey, groups); err != nil {
			return fmt.Errorf("kong.ctx.shared.set %s: %w", groupsKey, err)
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
