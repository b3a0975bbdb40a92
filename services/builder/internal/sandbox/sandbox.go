// Package sandbox runs a build step's process (a Dockerfile RUN) in a
// container: runc with a generated OCI runtime spec.
//
// The process gets its own mount, PID, IPC and UTS namespaces, a hostname
// that is a 12-hex container ID as in Docker, the image's environment, user
// and working directory, Docker's default capabilities and seccomp profile,
// /proc, /dev (with /dev/pts, /dev/shm, /dev/mqueue), a read-only /sys, and
// /etc/resolv.conf, /etc/hosts and /etc/hostname generated for the run. No
// host path is mounted.
//
// Network: like Docker, RUN has network access by default. NetworkHost (the
// default) shares the builder's network namespace; NetworkNone gives the
// process a namespace of its own with only loopback.
package sandbox

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	runc "github.com/containerd/go-runc"
	securejoin "github.com/cyphar/filepath-securejoin"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/rootfs"
)

// Network selects the network a process sees.
type Network string

const (
	// NetworkHost shares the builder's network namespace; the default.
	NetworkHost Network = "host"
	// NetworkNone gives the process a namespace with only loopback.
	NetworkNone Network = "none"
)

// Stream names an output stream of the process.
type Stream int

// The output streams.
const (
	Stdout Stream = 1
	Stderr Stream = 2
)

func (s Stream) String() string {
	if s == Stderr {
		return "stderr"
	}
	return "stdout"
}

// Process is what Run runs.
type Process struct {
	// RootFS is the mounted root filesystem (snapshot.Active.RootFS).
	RootFS string
	// Args is the command line; a shell-form RUN is the caller's
	// ["/bin/sh", "-c", cmd].
	Args []string
	// Env holds "KEY=value" entries: the image's environment and the
	// step's build arguments.
	Env []string
	// User is the Dockerfile USER value: "name", "uid", "name:group",
	// "uid:gid"; empty means root. Names are looked up in the image's
	// /etc/passwd and /etc/group.
	User string
	// Cwd is the working directory (WORKDIR); empty means "/". It is
	// created, owned by root, when it does not exist.
	Cwd string
	// Network is NetworkHost when empty.
	Network Network
	// Output receives each line the process writes, without its newline,
	// with the stream it came on; a last line without a newline counts too.
	// Calls never overlap. The line is only valid during the call.
	Output func(stream Stream, line []byte)
}

// Options configure a Runner.
type Options struct {
	// Runc is the runc binary; "runc" on PATH when empty.
	Runc string
	// ResolvConf is the content of the processes' /etc/resolv.conf;
	// the host's /etc/resolv.conf when nil.
	ResolvConf []byte
}

// Runner runs processes with runc. It is safe for concurrent use.
type Runner struct {
	dir        string
	runc       runc.Runc
	resolvConf []byte
}

// maxLine bounds one output line; longer lines are delivered in pieces.
const maxLine = 64 << 10

// New returns a Runner keeping its state (runc's state, the runs' bundles)
// under dir. It kills and removes the containers a previous process left
// there.
func New(ctx context.Context, dir string, opts Options) (*Runner, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{dir, filepath.Join(dir, "runc"), filepath.Join(dir, "bundles")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("creating sandbox state: %w", err)
		}
	}
	bin := opts.Runc
	if bin == "" {
		bin = "runc"
	}
	if _, err := exec.LookPath(bin); err != nil {
		return nil, errdefs.FailedPrecondition("runc not found (%s): install Debian's runc package", bin)
	}
	resolv := opts.ResolvConf
	if resolv == nil {
		resolv, err = os.ReadFile("/etc/resolv.conf")
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	r := &Runner{
		dir:        dir,
		runc:       runc.Runc{Command: bin, Root: filepath.Join(dir, "runc"), PdeathSignal: syscall.SIGKILL},
		resolvConf: resolv,
	}
	if err := r.cleanup(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// cleanup kills and deletes every container in the runner's runc root and
// removes the bundles: after a crash, nothing of a previous run survives.
func (r *Runner) cleanup(ctx context.Context) error {
	containers, err := r.runc.List(ctx)
	if err != nil {
		return fmt.Errorf("listing leftover containers: %w", err)
	}
	for _, c := range containers {
		r.runc.Kill(ctx, c.ID, int(syscall.SIGKILL), &runc.KillOpts{All: true})
		if err := r.runc.Delete(ctx, c.ID, &runc.DeleteOpts{Force: true}); err != nil {
			return fmt.Errorf("deleting leftover container %s: %w", c.ID, err)
		}
	}
	bundles := filepath.Join(r.dir, "bundles")
	if err := os.RemoveAll(bundles); err != nil {
		return err
	}
	return os.Mkdir(bundles, 0o700)
}

// Run runs the process to its end and returns its exit code (128+n when
// signal n killed it). A process that ran and exited non-zero is not an
// error: the caller decides. An error means it could not run (bad user,
// runc refusing the spec, a working directory outside the root, ...) or
// that ctx ended, in which case every process of the container has been
// killed and its state removed before Run returns.
func (r *Runner) Run(ctx context.Context, p Process) (int, error) {
	if len(p.Args) == 0 {
		return -1, errdefs.InvalidArgument("no command to run")
	}
	if p.Network == "" {
		p.Network = NetworkHost
	}
	if p.Network != NetworkHost && p.Network != NetworkNone {
		return -1, errdefs.InvalidArgument("network %q: want %q or %q", p.Network, NetworkHost, NetworkNone)
	}
	if p.Cwd == "" {
		p.Cwd = "/"
	}
	p.Cwd = path.Clean("/" + p.Cwd)

	if fi, err := os.Stat(p.RootFS); err != nil || !fi.IsDir() {
		return -1, errdefs.InvalidArgument("root filesystem %s is not a directory", p.RootFS)
	}
	u, err := rootfs.LookupUser(p.RootFS, p.User)
	if err == nil {
		err = makeCwd(p.RootFS, p.Cwd)
	}
	if err != nil {
		return -1, err
	}

	id, err := newID()
	if err != nil {
		return -1, err
	}
	hostname := id[:12]
	bundle := filepath.Join(r.dir, "bundles", id)
	if err := os.Mkdir(bundle, 0o700); err != nil {
		return -1, err
	}
	defer os.RemoveAll(bundle)
	spec := runtimeSpec(p, u, id, hostname, bundle)
	b, err := json.Marshal(spec)
	if err != nil {
		return -1, err
	}
	for name, content := range map[string][]byte{
		"config.json": b,
		"resolv.conf": r.resolvConf,
		"hosts":       hostsFile(hostname),
		"hostname":    []byte(hostname + "\n"),
	} {
		if err := os.WriteFile(filepath.Join(bundle, name), content, 0o644); err != nil {
			return -1, err
		}
	}
	return r.run(ctx, id, bundle, p.Output)
}

func (r *Runner) run(ctx context.Context, id, bundle string, output func(Stream, []byte)) (int, error) {
	outR, outW, err := os.Pipe()
	if err != nil {
		return -1, err
	}
	defer outR.Close()
	errR, errW, err := os.Pipe()
	if err != nil {
		outW.Close()
		return -1, err
	}
	defer errR.Close()

	var (
		mu      sync.Mutex
		readers sync.WaitGroup
	)
	deliver := func(s Stream, line []byte) {
		if output == nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		output(s, line)
	}
	readers.Add(2)
	go func() { defer readers.Done(); readLines(outR, Stdout, deliver) }()
	go func() { defer readers.Done(); readLines(errR, Stderr, deliver) }()

	rc := r.runc
	rc.Log = filepath.Join(bundle, "runc.log")
	rc.LogFormat = runc.JSON
	started := make(chan int, 1)
	done := make(chan struct{})
	killed := make(chan struct{})
	go func() {
		// Once runc has the pipes, only the container holds their write
		// ends: the readers see EOF when its last process is gone.
		select {
		case <-started:
		case <-done:
		}
		outW.Close()
		errW.Close()
	}()
	go func() {
		defer close(killed)
		select {
		case <-done:
			return
		case <-ctx.Done():
		}
		// Kill every process of the container; retry until runc has
		// created it or the run is over.
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if err := rc.Kill(context.Background(), id, int(syscall.SIGKILL), &runc.KillOpts{All: true}); err == nil {
				return
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()

	// The run is not tied to ctx: killing runc would orphan the container.
	// Cancellation goes through runc kill above.
	status, runErr := rc.Run(context.Background(), id, bundle, &runc.CreateOpts{
		IO:      pipeIO{out: outW, err: errW},
		Started: started,
	})
	close(done)
	<-killed
	readers.Wait()
	// runc run deletes the container when it ends; this covers a runc
	// that died first.
	rc.Delete(context.Background(), id, &runc.DeleteOpts{Force: true})

	if err := ctx.Err(); err != nil {
		return -1, err
	}
	var exitErr *runc.ExitError
	if runErr != nil && !errors.As(runErr, &exitErr) {
		return -1, fmt.Errorf("running runc: %w", runErr)
	}
	if msg := runcError(rc.Log); msg != "" {
		return -1, errdefs.FailedPrecondition("the container could not start: %s", msg)
	}
	return status, nil
}

// runcError returns the error runc logged, if any: the process did not run.
func runcError(logPath string) string {
	f, err := os.Open(logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	var msg string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var entry struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if json.Unmarshal(sc.Bytes(), &entry) == nil && (entry.Level == "error" || entry.Level == "fatal") {
			msg = entry.Msg
		}
	}
	return msg
}

// readLines delivers r's lines until EOF.
func readLines(r io.Reader, s Stream, deliver func(Stream, []byte)) {
	br := bufio.NewReaderSize(r, maxLine)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			deliver(s, trimNewline(line))
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

func trimNewline(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
		if n := len(b); n > 0 && b[n-1] == '\r' {
			b = b[:n-1]
		}
	}
	return b
}

// makeCwd creates the working directory when it is missing, resolving it as
// if rootfs were "/" (symlinks, absolute ones too, stay inside: WORKDIR
// /var/www/html with /var/www -> /srv/www creates /srv/www/html of the
// image, as in Docker). Paths under the kernel filesystems the sandbox mounts are left to
// runc, which resolves them in the container and refuses one that leads
// outside it (CVE-2024-21626, WORKDIR /proc/self/fd/N).
func makeCwd(rootfs, cwd string) error {
	rel := strings.TrimPrefix(cwd, "/")
	if rel == "" {
		return nil
	}
	for _, mnt := range []string{"proc", "sys", "dev"} {
		if rel == mnt || strings.HasPrefix(rel, mnt+"/") {
			return nil
		}
	}
	// SecureJoin resolves every existing component inside rootfs (what is
	// left names directories to create, through a dangling symlink too, as
	// Docker does); nothing runs in the root filesystem while this happens.
	dir, err := securejoin.SecureJoin(rootfs, cwd)
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		return errdefs.InvalidArgument("working directory %s: %v", cwd, err)
	}
	return nil
}

func newID() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// pipeIO hands runc the write ends of the output pipes; stdin is /dev/null.
type pipeIO struct{ out, err *os.File }

func (p pipeIO) Close() error          { return nil }
func (p pipeIO) Stdin() io.WriteCloser { return nil }
func (p pipeIO) Stdout() io.ReadCloser { return nil }
func (p pipeIO) Stderr() io.ReadCloser { return nil }
func (p pipeIO) Set(cmd *exec.Cmd) {
	cmd.Stdout = p.out
	cmd.Stderr = p.err
}
