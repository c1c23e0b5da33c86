package extauthz

import (
	"bytes"
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/modelguard/modelguard/policy"
)

// The codec encodes answers byte for byte as protobuf-go does: those
// toResponse makes, each field's edge values, and, through protobuf-go,
// those appendResponse does not encode.
func TestCodecEncodesAsProtobufGo(t *testing.T) {
	headers := []policy.Header{{Name: "x-modelguard-subject", Value: "alice"}, {Name: "x-empty", Value: ""}, {Name: "x-unicode", Value: "héllo"}}
	option := func(o *corev3.HeaderValueOption) *authv3.CheckResponse {
		return &authv3.CheckResponse{Status: &rpcstatus.Status{}, HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers: []*corev3.HeaderValueOption{o}}}}
	}
	answers := map[string]*authv3.CheckResponse{
		"empty": {},
		"allow": toResponse(&policy.Decision{ID: "d1", Allow: true, Status: 200, Reason: "allowed",
			UpstreamHeaders: headers, RemoveHeaders: []string{"authorization", "x_modelguard_subject", ""}, ResponseHeaders: headers[:1]}),
		"allow, nothing to set":       toResponse(&policy.Decision{ID: "d2", Allow: true, Status: 200, Reason: "allowed"}),
		"deny 401":                    toResponse(&policy.Decision{ID: "d3", Status: 401, Reason: "credentials_missing", Message: "invalid or missing credentials", ResponseHeaders: []policy.Header{{Name: "www-authenticate", Value: `Bearer realm="modelguard"`}}}),
		"deny 503":                    toResponse(&policy.Decision{ID: "d4", Status: 503, Reason: "audit_unavailable", Message: "service unavailable"}),
		"deny with the policy's body": toResponse(&policy.Decision{ID: "d5", Status: 429, Reason: "quota", PolicyBody: []byte(`{"error":"slow down ✓"}`)}),
		"status with a message and a negative code": {Status: &rpcstatus.Status{Code: -3, Message: "m"}},
		"denied, no status, no body":                {HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{}}},
		"denied, nil":                               {HttpResponse: &authv3.CheckResponse_DeniedResponse{}},
		"ok, nil":                                   {HttpResponse: &authv3.CheckResponse_OkResponse{}},
		"denied, status 0":                          {HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{Status: &typev3.HttpStatus{}}}},
		"option, raw value and every flag": option(&corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: "k", RawValue: []byte("\x00raw")},
			Append: wrapperspb.Bool(true), AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD, KeepEmptyValue: true}),
		"option, empty header":    option(&corev3.HeaderValueOption{Header: &corev3.HeaderValue{}}),
		"option, nothing":         option(&corev3.HeaderValueOption{}),
		"option, a 200-byte name": option(&corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: string(bytes.Repeat([]byte("k"), 200)), Value: "v"}}),
		// Left to protobuf-go.
		"error response": {HttpResponse: &authv3.CheckResponse_ErrorResponse{ErrorResponse: &authv3.DeniedHttpResponse{Body: "e"}}},
		"status details": {Status: &rpcstatus.Status{Code: 7, Details: []*anypb.Any{{TypeUrl: "t"}}}},
		"query parameters": {HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			QueryParametersToRemove: []string{"q"}, Headers: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "k"}}}}}},
	}
	codec := newSizingCodec()
	for name, resp := range answers {
		t.Run(name, func(t *testing.T) {
			resp.DynamicMetadata = nil // the metadata's map has no fixed order (TestCodecEncodesAnswers)
			want, err := proto.Marshal(resp)
			if err != nil {
				t.Fatal(err)
			}
			got, err := codec.Marshal(resp)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Materialize(), want) {
				t.Errorf("codec:\n%x\nprotobuf-go:\n%x", got.Materialize(), want)
			}
		})
	}
}

