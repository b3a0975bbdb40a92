package server

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/agentwire"
)

// frame is an agent protocol message of n body bytes.
func frame(n int) []byte {
	b := make([]byte, 4+n)
	binary.BigEndian.PutUint32(b, uint32(n))
	return b
}

// The forwarder carries a request to the client and its answer back, and
// bounds what a step can make it do: a request larger than the limit, or
// an answer that is not one agent message, closes the connection; past
// the connections a build may hold, a new one is closed at once; once the
// stream is gone, a connection waiting for an answer ends.
func TestAgentForwarder(t *testing.T) {
	var mu sync.Mutex
	var sent []*builderv1.AgentData
	f := newAgentForwarder([]string{"default"}, func(m *builderv1.AgentData) error {
		mu.Lock()
		defer mu.Unlock()
		sent = append(sent, m)
		return nil
	})
	lastSent := func() *builderv1.AgentData {
		for range 200 {
			mu.Lock()
			if len(sent) > 0 {
				m := sent[len(sent)-1]
				mu.Unlock()
				return m
			}
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatal("nothing was sent")
		return nil
	}
	serve := func() (net.Conn, chan struct{}) {
		step, ours := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			f.Serve(context.Background(), "default", ours)
			ours.Close()
		}()
		return step, done
	}
	if !f.Has("default") || f.Has("other") {
		t.Error("Has does not say which agents are forwarded")
	}

	step, done := serve()
	if _, err := step.Write(frame(3)); err != nil {
		t.Fatal(err)
	}
	req := lastSent()
	if req.GetId() != "default" || len(req.GetData()) != 7 || req.GetConnection() == 0 {
		t.Fatalf("sent %v, want the 7-byte request on a numbered connection of default", req)
	}
	f.deliver(&builderv1.AgentData{Connection: req.GetConnection(), Data: frame(5)})
	got := make([]byte, 9)
	if _, err := io.ReadFull(step, got); err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	// An answer that is not one whole message ends the connection.
	mu.Lock()
	sent = nil
	mu.Unlock()
	step.Write(frame(1))
	req = lastSent()
	f.deliver(&builderv1.AgentData{Connection: req.GetConnection(), Data: []byte{0, 0, 0, 9, 1}})
	<-done

	// A request past the limit ends the connection unsent.
	step, done = serve()
	mu.Lock()
	sent = nil
	mu.Unlock()
	go step.Write(frame(agentwire.MaxMessage))
	<-done
	if m := lastSent(); !m.GetClose() {
		t.Errorf("after an oversized request the forwarder sent %v, want only the close", m)
	}

	// Past agentwire.MaxConns open connections, a new one is closed at once.
	var held []net.Conn
	for range agentwire.MaxConns {
		c, _ := serve()
		held = append(held, c)
	}
	for len(f.slots) < agentwire.MaxConns {
		time.Sleep(time.Millisecond) // until each took its slot
	}
	_, extra := serve()
	select {
	case <-extra:
	case <-time.After(5 * time.Second):
		t.Error("a connection past the bound was served")
	}

	// Once the stream is gone, a connection waiting for an answer ends.
	for _, c := range held[1:] {
		c.Close()
	}
	c := held[0]
	c.Write(frame(1))
	f.stop()
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("a connection still answered after stop")
	}
	if err := f.send(&builderv1.AgentData{}); err == nil {
		t.Error("send after stop succeeded")
	}
}
