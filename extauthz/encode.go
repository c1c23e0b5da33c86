package extauthz

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/modelguard/modelguard/policy"
)

// Field numbers of the answer's messages.
const (
	respStatus              = 1 // CheckResponse.status
	respDenied              = 2 // CheckResponse.denied_response
	respOK                  = 3 // CheckResponse.ok_response
	statusCode              = 1 // google.rpc.Status.code
	statusMessage           = 2 // google.rpc.Status.message
	deniedStatus            = 1 // DeniedHttpResponse.status
	deniedHeaders           = 2 // DeniedHttpResponse.headers
	deniedBody              = 3 // DeniedHttpResponse.body
	httpStatusCode          = 1 // envoy.type.v3.HttpStatus.code
	okHeaders               = 2 // OkHttpResponse.headers
	okHeadersToRemove       = 5 // OkHttpResponse.headers_to_remove
	okResponseHeaders       = 6 // OkHttpResponse.response_headers_to_add
	optionHeader            = 1 // HeaderValueOption.header
	optionAppend            = 2 // HeaderValueOption.append
	optionAppendAction      = 3 // HeaderValueOption.append_action
	optionKeepEmpty         = 4 // HeaderValueOption.keep_empty_value
	headerKey               = 1 // HeaderValue.key
	headerValue             = 2 // HeaderValue.value
	headerRawValue          = 3 // HeaderValue.raw_value
	boolValueValue          = 1 // google.protobuf.BoolValue.value
	encodedTrue        byte = 1
)

// appendResponse appends r's encoding but for its dynamic metadata, as
// protobuf-go does (fields in number order, zero values left out), when r
// is encodable: one of the answers toResponse makes. protobuf-go walked the
// whole answer by reflection twice, for its sizes and for its bytes: most
// of an answer's encoding. Unknown fields, which only a decoded message
// has, are not encoded.
func appendResponse(b []byte, r *authv3.CheckResponse) []byte {
	if st := r.Status; st != nil {
		b = appendMessage(b, respStatus, statusSize(st))
		b = appendStatus(b, st)
	}
	switch h := r.HttpResponse.(type) {
	case *authv3.CheckResponse_DeniedResponse:
		b = appendMessage(b, respDenied, deniedSize(h.DeniedResponse))
		if d := h.DeniedResponse; d != nil {
			if s := d.Status; s != nil {
				b = appendMessage(b, deniedStatus, varintField(httpStatusCode, uint64(s.Code)))
				b = appendVarint(b, httpStatusCode, uint64(s.Code))
			}
			b = appendOptions(b, deniedHeaders, d.Headers)
			b = appendString(b, deniedBody, d.Body)
		}
	case *authv3.CheckResponse_OkResponse:
		b = appendMessage(b, respOK, okSize(h.OkResponse))
		if ok := h.OkResponse; ok != nil {
			b = appendOptions(b, okHeaders, ok.Headers)
			for _, name := range ok.HeadersToRemove {
				b = protowire.AppendTag(b, okHeadersToRemove, protowire.BytesType)
				b = protowire.AppendString(b, name)
			}
			b = appendOptions(b, okResponseHeaders, ok.ResponseHeadersToAdd)
		}
	}
	return b
}

// encodable reports whether r has only what appendResponse encodes; for
// any other answer (an error_response, a status with details, query
// parameters, the deprecated ok_response.dynamic_metadata) protobuf-go
// encodes it.
func encodable(r *authv3.CheckResponse) bool {
	if r.Status != nil && len(r.Status.Details) > 0 {
		return false
	}
	switch h := r.HttpResponse.(type) {
	case nil:
		return true
	case *authv3.CheckResponse_DeniedResponse:
		return h.DeniedResponse == nil || optionsEncodable(h.DeniedResponse.Headers)
	case *authv3.CheckResponse_OkResponse:
		ok := h.OkResponse
		return ok == nil || ok.DynamicMetadata == nil && len(ok.QueryParametersToSet) == 0 && len(ok.QueryParametersToRemove) == 0 &&
			optionsEncodable(ok.Headers) && optionsEncodable(ok.ResponseHeadersToAdd)
	}
	return false
}

func optionsEncodable(opts []*corev3.HeaderValueOption) bool {
	for _, o := range opts {
		if o == nil {
			return false
		}
	}
	return true
}

func statusSize(st *rpcstatus.Status) int {
	return varintField(statusCode, uint64(int64(st.Code))) + stringField(statusMessage, st.Message)
}

