// Package extauthz serves Envoy's external authorization API
// (envoy.service.auth.v3.Authorization/Check) over gRPC. It translates a
// CheckRequest into a policy.Request and the core's Decision back into a
// CheckResponse, following the contract in docs/envoy-ext-authz.md.
package extauthz

import (
	"net"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/modelguard/modelguard/policy"
)

// partialBodyHeader is added by Envoy to a CheckRequest when it buffered a
// body; "true" means it buffered more than max_request_bytes and cut it.
const partialBodyHeader = "x-envoy-auth-partial-body"

// metadataNamespace is where Envoy stores CheckResponse.dynamic_metadata;
// access logs read %DYNAMIC_METADATA(envoy.filters.http.ext_authz:decision_id)%.
const metadataNamespace = "envoy.filters.http.ext_authz"

// toRequest translates a CheckRequest. Envoy's header map is used as is
// (no copy); the encode_raw_headers form (header_map) is folded into the
// same shape, joining repeats with "," as Envoy does for the map form.
// maxBody is the largest body any model accepts (bodyCut).
func toRequest(cr *authv3.CheckRequest, maxBody int) *policy.Request {
	attrs := cr.GetAttributes()
	h := attrs.GetRequest().GetHttp()
	headers := h.GetHeaders()
	if len(headers) == 0 && h.GetHeaderMap() != nil {
		headers = foldHeaderMap(h.GetHeaderMap())
	}
	// Envoy sends the full target in path; query and fragment are empty.
	path, query, _ := strings.Cut(h.GetPath(), "?")
	query, _, _ = strings.Cut(query, "#")
	path, _, _ = strings.Cut(path, "#")

	body := h.GetRawBody()
	if len(body) == 0 && h.GetBody() != "" {
		body = []byte(h.GetBody())
	}
	return &policy.Request{
		Gateway:       "envoy",
		ID:            policy.RequestID(headers, h.GetId()),
		Method:        h.GetMethod(),
		Path:          path,
		Query:         query,
		Host:          h.GetHost(),
		Scheme:        h.GetScheme(),
		Headers:       headers,
		SourceAddress: socketAddress(attrs.GetSource().GetAddress()),
		TLSPrincipal:  attrs.GetSource().GetPrincipal(),
		Body:          body,
		BodyTruncated: bodyCut(headers, len(body), maxBody),
		BodyOmitted:   headers[partialBodyHeader] == "" && bodySent(headers),

		ContextExtensions: attrs.GetContextExtensions(),
		MetadataContext:   filterMetadata(attrs.GetMetadataContext()),
	}
}

// filterMetadata is the metadata_context's filter_metadata as JSON
// objects by namespace; nil when there is none (the common case, which
// then costs nothing).
func filterMetadata(md *corev3.Metadata) map[string]any {
	fm := md.GetFilterMetadata()
	if len(fm) == 0 {
		return nil
	}
	out := make(map[string]any, len(fm))
	for ns, st := range fm {
		out[ns] = st.AsMap()
	}
	return out
}

// bodyCut reports whether Envoy may have sent part of the body: it said so,
// or the body is shorter than its content-length, or, without a
// content-length, the body is as long as the largest one a model accepts.
// Envoy says "false" when its buffer fills exactly at max_request_bytes
// before the stream ends (16 KiB data frames fill a 1 MiB buffer exactly),
// so a body of exactly the limit is treated as cut (fail closed).
func bodyCut(headers map[string]string, n, maxBody int) bool {
	switch partial := headers[partialBodyHeader]; {
	case partial == "true":
		return true
	case partial == "":
		return false // no body buffered
	}
	if cl, ok := headers["content-length"]; ok {
		size, err := strconv.ParseInt(cl, 10, 64)
		return err != nil || size > int64(n)
	}
	return maxBody > 0 && n >= maxBody
}

// bodySent reports whether the request has a body by its headers. Envoy
// adds the partial-body header only when it buffered one: without it, a
// request that has a body was sent without (with_request_body is off),
// while one whose headers ended the stream (content-length: 0) simply has
// none.
func bodySent(headers map[string]string) bool {
	if cl, ok := headers["content-length"]; ok {
		return cl != "0"
	}
	return headers["transfer-encoding"] != ""
}

