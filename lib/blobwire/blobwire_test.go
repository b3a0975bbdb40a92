package blobwire

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	blobv1 "github.com/strata-build/strata/gen/strata/blob/v1"
)

// fragment cuts b into buffers at the given offsets, as HTTP/2 frames
// would, each counted so that a leak or a double free shows.
func fragment(t *testing.T, b []byte, cuts ...int) (mem.BufferSlice, *countingPool) {
	t.Helper()
	pool := &countingPool{}
	var out mem.BufferSlice
	prev := 0
	for _, c := range append(cuts, len(b)) {
		if c < prev || c > len(b) {
			continue
		}
		buf := make([]byte, c-prev, max(c-prev, 2048)) // above gRPC's pooling threshold
		copy(buf, b[prev:c])
		pool.out++
		out = append(out, mem.NewBuffer(&buf, pool))
		prev = c
	}
	return out, pool
}

type countingPool struct{ out, back int }

func (p *countingPool) Get(n int) *[]byte { b := make([]byte, n); return &b }
func (p *countingPool) Put(*[]byte)       { p.back++ }

func TestUnmarshalAnySplit(t *testing.T) {
	data := make([]byte, 3000)
	for i := range data {
		data[i] = byte(i)
	}
	size := int64(77)
	want := &blobv1.WriteRequest{Ref: "r1", Digest: "sha256:abc", Size: &size, MediaType: "m", Offset: 1 << 40, Data: data, Commit: true}
	wire, err := proto.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	c := NewCodec()
	// Every place one cut can fall, and a few pairs: field headers and
	// varints split across buffers must decode alike.
	cases := [][]int{nil}
	for i := 1; i < len(wire); i++ {
		if i < 40 || i > len(wire)-40 || i%97 == 0 {
			cases = append(cases, []int{i})
		}
	}
	for i := 0; i < 200; i++ {
		a, b := rand.IntN(len(wire)), rand.IntN(len(wire))
		cases = append(cases, []int{min(a, b), max(a, b)})
	}
	for _, cuts := range cases {
		bufs, pool := fragment(t, wire, cuts...)
		got := &Bulk{Msg: &blobv1.WriteRequest{}}
		if err := c.Unmarshal(bufs, got); err != nil {
			t.Fatalf("cuts %v: %v", cuts, err)
		}
		bufs.Free() // as gRPC does after Unmarshal
		if pool.back == pool.out {
			t.Fatalf("cuts %v: the buffers holding the data went back to their pool", cuts)
		}
		if !bytes.Equal(got.Data.Materialize(), data) {
			t.Fatalf("cuts %v: data differs", cuts)
		}
		m := got.Msg.(*blobv1.WriteRequest)
		m.Data = data
		if !proto.Equal(m, want) {
			t.Fatalf("cuts %v: got %v", cuts, m)
		}
		got.Data.Free()
		if pool.back != pool.out {
			t.Fatalf("cuts %v: %d of %d buffers returned", cuts, pool.back, pool.out)
		}
	}
}

func TestMarshalIsProto(t *testing.T) {
	c := NewCodec()
	data := bytes.Repeat([]byte("x"), 5000)
	bufs, pool := fragment(t, data, 100, 4096)
	msg := &blobv1.ReadResponse{Offset: 12, Size: 99}
	out, err := c.Marshal(&Bulk{Msg: msg, Data: bufs})
	if err != nil {
		t.Fatal(err)
	}
	bufs.Free() // the sender's reference
	if pool.back != 0 {
		t.Fatal("buffers returned while the encoding holds them")
	}
	var got blobv1.ReadResponse
	if err := proto.Unmarshal(out.Materialize(), &got); err != nil {
		t.Fatal(err)
	}
	out.Free()
	if pool.back != pool.out {
		t.Fatalf("%d of %d buffers returned", pool.back, pool.out)
	}
	if got.GetOffset() != 12 || got.GetSize() != 99 || !bytes.Equal(got.GetData(), data) {
		t.Fatalf("got offset %d size %d, %d bytes", got.GetOffset(), got.GetSize(), len(got.GetData()))
	}

	// No data: the message alone.
	out, err = c.Marshal(&Bulk{Msg: &blobv1.WriteRequest{Commit: true}})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := proto.Marshal(&blobv1.WriteRequest{Commit: true})
	if !bytes.Equal(out.Materialize(), want) {
		t.Fatal("an empty Bulk does not encode as its message")
	}

	// The data field in Msg would be sent twice: refused.
	if _, err := c.Marshal(&Bulk{Msg: &blobv1.ReadResponse{Data: []byte("x")}}); err == nil {
		t.Fatal("Marshal accepted data in the message")
	}
	// A message without a data field is not a Bulk.
	if _, err := c.Marshal(&Bulk{Msg: &blobv1.StatRequest{}}); err == nil {
		t.Fatal("Marshal accepted a message without a data field")
	}
}