func appendStatus(b []byte, st *rpcstatus.Status) []byte {
	b = appendVarint(b, statusCode, uint64(int64(st.Code)))
	return appendString(b, statusMessage, st.Message)
}

// deniedSize and okSize are 0 for nil: a oneof's nil message is encoded
// empty.
func deniedSize(d *authv3.DeniedHttpResponse) int {
	if d == nil {
		return 0
	}
	n := optionsSize(deniedHeaders, d.Headers) + stringField(deniedBody, d.Body)
	if d.Status != nil {
		n += messageField(deniedStatus, varintField(httpStatusCode, uint64(d.Status.Code)))
	}
	return n
}

func okSize(ok *authv3.OkHttpResponse) int {
	if ok == nil {
		return 0
	}
	n := optionsSize(okHeaders, ok.Headers) + optionsSize(okResponseHeaders, ok.ResponseHeadersToAdd)
	for _, name := range ok.HeadersToRemove {
		n += protowire.SizeTag(okHeadersToRemove) + protowire.SizeBytes(len(name))
	}
	return n
}

func optionsSize(num protowire.Number, opts []*corev3.HeaderValueOption) int {
	n := 0
	for _, o := range opts {
		n += messageField(num, optionSize(o))
	}
	return n
}

func optionSize(o *corev3.HeaderValueOption) int {
	n := varintField(optionAppendAction, uint64(o.AppendAction)) + boolField(optionKeepEmpty, o.KeepEmptyValue)
	if h := o.Header; h != nil {
		n += messageField(optionHeader, headerSize(h))
	}
	if a := o.Append; a != nil {
		n += messageField(optionAppend, boolField(boolValueValue, a.Value))
	}
	return n
}

func headerSize(h *corev3.HeaderValue) int {
	return stringField(headerKey, h.Key) + stringField(headerValue, h.Value) + lenField(headerRawValue, len(h.RawValue))
}

func appendOptions(b []byte, num protowire.Number, opts []*corev3.HeaderValueOption) []byte {
	for _, o := range opts {
		b = appendMessage(b, num, optionSize(o))
		if h := o.Header; h != nil {
			b = appendMessage(b, optionHeader, headerSize(h))
			b = appendString(b, headerKey, h.Key)
			b = appendString(b, headerValue, h.Value)
			if len(h.RawValue) > 0 {
				b = protowire.AppendTag(b, headerRawValue, protowire.BytesType)
				b = protowire.AppendBytes(b, h.RawValue)
			}
		}
		if a := o.Append; a != nil {
			b = appendMessage(b, optionAppend, boolField(boolValueValue, a.Value))
			b = appendBool(b, boolValueValue, a.Value)
		}
		b = appendVarint(b, optionAppendAction, uint64(o.AppendAction))
		b = appendBool(b, optionKeepEmpty, o.KeepEmptyValue)
	}
	return b
}

// The size of a field, and appending it; a scalar's zero value is left
// out, a message (appendMessage: its tag and length) never.

func messageField(num protowire.Number, size int) int {
	return protowire.SizeTag(num) + protowire.SizeBytes(size)
}

func stringField(num protowire.Number, s string) int { return lenField(num, len(s)) }

func lenField(num protowire.Number, n int) int {
	if n == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeBytes(n)
}

func varintField(num protowire.Number, v uint64) int {
	if v == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeVarint(v)
}

func boolField(num protowire.Number, v bool) int {
	if !v {
		return 0
	}
	return protowire.SizeTag(num) + 1
}

