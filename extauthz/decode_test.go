package extauthz

import (
	"maps"
	"math/rand/v2"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// decodeCases are CheckRequests as Envoy sends them, and with every field
// toRequest reads or protobuf-go decodes for it.
func decodeCases(t testing.TB) map[string]*authv3.CheckRequest {
	r := httptest.NewRequest("POST", "https://models.local/v1/chat/completions?x=1", strings.NewReader("{}"))
	r.Header.Set("Authorization", "Bearer k")
	r.Header.Add("X-Multi", "a")
	r.Header.Add("X-Multi", "b")
	md, err := structpb.NewStruct(map[string]any{"tenant": "acme", "n": 2.5, "list": []any{true, nil}})
	if err != nil {
		t.Fatal(err)
	}
	full := benchCheckRequest("mg_key")
	a := full.Attributes
	a.Source.Principal, a.Source.Service, a.Source.Labels = "spiffe://x/y", "svc", map[string]string{"app": "web"}
	a.Destination = &authv3.AttributeContext_Peer{Principal: "dest", Certificate: "pem"}
	a.ContextExtensions = map[string]string{"model_route": "chat", "": "empty key", "empty": ""}
	a.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"envoy.filters.http.jwt_authn": md}}
	a.RouteMetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"r": md}}
	a.TlsSession = &authv3.AttributeContext_TLSSession{Sni: "models.local"}
	a.Request.Time = timestamppb.New(timestamppb.Now().AsTime())
	h := a.Request.Http
	h.Query, h.Fragment, h.Size, h.Body = "q=1", "f", 1234, "body as a string ✓"
	h.Headers["x-unicode"] = "héllo"
	h.Headers[""] = ""
	return map[string]*authv3.CheckRequest{
		"empty":       {},
		"bench":       benchCheckRequest("mg_key"),
		"full":        full,
		"raw headers": CheckRequestFromHTTP(r, []byte("{}"), EnvoyOptions{EncodeRawHeaders: true, WithBody: true, PackAsBytes: true}),
		"string body": CheckRequestFromHTTP(r, []byte("{}"), EnvoyOptions{WithBody: true, Principal: "p"}),
		"no http":     {Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{}}},
		"empty body":  {Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{RawBody: []byte{}, Headers: map[string]string{}}}}},
	}
}

// checkDecodes holds decodeCheck to protobuf-go on wire: when it decodes,
// protobuf-go decodes the same message; when it does not, it left m empty.
// It reports whether decodeCheck decoded.
func checkDecodes(t *testing.T, wire []byte) bool {
	t.Helper()
	got := new(authv3.CheckRequest)
	ok := decodeCheck(wire, got)
	if !ok {
		if got.Attributes != nil {
			t.Fatalf("decodeCheck refused %x but changed the message: %v", wire, got)
		}
		return false
	}
	want := new(authv3.CheckRequest)
	if err := proto.Unmarshal(wire, want); err != nil {
		t.Fatalf("decodeCheck decoded %x, which protobuf-go refuses: %v", wire, err)
	}
	if !proto.Equal(got, want) {
		t.Fatalf("decodeCheck(%x):\n%v\nprotobuf-go:\n%v", wire, got, want)
	}
	return true
}

func TestDecodeCheckAsProtobufGo(t *testing.T) {
	for name, cr := range decodeCases(t) {
		t.Run(name, func(t *testing.T) {
			wire, err := proto.Marshal(cr)
			if err != nil {
				t.Fatal(err)
			}
			if !checkDecodes(t, wire) {
				t.Fatal("decodeCheck refused a request as Envoy sends it")
			}
		})
	}
}

// Edited encodings: each decodes as protobuf-go does, or is left to it.
func TestDecodeCheckEditedEncodings(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	decoded, refused := 0, 0
	cases := decodeCases(t)
	for _, name := range slices.Sorted(maps.Keys(cases)) {
		wire, err := proto.Marshal(cases[name])
		if err != nil {
			t.Fatal(err)
		}
		for range 3000 {
			b := append([]byte(nil), wire...)
			switch rng.IntN(4) {
			case 0:
				if len(b) > 0 {
					b[rng.IntN(len(b))] = byte(rng.Uint32())
				}
			case 1:
				b = b[:rng.IntN(len(b)+1)]
			case 2:
				if len(b) > 0 {
					i := rng.IntN(len(b))
					b[i] ^= 1 << rng.IntN(8)
				}
			case 3:
				b = append(b, wire...) // every field twice: messages merge
			}
			if checkDecodes(t, b) {
				decoded++
			} else {
				refused++
			}
		}
	}
	t.Logf("%d edited encodings decoded, %d left to protobuf-go", decoded, refused)
}

// What decodeCheck leaves to protobuf-go, which then refuses or merges.
func TestDecodeCheckRefuses(t *testing.T) {
	entry := func(k, v string) []byte {
		var e []byte
		e = protowire.AppendTag(e, 1, protowire.BytesType)
		e = protowire.AppendString(e, k)
		e = protowire.AppendTag(e, 2, protowire.BytesType)
		return protowire.AppendString(e, v)
	}
	wrap := func(num protowire.Number, inner []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), inner)
	}
	// CheckRequest.attributes.request.http with the given fields.
	check := func(http []byte) []byte { return wrap(1, wrap(4, wrap(2, http))) }
	for name, wire := range map[string][]byte{
		"invalid UTF-8 in a header value": check(wrap(3, entry("a", "\xff"))),
		"invalid UTF-8 in a header name":  check(wrap(3, entry("\xff", "a"))),
		"invalid UTF-8 in the path":       check(wrap(4, []byte("/\xff"))),
		"the http request twice":          wrap(1, wrap(4, append(wrap(2, wrap(2, []byte("GET"))), wrap(2, wrap(4, []byte("/")))...))),
		"the attributes twice":            append(check(wrap(2, []byte("GET"))), check(wrap(4, []byte("/")))...),
		"an unknown field":                check(protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 1)),
		"size as bytes":                   check(wrap(9, []byte("1"))),
		"a header entry's unknown field":  check(wrap(3, append(entry("a", "b"), wrap(3, nil)...))),
		"cut short":                       check(wrap(3, entry("a", "b")))[:10],
	} {
		t.Run(name, func(t *testing.T) {
			if checkDecodes(t, wire) {
				t.Fatal("decodeCheck decoded it")
			}
		})
	}
}

func FuzzDecodeCheck(f *testing.F) {
	for _, cr := range decodeCases(f) {
		wire, err := proto.Marshal(cr)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(wire)
	}
	f.Fuzz(func(t *testing.T, wire []byte) { checkDecodes(t, wire) })
}

func BenchmarkDecodeCheck(b *testing.B) {
	wire, err := proto.Marshal(benchCheckRequest("mg_key"))
	if err != nil {
		b.Fatal(err)
	}
	b.Run("decodeCheck", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !decodeCheck(wire, new(authv3.CheckRequest)) {
				b.Fatal("refused")
			}
		}
	})
	b.Run("protobuf-go", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := proto.Unmarshal(wire, new(authv3.CheckRequest)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