// appendResponse knows every field of the answer's messages: each is
// encoded or makes the answer protobuf-go's (encodable). A field added by
// a newer go-control-plane fails this test until appendResponse is taught.
func TestAppendResponseKnowsEveryField(t *testing.T) {
	known := map[protoreflect.FullName][]protoreflect.FieldNumber{
		"envoy.service.auth.v3.CheckResponse":      {respStatus, respDenied, respOK, dynamicMetadataField, 5},
		"google.rpc.Status":                        {statusCode, statusMessage, 3},
		"envoy.service.auth.v3.DeniedHttpResponse": {deniedStatus, deniedHeaders, deniedBody},
		"envoy.type.v3.HttpStatus":                 {httpStatusCode},
		"envoy.service.auth.v3.OkHttpResponse":     {okHeaders, 3, okHeadersToRemove, okResponseHeaders, 7, 8},
		"envoy.config.core.v3.HeaderValueOption":   {optionHeader, optionAppend, optionAppendAction, optionKeepEmpty},
		"envoy.config.core.v3.HeaderValue":         {headerKey, headerValue, headerRawValue},
		"google.protobuf.BoolValue":                {boolValueValue},
	}
	for _, m := range []proto.Message{&authv3.CheckResponse{}, &rpcstatus.Status{}, &authv3.DeniedHttpResponse{}, &typev3.HttpStatus{},
		&authv3.OkHttpResponse{}, &corev3.HeaderValueOption{}, &corev3.HeaderValue{}, &wrapperspb.BoolValue{}} {
		d := m.ProtoReflect().Descriptor()
		var got []protoreflect.FieldNumber
		for i := range d.Fields().Len() {
			got = append(got, d.Fields().Get(i).Number())
		}
		slices.Sort(got)
		want := slices.Sorted(slices.Values(known[d.FullName()]))
		if !slices.Equal(got, want) {
			t.Errorf("%s has fields %v, appendResponse knows %v", d.FullName(), got, want)
		}
	}
}

func BenchmarkEncodeAnswer(b *testing.B) {
	d := &policy.Decision{ID: "0123456789abcdef0123456789abcdef", Allow: true, Status: 200, Reason: "allowed", PolicyRevision: "rev",
		UpstreamHeaders: []policy.Header{{Name: "x-modelguard-subject", Value: "alice"}, {Name: "x-modelguard-roles", Value: "user"},
			{Name: "x-modelguard-auth-method", Value: "api_key"}, {Name: "x-modelguard-key-id", Value: "k1"}, {Name: "x-modelguard-decision-id", Value: "0123456789abcdef0123456789abcdef"}},
		RemoveHeaders: []string{"authorization"}, Identity: &policy.Identity{Subject: "alice"}}
	codec := newSizingCodec()
	b.Run("answer", func(b *testing.B) { // as the server sends it
		b.ReportAllocs()
		for b.Loop() {
			if _, err := codec.Marshal(answer{d}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("check_response", func(b *testing.B) { // as Check returns it
		b.ReportAllocs()
		for b.Loop() {
			if _, err := codec.Marshal(toResponse(d)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// The codec encodes an answer as it encodes toResponse of its decision:
// the same bytes before the metadata, the same message decoded.
func TestCodecEncodesDecisions(t *testing.T) {
	hs := []policy.Header{{Name: "x-modelguard-subject", Value: "alice"}, {Name: "x-empty", Value: ""}, {Name: "x-unicode", Value: "héllo ✓"}}
	decisions := map[string]*policy.Decision{
		"allow": {ID: "d1", Allow: true, Status: 200, Reason: "allowed", PolicyRevision: "rev", UpstreamHeaders: hs,
			RemoveHeaders: []string{"authorization", ""}, ResponseHeaders: hs[2:], Identity: &policy.Identity{Subject: "alice"}},
		"allow, bare":                 {Allow: true},
		"allow, identity, no subject": {ID: "d2", Allow: true, Reason: "allowed", Identity: &policy.Identity{Method: "none"}},
		"deny 401":                    {ID: "d3", Status: 401, Reason: "credentials_missing", Message: "invalid or missing credentials", ResponseHeaders: hs[:1]},
		"deny 403":                    {ID: "d4", Status: 403, Reason: "policy_denied", Message: "access denied", PolicyRevision: "rev"},
		"deny 503, overloaded":        {ID: "d5", Status: 503, Reason: "overloaded", Message: "service unavailable", ResponseHeaders: []policy.Header{{Name: "retry-after", Value: "1"}}},
		"deny, the policy's body":     {ID: "d6", Status: 429, Reason: "quota", PolicyBody: []byte("slow down"), ResponseHeaders: hs[1:2]},
		"deny, the policy's empty body and content-type": {ID: "d7", Status: 418, PolicyBody: []byte{}, ResponseHeaders: []policy.Header{{Name: "content-type", Value: "text/x"}}},
		"deny, bare":            {},
		"the policy's metadata": {ID: "d8", Allow: true, Reason: "allowed", Metadata: map[string]any{"tenant": "acme", "n": 1.5, "reason": "overridden"}},
	}
	for name, d := range decisions {
		t.Run(name, func(t *testing.T) {
			want := toResponse(d)
			got, data := encodeDecode(t, answer{d})
			if !proto.Equal(got, want) {
				t.Fatalf("decoded:\n%v\nwant:\n%v", got, want)
			}
			want.DynamicMetadata = nil
			prefix, _ := proto.Marshal(want)
			if !bytes.HasPrefix(data, prefix) {
				t.Errorf("codec:\n%x\nprotobuf-go, before the metadata:\n%x", data, prefix)
			}
		})
	}
}
