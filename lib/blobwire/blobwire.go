// Package blobwire carries the bulk messages of the blob service
// (strata.blob.v1 WriteRequest and ReadResponse) over gRPC without copying
// their data.
//
// gRPC's proto codec copies a message's bytes twice on the way in (joining
// the HTTP/2 frames, then into the message) and once on the way out, each
// time into a fresh, zeroed buffer: for a blob store that is most of the
// CPU it spends per byte beyond the network and the hash. Codec encodes the
// same protobuf wire format, so any peer still talks to it, but a Bulk
// message keeps its data field as reference-counted gRPC buffers
// (mem.BufferSlice): the frames received are handed on as they are, and
// data to send is written to the connection from the sender's buffer.
//
// The client (lib/blobclient) sets Codec on its Write and Read calls; the
// blob store sets it on its server. Every other message goes through
// gRPC's own proto codec.
package blobwire

import (
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc/encoding"
	gproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Bulk is a message whose `bytes data` field travels as Data, by
// reference, instead of inside Msg.
//
// To send one, set Msg (its data field empty) and Data, call SendMsg, and
// Free Data afterwards: gRPC holds its own reference until the bytes are on
// the wire, so the buffers must not be reused before their pool gets them
// back. After RecvMsg, Data holds the received bytes; the receiver must Free
// it when done.
type Bulk struct {
	Msg  proto.Message
	Data mem.BufferSlice
}

// Codec is a gRPC codec (encoding.CodecV2) named "proto", as gRPC's own, so
// that the content type on the wire does not change. It handles *Bulk
// without copying the data and passes anything else to gRPC's proto codec.
type Codec struct {
	base encoding.CodecV2
}

var _ encoding.CodecV2 = Codec{}

// NewCodec returns the codec.
func NewCodec() Codec {
	return Codec{base: encoding.GetCodecV2(gproto.Name)}
}

// Name implements encoding.CodecV2.
func (Codec) Name() string { return gproto.Name }

// dataField returns the `bytes data` field of m.
func dataField(m proto.Message) (protoreflect.FieldDescriptor, error) {
	fd := m.ProtoReflect().Descriptor().Fields().ByName("data")
	if fd == nil || fd.Kind() != protoreflect.BytesKind || fd.Cardinality() == protoreflect.Repeated {
		return nil, fmt.Errorf("blobwire: %s has no bytes field named data", m.ProtoReflect().Descriptor().FullName())
	}
	return fd, nil
}

// Marshal implements encoding.CodecV2: a Bulk goes out as the encoding of
// Msg followed by the data field, whose bytes are Data's buffers themselves.
func (c Codec) Marshal(v any) (mem.BufferSlice, error) {
	b, ok := v.(*Bulk)
	if !ok {
		return c.base.Marshal(v)
	}
	fd, err := dataField(b.Msg)
	if err != nil {
		return nil, err
	}
	if b.Msg.ProtoReflect().Has(fd) {
		return nil, errors.New("blobwire: the message's data field is set; pass the bytes as Bulk.Data")
	}
	head, err := proto.MarshalOptions{}.MarshalAppend(make([]byte, 0, 64), b.Msg)
	if err != nil {
		return nil, err
	}
	n := b.Data.Len()
	if n == 0 {
		return mem.BufferSlice{mem.SliceBuffer(head)}, nil
	}
	head = protowire.AppendTag(head, fd.Number(), protowire.BytesType)
	head = protowire.AppendVarint(head, uint64(n))
	out := make(mem.BufferSlice, 0, len(b.Data)+1)
	out = append(out, mem.SliceBuffer(head))
	for _, buf := range b.Data {
		buf.Ref()
		out = append(out, buf)
	}
	return out, nil
}

// Unmarshal implements encoding.CodecV2. For a Bulk, the data field's bytes
// become Data (references to the received buffers) and every other field is
// decoded into Msg as proto.Unmarshal would.
func (c Codec) Unmarshal(data mem.BufferSlice, v any) error {
	b, ok := v.(*Bulk)
	if !ok {
		return c.base.Unmarshal(data, v)
	}
	fd, err := dataField(b.Msg)
	if err != nil {
		return err
	}
	b.Data.Free()
	b.Data = nil
	rest, payload, err := split(data, fd.Number())
	if err != nil {
		payload.Free()
		return err
	}
	if err := proto.Unmarshal(rest, b.Msg); err != nil {
		payload.Free()
		return err
	}
	b.Data = payload
	return nil
}

// split walks the fields of an encoded message and returns the encoding of
// all but field num, copied, and the value of field num (the last one, as
// protobuf wants for a repeated scalar), referenced.
func split(data mem.BufferSlice, num protowire.Number) (rest []byte, payload mem.BufferSlice, err error) {
	c := cursor{bufs: data}
	for !c.done() {
		tag, err := c.varint()
		if err != nil {
			return nil, payload, err
		}
		n, typ := protowire.DecodeTag(tag)
		if n < protowire.MinValidNumber || n > protowire.MaxValidNumber {
			return nil, payload, errors.New("blobwire: invalid field number")
		}
		switch typ {
		case protowire.VarintType:
			x, err := c.varint()
			if err != nil {
				return nil, payload, err
			}
			rest = protowire.AppendVarint(protowire.AppendTag(rest, n, typ), x)
		case protowire.Fixed32Type, protowire.Fixed64Type:
			size := 4
			if typ == protowire.Fixed64Type {
				size = 8
			}
			if rest, err = c.copy(protowire.AppendTag(rest, n, typ), size); err != nil {
				return nil, payload, err
			}
		case protowire.BytesType:
			size, err := c.varint()
			if err != nil {
				return nil, payload, err
			}
			if size > uint64(c.remaining()) {
				return nil, payload, errors.New("blobwire: a field runs past the end of the message")
			}
			if n == num {
				payload.Free()
				payload = c.slice(int(size))
				continue
			}
			rest = protowire.AppendVarint(protowire.AppendTag(rest, n, typ), size)
			if rest, err = c.copy(rest, int(size)); err != nil {
				return nil, payload, err
			}
		default:
			return nil, payload, fmt.Errorf("blobwire: unsupported wire type %d", typ)
		}
	}
	return rest, payload, nil
}

// cursor reads through the buffers of a message.
type cursor struct {
	bufs mem.BufferSlice
	i    int // the buffer being read
	off  int // in it
}

func (c *cursor) skipEmpty() {
	for c.i < len(c.bufs) && c.off == c.bufs[c.i].Len() {
		c.i++
		c.off = 0
	}
}

func (c *cursor) done() bool {
	c.skipEmpty()
	return c.i == len(c.bufs)
}

func (c *cursor) remaining() int {
	n := 0
	for j := c.i; j < len(c.bufs); j++ {
		n += c.bufs[j].Len()
	}
	return n - c.off
}

func (c *cursor) byte() (byte, bool) {
	c.skipEmpty()
	if c.i == len(c.bufs) {
		return 0, false
	}
	b := c.bufs[c.i].ReadOnlyData()[c.off]
	c.off++
	return b, true
}

var errTruncated = errors.New("blobwire: the message ends inside a field")

func (c *cursor) varint() (uint64, error) {
	var x uint64
	for shift := uint(0); shift < 64; shift += 7 {
		b, ok := c.byte()
		if !ok {
			return 0, errTruncated
		}
		if shift == 63 && b > 1 {
			// The tenth byte holds the 64th bit only, as protobuf has it.
			return 0, errors.New("blobwire: a varint overflows 64 bits")
		}
		x |= uint64(b&0x7f) << shift
		if b < 0x80 {
			return x, nil
		}
	}
	return 0, errors.New("blobwire: a varint is too long")
}

// copy appends the next n bytes to dst.
func (c *cursor) copy(dst []byte, n int) ([]byte, error) {
	for n > 0 {
		c.skipEmpty()
		if c.i == len(c.bufs) {
			return dst, errTruncated
		}
		d := c.bufs[c.i].ReadOnlyData()[c.off:]
		k := min(n, len(d))
		dst = append(dst, d[:k]...)
		c.off += k
		n -= k
	}
	return dst, nil
}

// slice returns new references to the next n bytes, which the caller has
// checked are there.
func (c *cursor) slice(n int) mem.BufferSlice {
	var out mem.BufferSlice
	for n > 0 {
		c.skipEmpty()
		buf := c.bufs[c.i]
		k := min(n, buf.Len()-c.off)
		out = append(out, buf.Slice(c.off, c.off+k))
		c.off += k
		n -= k
	}
	return out
}

// Pool is a mem.BufferPool of buffers of one size, handed out as they were
// put back, not cleared: for data that is written over before it is read.
type Pool struct {
	size int
	p    sync.Pool
}

var _ mem.BufferPool = (*Pool)(nil)

// NewPool returns a pool of buffers of size bytes.
func NewPool(size int) *Pool {
	p := &Pool{size: size}
	p.p.New = func() any { b := make([]byte, size); return &b }
	return p
}

// Get returns a buffer of n bytes, at most the pool's size, with the
// capacity of the pool's size.
func (p *Pool) Get(n int) *[]byte {
	if n > p.size {
		b := make([]byte, n)
		return &b
	}
	b := p.p.Get().(*[]byte)
	*b = (*b)[:n]
	return b
}

// Put returns a buffer that Get gave out; others are left to the garbage
// collector.
func (p *Pool) Put(b *[]byte) {
	if cap(*b) == p.size {
		p.p.Put(b)
	}
}

// Buffer wraps the pool buffer b, holding n bytes, as a reference-counted
// mem.Buffer that goes back to the pool when its last reference is freed.
func (p *Pool) Buffer(b *[]byte, n int) mem.Buffer {
	*b = (*b)[:n]
	return mem.NewBuffer(b, p)
}

// TieredPool is a mem.BufferPool for gRPC's own buffers (HTTP/2 frames,
// messages), in the tiers of gRPC's default pool but handed out without
// being cleared: gRPC fills every buffer it takes (a frame is read into it,
// a message encoded or copied into it) before it reads it, and clearing
// 16 KiB for each frame of a blob costs as much as copying it.
type TieredPool struct {
	tiers []*Pool // by size, ascending
}

var _ mem.BufferPool = (*TieredPool)(nil)

// NewTieredPool returns a pool with gRPC's default tiers: 256 B, 4 KiB,
// 16 KiB (a frame), 32 KiB and 1 MiB.
func NewTieredPool() *TieredPool {
	t := &TieredPool{}
	for _, size := range []int{256, 4 << 10, 16 << 10, 32 << 10, 1 << 20} {
		t.tiers = append(t.tiers, NewPool(size))
	}
	return t
}

// Get implements mem.BufferPool.
func (t *TieredPool) Get(n int) *[]byte {
	for _, p := range t.tiers {
		if n <= p.size {
			return p.Get(n)
		}
	}
	b := make([]byte, n)
	return &b
}

// Put implements mem.BufferPool: a buffer goes back to the tier of its
// capacity.
func (t *TieredPool) Put(b *[]byte) {
	for _, p := range t.tiers {
		if cap(*b) == p.size {
			p.Put(b)
			return
		}
	}
}
