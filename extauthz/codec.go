package extauthz

import (
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
)

// sizedCheck is a CheckRequest received with the size of its encoding,
// which the body budget holds while the check runs.
type sizedCheck struct {
	*authv3.CheckRequest
	size int
}

// sizingCodec is gRPC's proto codec, which also records the wire size of a
// sizedCheck it decodes: that is proto.Size of the message, without walking
// the decoded message again (a few percent of a check's CPU).
type sizingCodec struct{ encoding.CodecV2 }

func newSizingCodec() sizingCodec { return sizingCodec{encoding.GetCodecV2(proto.Name)} }

func (c sizingCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if m, ok := v.(*sizedCheck); ok {
		m.size = data.Len()
		return c.CodecV2.Unmarshal(data, m.CheckRequest)
	}
	return c.CodecV2.Unmarshal(data, v)
}
