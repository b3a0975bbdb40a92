package client

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/strata-build/strata/client/buildcontext"
	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/agentwire"
)

// MaxSSHAgents is the most SSH agents one build may forward.
const MaxSSHAgents = agentwire.MaxAgents

const sshAuthSockEnvName = "SSH_AUTH_SOCK"

// SSHAgent is an SSH agent a build forwards (BuildOptions.SSH): Open
// returns the agent that answers one connection of a step, and a func
// that releases it.
type SSHAgent interface {
	Open() (agent.ExtendedAgent, func() error, error)
}

// LoadSSHAgent reads an SSH agent spec as `docker buildx build --ssh`
// does:
//
//	default                      the agent of $SSH_AUTH_SOCK, as ID default
//	ID=/path/to/agent.sock       that agent's socket
//	ID=/path/key[,/path/key2]    the keys (unencrypted private key files),
//	                             held in an agent in memory
//
// An ID without a path is the agent of $SSH_AUTH_SOCK. It returns the ID
// and the agent; a missing socket or key, a key it cannot read, or a
// socket among several paths is an error naming it.
func LoadSSHAgent(spec string) (string, SSHAgent, error) {
	id, list, _ := strings.Cut(spec, "=")
	if id == "" {
		return "", nil, fmt.Errorf("ssh %q: the ID is missing (want ID or ID=PATH[,PATH…])", spec)
	}
	var paths []string
	for p := range strings.SplitSeq(list, ",") {
		if p != "" {
			paths = append(paths, p)
		}
	}
	if len(paths) == 0 {
		sock := os.Getenv(sshAuthSockEnvName)
		if sock == "" {
			return "", nil, fmt.Errorf("ssh %s: no path given and %s is not set: start an agent (ssh-agent) or name a socket or key files", id, sshAuthSockEnvName)
		}
		paths = []string{sock}
	}
	keyring := agent.NewKeyring()
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return "", nil, fmt.Errorf("ssh %s: %w", id, err)
		}
		if fi.Mode()&os.ModeSocket != 0 {
			if len(paths) > 1 {
				return "", nil, fmt.Errorf("ssh %s: the agent socket %s cannot be given with other paths", id, p)
			}
			return id, socketAgent(p), nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return "", nil, fmt.Errorf("ssh %s: %w", id, err)
		}
		key, err := ssh.ParseRawPrivateKey(b)
		if err != nil {
			var missing *ssh.PassphraseMissingError
			if errors.As(err, &missing) {
				return "", nil, fmt.Errorf("ssh %s: the key %s is protected by a passphrase: add it to an agent (ssh-add) and forward the agent", id, p)
			}
			return "", nil, fmt.Errorf("ssh %s: reading the private key %s: %w", id, p, err)
		}
		if err := keyring.Add(agent.AddedKey{PrivateKey: key, Comment: id}); err != nil {
			return "", nil, fmt.Errorf("ssh %s: the key %s: %w", id, p, err)
		}
	}
	return id, keyringAgent{keyring.(agent.ExtendedAgent)}, nil
}

// socketAgent is an agent listening on a unix socket: each connection of
// a step gets its own connection to it.
type socketAgent string

func (s socketAgent) Open() (agent.ExtendedAgent, func() error, error) {
	c, err := net.Dial("unix", string(s))
	if err != nil {
		return nil, nil, err
	}
	return agent.NewClient(c), c.Close, nil
}

// keyringAgent is keys held in memory.
type keyringAgent struct{ agent.ExtendedAgent }

func (k keyringAgent) Open() (agent.ExtendedAgent, func() error, error) {
	return k.ExtendedAgent, func() error { return nil }, nil
}

// errReadOnly is what a step gets for any agent operation but list and
// sign.
var errReadOnly = errors.New("the forwarded SSH agent only lists keys and signs")

// readOnlyAgent lets a build's steps list the agent's keys and sign with
// them, nothing else: adding or removing keys, locking, and extensions
// are refused, as BuildKit's ssh forwarding does.
type readOnlyAgent struct{ agent.ExtendedAgent }

func (readOnlyAgent) Add(agent.AddedKey) error   { return errReadOnly }
func (readOnlyAgent) Remove(ssh.PublicKey) error { return errReadOnly }
func (readOnlyAgent) RemoveAll() error           { return errReadOnly }
func (readOnlyAgent) Lock([]byte) error          { return errReadOnly }
func (readOnlyAgent) Unlock([]byte) error        { return errReadOnly }
func (readOnlyAgent) Extension(string, []byte) ([]byte, error) {
	return nil, agent.ErrExtensionUnsupported
}

// checkAgents checks the agents against the builder's bounds.
func checkAgents(agents map[string]SSHAgent) error {
	if len(agents) > MaxSSHAgents {
		return fmt.Errorf("build: %d SSH agents, more than the builder's limit of %d", len(agents), MaxSSHAgents)
	}
	for id, a := range agents {
		if id == "" || a == nil {
			return errors.New("build: an SSH agent has no ID or is nil")
		}
	}
	return nil
}

