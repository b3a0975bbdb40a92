// Package harness starts the real components that Strata's integration tests
// run against — an S3 server (versitygw), PostgreSQL, Strata's own binaries —
// on loopback, waits for them by polling, and stops them when the test ends.
// Tests fail, rather than skip, when a component is missing: `make deps`
// (or .ci/run) installs them all.
package harness

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// handedOut holds the ports FreePort returned: the kernel may give the
// same ephemeral port to two listens in a row once the first is closed,
// and two services of one stack then fought for it.
var handedOut struct {
	sync.Mutex
	ports map[int]bool
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago and
// that it has not returned before in this process.
func FreePort(t testing.TB) int {
	t.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("finding a free port: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !handedOut.ports[port] {
			if handedOut.ports == nil {
				handedOut.ports = map[int]bool{}
			}
			handedOut.ports[port] = true
			return port
		}
	}
}

// RepoRoot returns the root of the Strata checkout the test runs in.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.work above the test's directory: run tests inside the Strata checkout")
		}
		dir = parent
	}
}

// Tool returns the path of an external program the tests need, looking in
// the checkout's .tools/bin (where `make tools` installs pinned versions),
// then in $PATH.
func Tool(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(RepoRoot(t), ".tools", "bin", name)
	if _, err := os.Stat(p); err == nil {
		return p
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	t.Fatalf("%s is not installed: run `make deps` (or .ci/run) to install what the tests need", name)
	return ""
}

// Process is a program the harness started.
type Process struct {
	Cmd *exec.Cmd
	Log string // the file its stdout and stderr go to

	done chan struct{} // closed once Wait returned
}

// Start starts a program with its output in a log file under a test
// directory, and stops it when the test ends: SIGTERM, as a service
// manager stops a service (the builder then removes its RUN network and
// mounts), and SIGKILL if it has not exited within a minute.
func Start(t testing.TB, env []string, name string, args ...string) *Process {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), filepath.Base(name)+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	done := make(chan struct{})
	p := &Process{Cmd: cmd, Log: logPath, done: done}
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(time.Minute):
			_ = cmd.Process.Kill()
			<-done
		}
		logFile.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("output of %s:\n%s", filepath.Base(name), tail(b, 4000))
			}
		}
	})
	return p
}

// Terminate sends the process SIGTERM and waits for it to exit.
func (p *Process) Terminate() {
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	<-p.done
}

// Stop kills the process and waits for it to exit.
func (p *Process) Stop() {
	_ = p.Cmd.Process.Kill()
	<-p.done
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// WaitFor polls ready every 20 ms until it returns nil or the timeout
// passes, then fails the test with the last error.
func WaitFor(t testing.TB, what string, timeout time.Duration, ready func(context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err = ready(ctx)
		cancel()
		if err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s not ready after %v: %v", what, timeout, err)
}

// WaitForTCP waits until addr accepts TCP connections.
func WaitForTCP(t testing.TB, what, addr string, timeout time.Duration) {
	t.Helper()
	WaitFor(t, what, timeout, func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

func addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }
