// Package agentwire holds what both ends of SSH agent forwarding (RUN
// --mount=type=ssh) agree on: the bounds the builder keeps and the framing
// of one agent protocol message (draft-miller-ssh-agent, section 3), which
// the client and the builder each read off a connection and carry whole in
// one AgentData message of the build stream.
package agentwire

import (
	"encoding/binary"
	"fmt"
	"io"
)

const (
	// MaxAgents is the most SSH agents one build may forward.
	MaxAgents = 100
	// MaxConns is how many agent connections of a build's steps are
	// answered at once; the builder closes more at once, so that a step
	// cannot pile up requests on its client.
	MaxConns = 16
	// MaxMessage is the size of one agent message, its length prefix
	// included (a list or sign exchange is a few KiB).
	MaxMessage = 256 << 10
	// LengthBytes is the size of a message's length prefix.
	LengthBytes = 4
)

// ReadMessage reads one agent protocol message, its length prefix
// included, of at most MaxMessage bytes.
func ReadMessage(r io.Reader) ([]byte, error) {
	var hdr [LengthBytes]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > MaxMessage-LengthBytes {
		return nil, fmt.Errorf("an SSH agent message of %d bytes, more than %d", n, MaxMessage-LengthBytes)
	}
	msg := make([]byte, LengthBytes+int(n))
	copy(msg, hdr[:])
	_, err := io.ReadFull(r, msg[LengthBytes:])
	return msg, err
}

// IsMessage reports whether data is exactly one agent message within
// MaxMessage: what a build stream's AgentData must carry.
func IsMessage(data []byte) bool {
	return len(data) >= LengthBytes && len(data) <= MaxMessage &&
		int(binary.BigEndian.Uint32(data)) == len(data)-LengthBytes
}