func foldHeaderMap(hm *corev3.HeaderMap) map[string]string {
	out := make(map[string]string, len(hm.GetHeaders()))
	for _, hv := range hm.GetHeaders() {
		v := string(hv.GetRawValue())
		if v == "" {
			v = hv.GetValue()
		}
		policy.AddHeader(out, hv.GetKey(), v)
	}
	return out
}

func socketAddress(a *corev3.Address) string {
	sa := a.GetSocketAddress()
	if sa == nil {
		return ""
	}
	return net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10))
}

// toResponse translates a Decision. Denials carry an explicit HTTP status
// (Envoy would otherwise send 403 for everything) and a JSON body; allows
// set identity headers with append=false and remove the credential.
func toResponse(d *policy.Decision) *authv3.CheckResponse {
	if d.Allow {
		// One allocation for the answer's fixed parts.
		a := new(struct {
			resp authv3.CheckResponse
			ok   authv3.CheckResponse_OkResponse
			http authv3.OkHttpResponse
		})
		a.http.Headers = headerOptions(d.UpstreamHeaders)
		a.http.HeadersToRemove = d.RemoveHeaders
		a.http.ResponseHeadersToAdd = headerOptions(d.ResponseHeaders)
		a.ok.OkResponse = &a.http
		a.resp.Status = statusOK
		a.resp.HttpResponse = &a.ok
		a.resp.DynamicMetadata = metadata(d)
		return &a.resp
	}
	resp := &authv3.CheckResponse{DynamicMetadata: metadata(d)}
	resp.Status = &rpcstatus.Status{Code: int32(deniedCode(d))}
	resp.HttpResponse = &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode(d.Status)},
		Headers: headerOptions(d.DenialHeaders()),
		Body:    string(d.Body()),
	}}
	return resp
}

// deniedCode is the gRPC status of a denial's answer.
func deniedCode(d *policy.Decision) codes.Code {
	if d.Status == 401 {
		return codes.Unauthenticated
	}
	return codes.PermissionDenied
}

// statusOK and appendFalse are shared by every answer: gRPC only reads
// them (marshalling a message from several goroutines at once is safe).
var (
	statusOK    = &rpcstatus.Status{Code: int32(codes.OK)}
	appendFalse = wrapperspb.Bool(false)
)

// headerOptions sets each header, replacing any existing value. append is
// set explicitly: newer Envoy turned a bare HeaderValueOption from "set"
// into "add". The messages are allocated together, three allocations in
// all instead of two per header.
func headerOptions(hs []policy.Header) []*corev3.HeaderValueOption {
	if len(hs) == 0 {
		return nil
	}
	out := make([]*corev3.HeaderValueOption, len(hs))
	opts := make([]corev3.HeaderValueOption, len(hs))
	vals := make([]corev3.HeaderValue, len(hs))
	for i, h := range hs {
		vals[i].Key, vals[i].Value = h.Name, h.Value
		opts[i].Header, opts[i].Append = &vals[i], appendFalse
		out[i] = &opts[i]
	}
	return out
}

// metadata is the decision's dynamic metadata: the policy's
// dynamic_metadata (opa-envoy-plugin's), then modelguard's own keys, which
// win over the policy's.
func metadata(d *policy.Decision) *structpb.Struct {
	fields := make(map[string]*structpb.Value, len(d.Metadata)+4)
	if len(d.Metadata) > 0 {
		// The policy's object came from JSON values, which always convert.
		if st, err := structpb.NewStruct(d.Metadata); err == nil {
			fields = st.Fields
		}
	}
	// modelguard's own values, allocated together.
	var own struct {
		vals [maxOwnMetadata]structpb.Value
		strs [maxOwnMetadata]structpb.Value_StringValue
	}
	n := 0
	ownMetadata(d, func(k, v string) {
		own.strs[n].StringValue = v
		own.vals[n].Kind = &own.strs[n]
		fields[k] = &own.vals[n]
		n++
	})
	return &structpb.Struct{Fields: fields}
}

// maxOwnMetadata is how many keys ownMetadata sets at most.
const maxOwnMetadata = 4

// ownMetadata calls set with each of modelguard's own metadata keys and
// its value.
func ownMetadata(d *policy.Decision, set func(k, v string)) {
	set("decision_id", d.ID)
	set("reason", d.Reason)
	if d.PolicyRevision != "" {
		set("policy_revision", d.PolicyRevision)
	}
	if d.Identity != nil && d.Identity.Subject != "" {
		set("subject", d.Identity.Subject)
	}
}
