package blobwire

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	blobv1 "github.com/strata-build/strata/gen/strata/blob/v1"
)

// FuzzUnmarshal feeds any bytes, cut into buffers anywhere, to the codec as
// the messages a blob store and its clients receive (WriteRequest,
// ReadResponse). The splitter must agree with proto.Unmarshal: it accepts
// only what protobuf accepts (groups aside, which it refuses), and then
// decodes the same fields and data; the message it decoded encodes back
// (Marshal) to the same message; and every buffer goes back to its pool
// once gRPC and the receiver release theirs, whatever the input.
func FuzzUnmarshal(f *testing.F) {
	size := int64(5)
	for _, m := range []proto.Message{
		&blobv1.WriteRequest{Ref: "build-1/layer", Digest: "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824", Size: &size, MediaType: "application/vnd.oci.image.layer.v1.tar+gzip", Data: []byte("hello"), Commit: true},
		&blobv1.WriteRequest{Ref: "r", Offset: 1 << 40, Data: bytes.Repeat([]byte{0xab}, 3000)},
		&blobv1.WriteRequest{Commit: true},
		&blobv1.ReadResponse{Offset: 12, Size: 99, Data: []byte("0123456789")},
	} {
		wire, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		_, read := m.(*blobv1.ReadResponse)
		f.Add(wire, uint16(3), uint16(len(wire)/2), read)
	}
	f.Fuzz(func(t *testing.T, wire []byte, cut1, cut2 uint16, read bool) {
		newMsg := func() proto.Message {
			if read {
				return &blobv1.ReadResponse{}
			}
			return &blobv1.WriteRequest{}
		}
		a, b := int(cut1)%(len(wire)+1), int(cut2)%(len(wire)+1)
		bufs, pool := fragment(t, wire, min(a, b), max(a, b))
		got := &Bulk{Msg: newMsg()}
		err := NewCodec().Unmarshal(bufs, got)
		bufs.Free() // as gRPC does after Unmarshal
		want := newMsg()
		wantErr := proto.Unmarshal(wire, want)
		switch {
		case err != nil && wantErr == nil && !hasGroup(wire):
			t.Fatalf("Unmarshal refused what proto.Unmarshal accepts: %v", err)
		case err == nil && wantErr != nil:
			t.Fatalf("Unmarshal accepted what proto.Unmarshal refuses (%v)", wantErr)
		case err == nil:
			fd, _ := dataField(got.Msg)
			decoded := proto.Clone(got.Msg)
			decoded.ProtoReflect().Set(fd, protoreflect.ValueOfBytes(got.Data.Materialize()))
			if !sameKnownFields(decoded, want) {
				t.Fatalf("Unmarshal decoded %v, proto.Unmarshal %v", decoded, want)
			}
			out, err := NewCodec().Marshal(got)
			if err != nil {
				t.Fatalf("Marshal of what Unmarshal decoded: %v", err)
			}
			again := newMsg()
			if err := proto.Unmarshal(out.Materialize(), again); err != nil || !sameKnownFields(again, want) {
				t.Fatalf("Marshal of what Unmarshal decoded reads back as %v (%v), want %v", again, err, want)
			}
			out.Free()
		}
		got.Data.Free()
		if pool.back != pool.out {
			t.Fatalf("%d of %d buffers went back to their pool", pool.back, pool.out)
		}
	})
}

// sameKnownFields compares two messages without their unknown fields, which
// the splitter re-encodes (a varint may shrink to its shortest form).
func sameKnownFields(a, b proto.Message) bool {
	a, b = proto.Clone(a), proto.Clone(b)
	a.ProtoReflect().SetUnknown(nil)
	b.ProtoReflect().SetUnknown(nil)
	return proto.Equal(a, b)
}

// hasGroup reports whether a message holds a field of the group wire
// types, which protobuf skips as unknown and the splitter refuses.
func hasGroup(wire []byte) bool {
	for len(wire) > 0 {
		num, typ, n := protowire.ConsumeTag(wire)
		if n < 0 {
			return false
		}
		if typ == protowire.StartGroupType || typ == protowire.EndGroupType {
			return true
		}
		wire = wire[n:]
		if n = protowire.ConsumeFieldValue(num, typ, wire); n < 0 {
			return false
		}
		wire = wire[n:]
	}
	return false
}
