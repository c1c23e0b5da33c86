package extauthz

import (
	"encoding/json"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/modelguard/modelguard/policy"
)

// The codec's answers decode to exactly the messages it was given, with
// the metadata it encodes itself (modelguard's strings, a policy's
// numbers, booleans, nulls, lists, objects, empty strings and keys), and
// it leaves the message as it was.
func TestCodecEncodesAnswers(t *testing.T) {
	policyMetadata := map[string]any{
		"tenant": "acme", "n": json.Number("1.5"), "ok": true, "none": nil, "": "empty key", "blank": "",
		"list": []any{"a", json.Number("2"), map[string]any{"x": "y"}}, "obj": map[string]any{"deep": map[string]any{"k": false}},
		"reason": "the policy's, overridden by modelguard's",
	}
	for _, tc := range []struct {
		name string
		d    *policy.Decision
	}{
		{"allow", &policy.Decision{ID: "d1", Allow: true, Status: 200, Reason: "allowed", PolicyRevision: "rev",
			UpstreamHeaders: []policy.Header{{Name: "x-modelguard-subject", Value: "alice"}}, RemoveHeaders: []string{"authorization"},
			Identity: &policy.Identity{Subject: "alice"}}},
		{"allow with the policy's metadata", &policy.Decision{ID: "d2", Allow: true, Status: 200, Reason: "allowed", Metadata: policyMetadata}},
		{"deny", &policy.Decision{ID: "d3", Status: 403, Reason: "forbidden", Message: "denied"}},
		{"no metadata", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := &authv3.CheckResponse{}
			if tc.d != nil {
				resp = toResponse(tc.d)
			}
			want := proto.Clone(resp)
			got, _ := encodeDecode(t, resp)
			if !proto.Equal(got, want) {
				t.Errorf("decoded:\n%v\nwant:\n%v", got, want)
			}
			if !proto.Equal(resp, want) {
				t.Errorf("the codec changed the message:\n%v", resp)
			}
		})
	}
	codec := newSizingCodec()
	var nilValue structpb.Struct
	nilValue.Fields = map[string]*structpb.Value{"nil": nil}
	data, err := codec.Marshal(&authv3.CheckResponse{DynamicMetadata: &nilValue})
	if err != nil {
		t.Fatal(err)
	}
	lib, _ := proto.Marshal(&authv3.CheckResponse{DynamicMetadata: &nilValue})
	var a, b authv3.CheckResponse
	if proto.Unmarshal(data.Materialize(), &a) != nil || proto.Unmarshal(lib, &b) != nil || !proto.Equal(&a, &b) {
		t.Errorf("a nil value: %v, protobuf-go: %v", &a, &b)
	}
}

// encodeDecode encodes v (an answer or a CheckResponse) with the server's
// codec and decodes it back; it returns the message and the bytes.
func encodeDecode(t *testing.T, v any) (*authv3.CheckResponse, []byte) {
	t.Helper()
	data, err := newSizingCodec().Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	b := data.Materialize()
	got := new(authv3.CheckResponse)
	if err := proto.Unmarshal(b, got); err != nil {
		t.Fatal(err)
	}
	return got, b
}