// agentsStream answers the builder's AgentData requests on the build's
// stream from the agents, whichever way the context travels. It keeps the
// stream's client side open after the context until the builder says the
// build needs the agents no more.
type agentsStream struct {
	buildcontext.Stream
	agents map[string]SSHAgent

	sendMu sync.Mutex

	mu       sync.Mutex
	conns    map[uint32]*agentConn
	closeReq bool // the context is sent: CloseSend was called
	ended    bool // the builder needs the agents no more
	closed   bool
}

// agentConn is one connection of a step to an agent, answered here.
type agentConn struct {
	requests chan []byte
}

func newAgentsStream(s buildcontext.Stream, agents map[string]SSHAgent) *agentsStream {
	return &agentsStream{Stream: s, agents: agents, conns: map[uint32]*agentConn{}}
}

func (s *agentsStream) Send(m *builderv1.BuildRequest) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	return s.Stream.Send(m)
}

// CloseSend closes the client's side once the builder ended the
// forwarding too.
func (s *agentsStream) CloseSend() error {
	s.mu.Lock()
	s.closeReq = true
	done := s.ended && !s.closed
	s.closed = s.closed || done
	s.mu.Unlock()
	if done {
		return s.closeSend()
	}
	return nil
}

func (s *agentsStream) closeSend() error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	return s.Stream.CloseSend()
}

func (s *agentsStream) Recv() (*builderv1.BuildResponse, error) {
	for {
		m, err := s.Stream.Recv()
		if err != nil {
			return m, err
		}
		a := m.GetAgent()
		if a == nil {
			return m, nil
		}
		s.handle(a)
	}
}

// handle answers one of the builder's AgentData messages.
func (s *agentsStream) handle(a *builderv1.AgentData) {
	n := a.GetConnection()
	s.mu.Lock()
	defer s.mu.Unlock()
	if n == 0 {
		if a.GetClose() && !s.ended {
			s.ended = true
			if s.closeReq && !s.closed {
				s.closed = true
				go s.closeSend()
			}
		}
		return
	}
	c := s.conns[n]
	if a.GetClose() {
		if c != nil {
			delete(s.conns, n)
			close(c.requests)
		}
		return
	}
	if c == nil {
		ag := s.agents[a.GetId()]
		if ag == nil || len(s.conns) >= agentwire.MaxConns || s.ended {
			go s.sendClose(n)
			return
		}
		c = &agentConn{requests: make(chan []byte, 4)}
		s.conns[n] = c
		go s.serve(n, ag, c)
	}
	select {
	case c.requests <- a.GetData():
	default: // a builder that does not wait for answers: the connection ends
		delete(s.conns, n)
		close(c.requests)
	}
}

// serve answers the requests of connection n from ag, through
// agent.ServeAgent, until the builder closes the connection.
func (s *agentsStream) serve(n uint32, ag SSHAgent, c *agentConn) {
	a, release, err := ag.Open()
	if err != nil {
		s.sendClose(n)
		for range c.requests {
		}
		return
	}
	defer release()
	ours, theirs := net.Pipe()
	go func() {
		_ = agent.ServeAgent(readOnlyAgent{a}, theirs)
		theirs.Close()
	}()
	go func() {
		for {
			msg, err := agentwire.ReadMessage(ours)
			if err != nil {
				ours.Close()
				s.sendClose(n)
				return
			}
			if err := s.Send(&builderv1.BuildRequest{Request: &builderv1.BuildRequest_Agent{Agent: &builderv1.AgentData{Connection: n, Data: msg}}}); err != nil {
				ours.Close()
				return
			}
		}
	}()
	for req := range c.requests {
		// Only listing and signing reach the agent: anything else a step
		// sends is answered here, so that readOnlyAgent is not the only
		// guard, and a request type x/crypto learns later stays refused
		// (ServeAgent also logs each refusal on the CLI's stderr, which a
		// step could flood).
		if !agentwire.IsMessage(req) || len(req) == agentwire.LengthBytes ||
			req[agentwire.LengthBytes] != agentRequestIdentities && req[agentwire.LengthBytes] != agentSignRequest {
			if err := s.Send(&builderv1.BuildRequest{Request: &builderv1.BuildRequest_Agent{Agent: &builderv1.AgentData{Connection: n, Data: agentFailure}}}); err != nil {
				break
			}
			continue
		}
		if _, err := ours.Write(req); err != nil {
			break
		}
	}
	ours.Close()
	for range c.requests {
	}
}

func (s *agentsStream) sendClose(n uint32) {
	_ = s.Send(&builderv1.BuildRequest{Request: &builderv1.BuildRequest_Agent{Agent: &builderv1.AgentData{Connection: n, Close: true}}})
}

// close ends every connection still open, once the build is over.
func (s *agentsStream) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for n, c := range s.conns {
		delete(s.conns, n)
		close(c.requests)
	}
	s.ended = true
}

// The agent protocol's message types a step may send, and the answer to
// any other (draft-miller-ssh-agent, section 3).
const (
	agentRequestIdentities = 11 // SSH_AGENTC_REQUEST_IDENTITIES
	agentSignRequest       = 13 // SSH_AGENTC_SIGN_REQUEST
)

var agentFailure = []byte{0, 0, 0, 1, 5} // SSH_AGENT_FAILURE
