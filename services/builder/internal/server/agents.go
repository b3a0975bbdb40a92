package server

import (
	"context"
	"errors"
	"net"
	"sync"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/agentwire"
	"github.com/strata-build/strata/lib/errdefs"
)

// maxAgentID bounds an SSH agent's ID, as for secrets (agentwire holds
// the other bounds of agent forwarding).
const maxAgentID = 256

// checkAgentIDs checks BuildOptions.ssh_ids.
func checkAgentIDs(ids []string) error {
	if len(ids) > agentwire.MaxAgents {
		return sshError("build: %d SSH agents, more than the builder's limit of %d", len(ids), agentwire.MaxAgents)
	}
	seen := map[string]bool{}
	for _, id := range ids {
		if id == "" || len(id) > maxAgentID {
			return sshError("build: an SSH agent's ID must have 1 to %d bytes", maxAgentID)
		}
		if seen[id] {
			return sshError("build: SSH agent %q is given twice", id)
		}
		seen[id] = true
	}
	return nil
}

func sshError(format string, args ...any) error {
	return errdefs.InvalidArgument(format, args...).WithReason("SSH_INVALID")
}

// errAgentsGone is a send once the Build stream can carry no more.
var errAgentsGone = errors.New("the build's client no longer forwards its SSH agents")

// agentForwarder carries the connections of a build's steps to the SSH
// agents its client forwards, over the Build stream: each request as an
// AgentData message, which the client answers on the same connection. It
// holds nothing of the exchanges once a connection ends.
type agentForwarder struct {
	ids   map[string]bool
	slots chan struct{}
	// done is closed by stop: the stream carries nothing more.
	done chan struct{}

	sendMu  sync.Mutex
	stopped bool
	sendFn  func(*builderv1.AgentData) error

	mu      sync.Mutex
	next    uint32
	answers map[uint32]chan []byte
}

// newAgentForwarder returns the forwarder of the agents ids, which sends
// its requests with send; nil when ids is empty.
func newAgentForwarder(ids []string, send func(*builderv1.AgentData) error) *agentForwarder {
	if len(ids) == 0 {
		return nil
	}
	f := &agentForwarder{ids: map[string]bool{}, slots: make(chan struct{}, agentwire.MaxConns), done: make(chan struct{}),
		sendFn: send, answers: map[uint32]chan []byte{}}
	for _, id := range ids {
		f.ids[id] = true
	}
	return f
}

// Has reports whether the client forwards the agent id.
func (f *agentForwarder) Has(id string) bool { return f.ids[id] }

// Serve carries conn's requests to the client's agent id, one at a time
// as the agent protocol has them, and its answers back, until conn, ctx
// or the stream ends.
func (f *agentForwarder) Serve(ctx context.Context, id string, conn net.Conn) {
	select {
	case f.slots <- struct{}{}:
		defer func() { <-f.slots }()
	default:
		return
	}
	answers := make(chan []byte, 1)
	f.mu.Lock()
	f.next++
	n := f.next
	f.answers[n] = answers
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.answers, n)
		f.mu.Unlock()
		_ = f.send(&builderv1.AgentData{Connection: n, Close: true})
	}()
	for {
		req, err := agentwire.ReadMessage(conn)
		if err != nil {
			return
		}
		if err := f.send(&builderv1.AgentData{Connection: n, Id: id, Data: req}); err != nil {
			return
		}
		select {
		case ans := <-answers:
			if ans == nil {
				return
			}
			if _, err := conn.Write(ans); err != nil {
				return
			}
		case <-ctx.Done():
			return
		case <-f.done:
			return
		}
	}
}

// deliver hands the client's answer m to its connection. An answer that
// is not one whole agent message within the bound, or a close, ends the
// connection; one for a connection that ended is dropped.
func (f *agentForwarder) deliver(m *builderv1.AgentData) {
	f.mu.Lock()
	answers, ok := f.answers[m.GetConnection()]
	f.mu.Unlock()
	if !ok {
		return
	}
	data := m.GetData()
	if m.GetClose() || !agentwire.IsMessage(data) {
		data = nil
	}
	select {
	case answers <- data:
	default: // an answer nobody asked for
	}
}

func (f *agentForwarder) send(m *builderv1.AgentData) error {
	f.sendMu.Lock()
	defer f.sendMu.Unlock()
	if f.stopped {
		return errAgentsGone
	}
	return f.sendFn(m)
}

// end tells the client that the build needs its agents no more: it then
// closes its side of the stream.
func (f *agentForwarder) end() {
	_ = f.send(&builderv1.AgentData{Close: true})
}

// stop ends the forwarding once the stream can no longer be read or
// written: connections waiting for an answer end, and nothing more is
// sent.
func (f *agentForwarder) stop() {
	f.sendMu.Lock()
	defer f.sendMu.Unlock()
	if !f.stopped {
		f.stopped = true
		close(f.done)
	}
}

// receive reads the stream's agent answers once the context is in, until
// the client closes its side or goes away, and stops f.
func (f *agentForwarder) receive(stream interface {
	Recv() (*builderv1.BuildRequest, error)
}) {
	defer f.stop()
	for {
		m, err := stream.Recv()
		if err != nil {
			return
		}
		if a := m.GetAgent(); a != nil {
			f.deliver(a)
		}
	}
}
