package agentwire

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

func frame(body []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

func TestReadMessage(t *testing.T) {
	list := frame([]byte{11})
	r := bytes.NewReader(append(append([]byte{}, list...), frame([]byte{13, 1, 2})...))
	for _, want := range [][]byte{list, frame([]byte{13, 1, 2})} {
		got, err := ReadMessage(r)
		if err != nil || !bytes.Equal(got, want) || !IsMessage(got) {
			t.Fatalf("ReadMessage = %v, %v, want %v", got, err, want)
		}
	}
	// A length past the bound is refused before its body is read.
	big := binary.BigEndian.AppendUint32(nil, MaxMessage)
	if _, err := ReadMessage(bytes.NewReader(big)); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("ReadMessage of a %d-byte message = %v, want refused", MaxMessage, err)
	}
	if got, err := ReadMessage(bytes.NewReader(frame(make([]byte, MaxMessage-LengthBytes)))); err != nil || len(got) != MaxMessage {
		t.Errorf("ReadMessage of a message of MaxMessage bytes = %d bytes, %v", len(got), err)
	}
}

func TestIsMessage(t *testing.T) {
	for _, data := range [][]byte{nil, {0, 0}, {0, 0, 0, 2, 11}, append(frame([]byte{11}), 0), frame(make([]byte, MaxMessage))} {
		if IsMessage(data) {
			t.Errorf("IsMessage(%d bytes: % x…) = true", len(data), data[:min(len(data), 5)])
		}
	}
	if !IsMessage(frame(nil)) || !IsMessage(frame([]byte{11})) {
		t.Error("IsMessage refused a whole message")
	}
}