func appendMessage(b []byte, num protowire.Number, size int) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendVarint(b, uint64(size))
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendVarint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendBool(b []byte, num protowire.Number, v bool) []byte {
	if !v {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return append(b, encodedTrue)
}

// responseSize is the size of appendResponse's encoding of r.
func responseSize(r *authv3.CheckResponse) int {
	n := 0
	if st := r.Status; st != nil {
		n += messageField(respStatus, statusSize(st))
	}
	switch h := r.HttpResponse.(type) {
	case *authv3.CheckResponse_DeniedResponse:
		n += messageField(respDenied, deniedSize(h.DeniedResponse))
	case *authv3.CheckResponse_OkResponse:
		n += messageField(respOK, okSize(h.OkResponse))
	}
	return n
}

// answer is a decision on its way to Envoy: the codec encodes it as it
// encodes toResponse(d), without making the messages (a dozen allocations
// and a map for the metadata). A decision with the policy's own dynamic
// metadata, whose values can be of any JSON type, goes through toResponse.
type answer struct{ d *policy.Decision }

// Field numbers of the metadata's messages (google.protobuf.Struct,
// Struct.FieldsEntry).
const (
	entryKey   = 1
	entryValue = 2
)

// appendAnswer appends the encoding of toResponse(d), its metadata keys
// in ownMetadata's order. d has no policy metadata.
func appendAnswer(b []byte, d *policy.Decision) []byte {
	if d.Allow {
		b = appendMessage(b, respStatus, 0) // OK: an empty status
		b = appendMessage(b, respOK, okAnswerSize(d))
		b = appendHeaders(b, okHeaders, d.UpstreamHeaders)
		for _, name := range d.RemoveHeaders {
			b = protowire.AppendTag(b, okHeadersToRemove, protowire.BytesType)
			b = protowire.AppendString(b, name)
		}
		b = appendHeaders(b, okResponseHeaders, d.ResponseHeaders)
	} else {
		code := uint64(deniedCode(d))
		b = appendMessage(b, respStatus, varintField(statusCode, code))
		b = appendVarint(b, statusCode, code)
		headers, body := d.DenialHeaders(), d.Body()
		b = appendMessage(b, respDenied, deniedAnswerSize(d, headers, body))
		b = appendMessage(b, deniedStatus, varintField(httpStatusCode, uint64(d.Status)))
		b = appendVarint(b, httpStatusCode, uint64(d.Status))
		b = appendHeaders(b, deniedHeaders, headers)
		if len(body) > 0 {
			b = protowire.AppendTag(b, deniedBody, protowire.BytesType)
			b = protowire.AppendBytes(b, body)
		}
	}
	b = appendMessage(b, dynamicMetadataField, ownMetadataSize(d))
	ownMetadata(d, func(k, v string) {
		vsize := protowire.SizeTag(stringValueField) + protowire.SizeBytes(len(v))
		b = appendMessage(b, 1, entrySize(k, vsize)) // Struct.fields
		b = appendString(b, entryKey, k)
		b = appendMessage(b, entryValue, vsize)
		b = protowire.AppendTag(b, stringValueField, protowire.BytesType) // set even when ""
		b = protowire.AppendString(b, v)
	})
	return b
}

// answerSize is the capacity for appendAnswer's encoding of d: its size
// for an allow, with room for the usual headers and body of a denial.
func answerSize(d *policy.Decision) int {
	n := messageField(respOK, okAnswerSize(d)) + messageField(dynamicMetadataField, ownMetadataSize(d)) + 16
	if !d.Allow {
		n += headersSize(deniedHeaders, d.ResponseHeaders) + 256
	}
	return n
}

func okAnswerSize(d *policy.Decision) int {
	n := headersSize(okHeaders, d.UpstreamHeaders) + headersSize(okResponseHeaders, d.ResponseHeaders)
	for _, name := range d.RemoveHeaders {
		n += protowire.SizeTag(okHeadersToRemove) + protowire.SizeBytes(len(name))
	}
	return n
}

func deniedAnswerSize(d *policy.Decision, headers []policy.Header, body []byte) int {
	return messageField(deniedStatus, varintField(httpStatusCode, uint64(d.Status))) +
		headersSize(deniedHeaders, headers) + lenField(deniedBody, len(body))
}

func ownMetadataSize(d *policy.Decision) int {
	n := 0
	ownMetadata(d, func(k, v string) {
		n += messageField(1, entrySize(k, protowire.SizeTag(stringValueField)+protowire.SizeBytes(len(v))))
	})
	return n
}

// headerAnswerSize is the size of the HeaderValueOption headerOptions makes
// of h: the header, and append set to false (an empty BoolValue).
func headerAnswerSize(h policy.Header) int {
	return messageField(optionHeader, stringField(headerKey, h.Name)+stringField(headerValue, h.Value)) + messageField(optionAppend, 0)
}

func headersSize(num protowire.Number, hs []policy.Header) int {
	n := 0
	for _, h := range hs {
		n += messageField(num, headerAnswerSize(h))
	}
	return n
}

func appendHeaders(b []byte, num protowire.Number, hs []policy.Header) []byte {
	for _, h := range hs {
		b = appendMessage(b, num, headerAnswerSize(h))
		b = appendMessage(b, optionHeader, stringField(headerKey, h.Name)+stringField(headerValue, h.Value))
		b = appendString(b, headerKey, h.Name)
		b = appendString(b, headerValue, h.Value)
		b = appendMessage(b, optionAppend, 0)
	}
	return b
}