func TestUnmarshalLastDataWinsAndUnknownKept(t *testing.T) {
	var wire []byte
	wire = protowire.AppendTag(wire, 2, protowire.BytesType)
	wire = protowire.AppendBytes(wire, []byte("first"))
	wire = protowire.AppendTag(wire, 1, protowire.VarintType)
	wire = protowire.AppendVarint(wire, 5)
	wire = protowire.AppendTag(wire, 99, protowire.Fixed64Type) // unknown to this schema
	wire = protowire.AppendFixed64(wire, 7)
	wire = protowire.AppendTag(wire, 2, protowire.BytesType)
	wire = protowire.AppendBytes(wire, []byte("second"))

	var want blobv1.ReadResponse
	if err := proto.Unmarshal(wire, &want); err != nil {
		t.Fatal(err)
	}
	bufs, pool := fragment(t, wire, 3, 9)
	got := &Bulk{Msg: &blobv1.ReadResponse{}}
	if err := NewCodec().Unmarshal(bufs, got); err != nil {
		t.Fatal(err)
	}
	bufs.Free()
	m := got.Msg.(*blobv1.ReadResponse)
	m.Data = got.Data.Materialize()
	got.Data.Free()
	if !proto.Equal(m, &want) || string(m.Data) != "second" {
		t.Fatalf("got %v, want %v", m, &want)
	}
	if len(m.ProtoReflect().GetUnknown()) == 0 {
		t.Fatal("the unknown field was dropped")
	}
	if pool.back != pool.out {
		t.Fatalf("%d of %d buffers returned", pool.back, pool.out)
	}
}

func TestUnmarshalBad(t *testing.T) {
	good, _ := proto.Marshal(&blobv1.WriteRequest{Ref: "r", Data: []byte("0123456789")})
	bad := map[string][]byte{
		"truncated data":   good[:len(good)-3],
		"truncated varint": {0x2a, 0xff},
		"field 0":          {0x00, 0x01},
		"group":            {0x0b},
		"long varint":      bytes.Repeat([]byte{0xff}, 11),
	}
	for name, wire := range bad {
		bufs, pool := fragment(t, wire, 1)
		err := NewCodec().Unmarshal(bufs, &Bulk{Msg: &blobv1.WriteRequest{}})
		bufs.Free()
		if err == nil {
			t.Errorf("%s: no error", name)
		}
		if pool.back != pool.out {
			t.Errorf("%s: %d of %d buffers returned", name, pool.back, pool.out)
		}
	}
}

func TestOtherMessagesUseProto(t *testing.T) {
	c := NewCodec()
	in := &blobv1.StatRequest{Digest: "sha256:x"}
	out, err := c.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var got blobv1.StatRequest
	if err := c.Unmarshal(out, &got); err != nil || got.GetDigest() != in.GetDigest() {
		t.Fatalf("got %v, %v", &got, err)
	}
	if c.Name() != "proto" {
		t.Fatalf("Name() = %q: the content type would change", c.Name())
	}
}

func TestPool(t *testing.T) {
	p := NewPool(1 << 20)
	b := p.Get(100)
	if len(*b) != 100 || cap(*b) != 1<<20 {
		t.Fatalf("Get(100): len %d cap %d", len(*b), cap(*b))
	}
	buf := p.Buffer(b, 10)
	if buf.Len() != 10 {
		t.Fatalf("Buffer: %d bytes", buf.Len())
	}
	buf.Free()
	if big := p.Get(2 << 20); len(*big) != 2<<20 {
		t.Fatal("Get of more than the size")
	}
}

func TestTieredPool(t *testing.T) {
	p := NewTieredPool()
	for _, n := range []int{1, 256, 257, 16 << 10, 20000, 1 << 20, 3 << 20} {
		b := p.Get(n)
		if len(*b) != n {
			t.Fatalf("Get(%d): %d bytes", n, len(*b))
		}
		p.Put(b)
	}
	b := p.Get(16 << 10)
	if cap(*b) != 16<<10 {
		t.Fatalf("Get(16 KiB): capacity %d, want the 16 KiB tier", cap(*b))
	}
}
