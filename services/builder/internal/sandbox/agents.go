package sandbox

import (
	"context"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Agent is an SSH agent given to one process (RUN --mount=type=ssh): a
// unix socket in the run's tmpfs, bind-mounted at Target, whose
// connections Serve carries to the agent. The socket is never in the root
// filesystem; as for Mounts, the caller keeps its mount point out of the
// step's layer.
type Agent struct {
	// Target is the socket's absolute path in the container.
	Target string
	// Mode is the socket's permission bits; UID and GID its owner.
	Mode     fs.FileMode
	UID, GID uint32
	// Serve carries one connection to the agent and returns once conn or
	// ctx is done. The runner closes conn and cancels ctx when the process
	// ended, and waits for Serve to return.
	Serve func(ctx context.Context, conn net.Conn)
}

// agentSockets are the sockets of one run's agents and their open
// connections.
type agentSockets struct {
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	mu        sync.Mutex
	closed    bool
	listeners []net.Listener
	conns     map[net.Conn]struct{}
}

// listenAgents listens on a socket in bundle (the run's tmpfs) for each
// agent and serves its connections until close. It returns the bind
// mounts that put the sockets at their targets.
func listenAgents(bundle string, agents []Agent) (*agentSockets, []specs.Mount, error) {
	// A socket's path has at most 107 bytes, which the bundle's may
	// exceed: the socket is bound through a descriptor of the bundle.
	dir, err := os.Open(bundle)
	if err != nil {
		return nil, nil, err
	}
	defer dir.Close()
	ctx, cancel := context.WithCancel(context.Background())
	a := &agentSockets{cancel: cancel, conns: map[net.Conn]struct{}{}}
	var mounts []specs.Mount
	for i, ag := range agents {
		base := "ssh-" + strconv.Itoa(i)
		name := filepath.Join(bundle, base)
		l, err := net.Listen("unix", "/proc/self/fd/"+strconv.Itoa(int(dir.Fd()))+"/"+base)
		if err == nil {
			if err = os.Chown(name, int(ag.UID), int(ag.GID)); err == nil {
				err = os.Chmod(name, ag.Mode.Perm()|ag.Mode&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky))
			}
			if err != nil {
				l.Close()
			}
		}
		if err != nil {
			a.close()
			return nil, nil, fmt.Errorf("making the socket of ssh target %s: %w", ag.Target, err)
		}
		a.listeners = append(a.listeners, l)
		a.wg.Add(1)
		go a.accept(ctx, l, ag.Serve)
		mounts = append(mounts, specs.Mount{Destination: ag.Target, Type: "bind", Source: name,
			Options: []string{"rbind", "rprivate", "nosuid", "nodev", "noexec"}})
	}
	return a, mounts, nil
}

func (a *agentSockets) accept(ctx context.Context, l net.Listener, serve func(context.Context, net.Conn)) {
	defer a.wg.Done()
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		a.mu.Lock()
		if a.closed {
			a.mu.Unlock()
			c.Close()
			return
		}
		a.conns[c] = struct{}{}
		a.wg.Add(1)
		a.mu.Unlock()
		go func() {
			defer a.wg.Done()
			serve(ctx, c)
			c.Close()
			a.mu.Lock()
			delete(a.conns, c)
			a.mu.Unlock()
		}()
	}
}

// close closes the sockets and their connections and waits until nothing
// serves them.
func (a *agentSockets) close() {
	a.mu.Lock()
	a.closed = true
	for _, l := range a.listeners {
		l.Close()
	}
	for c := range a.conns {
		c.Close()
	}
	a.mu.Unlock()
	a.cancel()
	a.wg.Wait()
}
