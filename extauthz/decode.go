package extauthz

import (
	"bytes"
	"unicode/utf8"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// decodeCheck decodes wire, a CheckRequest's encoding, into the empty m as
// proto.Unmarshal does, and reports whether it could. protobuf-go decodes a
// map field by reflection, boxing every key and value: the request's
// headers were about half of a check's decoding and ~40 of its
// allocations. This decodes the path down to the HTTP request and the HTTP
// request itself, assigning the headers directly, and leaves every other
// message to protobuf-go. Whatever it does not expect (a field it does not
// know, a singular message sent twice, which protobuf-go merges, a wire type
// that does not match, invalid UTF-8, a malformed encoding) makes it report
// false with m untouched: the caller then decodes with protobuf-go, which
// says what is wrong. Every string and byte is copied: wire is not kept.
func decodeCheck(wire []byte, m *authv3.CheckRequest) bool {
	var attrs *authv3.AttributeContext
	ok := eachField(wire, func(num protowire.Number, typ protowire.Type, data []byte, _ uint64) bool {
		if num != 1 || typ != protowire.BytesType || attrs != nil {
			return false
		}
		attrs = new(authv3.AttributeContext)
		return decodeAttributes(data, attrs)
	})
	if !ok {
		return false
	}
	m.Attributes = attrs
	return true
}

func decodeAttributes(b []byte, a *authv3.AttributeContext) bool {
	return eachField(b, func(num protowire.Number, typ protowire.Type, data []byte, _ uint64) bool {
		if typ != protowire.BytesType {
			return false
		}
		switch num {
		case 1:
			return unmarshalOnce(&a.Source, data)
		case 2:
			return unmarshalOnce(&a.Destination, data)
		case 4:
			if a.Request != nil {
				return false
			}
			a.Request = new(authv3.AttributeContext_Request)
			return decodeRequest(data, a.Request)
		case 10:
			return decodeEntry(data, &a.ContextExtensions)
		case 11:
			return unmarshalOnce(&a.MetadataContext, data)
		case 12:
			return unmarshalOnce(&a.TlsSession, data)
		case 13:
			return unmarshalOnce(&a.RouteMetadataContext, data)
		}
		return false
	})
}

func decodeRequest(b []byte, r *authv3.AttributeContext_Request) bool {
	return eachField(b, func(num protowire.Number, typ protowire.Type, data []byte, _ uint64) bool {
		switch {
		case typ != protowire.BytesType:
			return false
		case num == 1:
			return unmarshalOnce(&r.Time, data)
		case num == 2 && r.Http == nil:
			r.Http = new(authv3.AttributeContext_HttpRequest)
			return decodeHTTP(data, r.Http)
		}
		return false
	})
}

func decodeHTTP(b []byte, h *authv3.AttributeContext_HttpRequest) bool {
	return eachField(b, func(num protowire.Number, typ protowire.Type, data []byte, v uint64) bool {
		if num == 9 { // size
			h.Size = int64(v)
			return typ == protowire.VarintType
		}
		if typ != protowire.BytesType {
			return false
		}
		var s *string
		switch num {
		case 1:
			s = &h.Id
		case 2:
			s = &h.Method
		case 3:
			return decodeEntry(data, &h.Headers)
		case 4:
			s = &h.Path
		case 5:
			s = &h.Host
		case 6:
			s = &h.Scheme
		case 7:
			s = &h.Query
		case 8:
			s = &h.Fragment
		case 10:
			s = &h.Protocol
		case 11:
			s = &h.Body
		case 12:
			h.RawBody = bytes.Clone(data)
			return true
		case 13:
			return unmarshalOnce(&h.HeaderMap, data)
		default:
			return false
		}
		if !utf8.Valid(data) {
			return false
		}
		*s = string(data) // the last one wins, as in protobuf-go
		return true
	})
}

// decodeEntry adds one map<string, string> entry to *m, made on the
// first; a repeated key keeps its last value, as in protobuf-go.
func decodeEntry(b []byte, m *map[string]string) bool {
	var k, v string
	ok := eachField(b, func(num protowire.Number, typ protowire.Type, data []byte, _ uint64) bool {
		if typ != protowire.BytesType || !utf8.Valid(data) {
			return false
		}
		switch num {
		case 1:
			k = headerName(data)
		case 2:
			v = string(data)
		default:
			return false
		}
		return true
	})
	if !ok {
		return false
	}
	if *m == nil {
		*m = make(map[string]string, 16) // a request's usual headers, without growing
	}
	(*m)[k] = v
	return true
}

// headerName is b as a string, without allocating for the names most
// requests carry.
func headerName(b []byte) string {
	switch string(b) { // no allocation to compare
	case ":authority":
		return ":authority"
	case ":method":
		return ":method"
	case ":path":
		return ":path"
	case ":scheme":
		return ":scheme"
	case "accept":
		return "accept"
	case "accept-encoding":
		return "accept-encoding"
	case "authorization":
		return "authorization"
	case "content-length":
		return "content-length"
	case "content-type":
		return "content-type"
	case "user-agent":
		return "user-agent"
	case "x-api-key":
		return "x-api-key"
	case "x-forwarded-for":
		return "x-forwarded-for"
	case "x-forwarded-proto":
		return "x-forwarded-proto"
	case "x-request-id":
		return "x-request-id"
	case partialBodyHeader:
		return partialBodyHeader
	}
	return string(b)
}

// unmarshalOnce decodes data with protobuf-go into a new message at *dst;
// false if *dst is already set (a second occurrence, which protobuf-go
// would merge) or data does not decode.
func unmarshalOnce[T any, P interface {
	*T
	proto.Message
}](dst *P, data []byte) bool {
	if *dst != nil {
		return false
	}
	m := P(new(T))
	if proto.Unmarshal(data, m) != nil {
		return false
	}
	*dst = m
	return true
}

// eachField calls f with each field of the message b: its number, wire
// type and, when length-delimited, its bytes, when a varint, its value.
// false if b is malformed or f returns false.
func eachField(b []byte, f func(num protowire.Number, typ protowire.Type, data []byte, v uint64) bool) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		var (
			data []byte
			v    uint64
		)
		switch typ {
		case protowire.BytesType:
			data, n = protowire.ConsumeBytes(b)
		case protowire.VarintType:
			v, n = protowire.ConsumeVarint(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return false
		}
		b = b[n:]
		if !f(num, typ, data, v) {
			return false
		}
	}
	return true
}
