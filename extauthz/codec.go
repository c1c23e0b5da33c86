package extauthz

import (
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// sizedCheck is a CheckRequest received with the size of its encoding,
// which the body budget holds while the check runs.
type sizedCheck struct {
	*authv3.CheckRequest
	size int
}

// sizingCodec is gRPC's proto codec, which also records the wire size of a
// sizedCheck it decodes (proto.Size of the message, without walking the
// decoded message again: a few percent of a check's CPU), decodes it
// mostly itself (see decodeCheck) and encodes a CheckResponse itself (see
// appendResponse and appendMetadata).
type sizingCodec struct{ encoding.CodecV2 }

func newSizingCodec() sizingCodec { return sizingCodec{encoding.GetCodecV2(grpcproto.Name)} }

func (c sizingCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if m, ok := v.(*sizedCheck); ok {
		m.size = data.Len()
		buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
		defer buf.Free()
		if decodeCheck(buf.ReadOnlyData(), m.CheckRequest) {
			return nil
		}
		return proto.Unmarshal(buf.ReadOnlyData(), m.CheckRequest)
	}
	return c.CodecV2.Unmarshal(data, v)
}

func (c sizingCodec) Marshal(v any) (mem.BufferSlice, error) {
	if a, ok := v.(answer); ok {
		if len(a.d.Metadata) > 0 {
			return c.Marshal(toResponse(a.d))
		}
		return mem.BufferSlice{mem.SliceBuffer(appendAnswer(make([]byte, 0, answerSize(a.d)), a.d))}, nil
	}
	resp, ok := v.(*authv3.CheckResponse)
	if !ok {
		return c.CodecV2.Marshal(v)
	}
	md := resp.DynamicMetadata
	if !encodable(resp) {
		if md == nil {
			return c.CodecV2.Marshal(v)
		}
		// The answer is this call's own until it is sent: encode it
		// without its metadata, then append the metadata field.
		resp.DynamicMetadata = nil
		b, err := proto.MarshalOptions{}.MarshalAppend(nil, resp)
		resp.DynamicMetadata = md
		if err != nil {
			return nil, err
		}
		return appendMetadataBuffer(b, md)
	}
	size := responseSize(resp)
	if md != nil {
		size += messageField(dynamicMetadataField, metadataSize(md))
	}
	return appendMetadataBuffer(appendResponse(make([]byte, 0, size), resp), md)
}

// appendMetadataBuffer appends md, when there is one, to an answer encoded
// without it.
func appendMetadataBuffer(b []byte, md *structpb.Struct) (mem.BufferSlice, error) {
	if md != nil {
		var err error
		if b, err = appendMetadata(b, md); err != nil {
			return nil, err
		}
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

// dynamicMetadataField is CheckResponse.dynamic_metadata's field number.
const dynamicMetadataField = 4

// appendMetadata appends md as CheckResponse.dynamic_metadata. protobuf-go
// encodes a map field (Struct.fields) by reflection, twice (its size, then
// its bytes), which cost about half of an allowed answer's encoding; the
// entries, string values but for a policy's own metadata, are simple to
// encode with protowire: each is a message with the key as field 1 and the
// Value as field 2. Other values are encoded by protobuf-go.
func appendMetadata(b []byte, md *structpb.Struct) ([]byte, error) {
	b = protowire.AppendTag(b, dynamicMetadataField, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(metadataSize(md)))
	for k, v := range md.GetFields() {
		vsize := valueSize(v)
		b = protowire.AppendTag(b, 1, protowire.BytesType) // Struct.fields
		b = protowire.AppendVarint(b, uint64(entrySize(k, vsize)))
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, k)
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(vsize))
		if s, ok := v.GetKind().(*structpb.Value_StringValue); ok {
			b = protowire.AppendTag(b, stringValueField, protowire.BytesType)
			b = protowire.AppendString(b, s.StringValue)
			continue
		}
		var err error
		if b, err = (proto.MarshalOptions{UseCachedSize: true}).MarshalAppend(b, v); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// stringValueField is Value.string_value's field number.
const stringValueField = 3

// metadataSize is the encoded size of md's fields.
func metadataSize(md *structpb.Struct) int {
	n := 0
	for k, v := range md.GetFields() {
		e := entrySize(k, valueSize(v))
		n += protowire.SizeTag(1) + protowire.SizeBytes(e)
	}
	return n
}

func entrySize(key string, valueSize int) int {
	return protowire.SizeTag(1) + protowire.SizeBytes(len(key)) + protowire.SizeTag(2) + protowire.SizeBytes(valueSize)
}

// valueSize is v's encoded size; for other than a string, protobuf-go's,
// which it caches for appendMetadata's MarshalAppend.
func valueSize(v *structpb.Value) int {
	if s, ok := v.GetKind().(*structpb.Value_StringValue); ok {
		return protowire.SizeTag(stringValueField) + protowire.SizeBytes(len(s.StringValue))
	}
	return proto.Size(v)
}
