// Package sandbox runs a build step's process (a Dockerfile RUN) in a
// container: runc with a generated OCI runtime spec.
//
// The process gets its own mount, PID, IPC, UTS and network namespaces, a
// hostname that is a 12-hex container ID as in Docker, the image's
// environment, user and working directory, Docker's default capabilities
// and seccomp profile, /proc, /dev (with /dev/pts, /dev/shm, /dev/mqueue), a
// read-only /sys, and /etc/resolv.conf, /etc/hosts and /etc/hostname
// generated for the run. No host path is mounted.
//
// Limits: every step runs in a cgroup of its own under the builder's, with
// memory, process and CPU limits (the runner's defaults, which a build may
// lower), and Docker's open-file limit. A step the kernel's OOM killer
// struck, or that reached its process limit, fails with an error saying so.
// A step given its upper directory is held to the runner's disk limit and
// the filesystem's free-space floor (disk.go).
//
// Network: NetworkBridge (the default) gives the process a namespace of its
// own on the runner's bridge, with outbound access and no route to the
// builder's host, its service peers or link-local addresses (network.go);
// NetworkNone a namespace with only loopback; NetworkHost, allowed only by
// the runner's network.host entitlement, the builder's own.
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
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	runc "github.com/containerd/go-runc"
	securejoin "github.com/cyphar/filepath-securejoin"
	units "github.com/docker/go-units"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/rootfs"
	"github.com/strata-build/strata/services/builder/internal/stepnet"
)

// Network selects the network a process sees.
type Network string

const (
	// NetworkBridge gives the process a namespace on the runner's bridge:
	// outbound access, nothing of the builder's host; the default.
	NetworkBridge Network = "bridge"
	// NetworkNone gives the process a namespace with only loopback.
	NetworkNone Network = "none"
	// NetworkHost shares the builder's network namespace; it needs the
	// runner's network.host entitlement (stepnet.Options.AllowHost).
	NetworkHost Network = "host"
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
	// UpperDir is the directory that receives the step's writes
	// (snapshot.Active.UpperDir); while the process runs it is held to the
	// runner's disk limits. Empty: no disk limit.
	UpperDir string
	// Discard gives the step's space back (snapshot.Active.Release: unmount
	// the root filesystem, remove the upper directory); Run calls it when
	// it killed the step for disk, before another step could be killed for
	// the space the step still held. Optional.
	Discard func() error
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
	// Hostname is the container's hostname; empty means the first 12 hex
	// digits of the run's own ID. A build passes its step's container ID's,
	// so that the image records the hostname RUN saw.
	Hostname string
	// Network is NetworkBridge when empty.
	Network Network
	// Limits are the build's limits; the runner's defaults where zero.
	Limits Limits
	// Mounts are the step's own mounts (RUN --mount), added after the
	// container's default ones, in order. Their destinations must exist
	// in RootFS or be creatable there; the caller keeps the mount points
	// out of the step's layer.
	Mounts []specs.Mount
	// Secrets are given to the process as files (in a tmpfs, bind-mounted
	// read-only) and variables, for this run only. As for Mounts, the
	// caller keeps the files' mount points out of the step's layer.
	Secrets []Secret
	// Agents are SSH agents given to the process as unix sockets, for
	// this run only.
	Agents []Agent
	// Output receives each line the process writes, without its newline,
	// with the stream it came on; a last line without a newline counts too.
	// Calls never overlap. The line is only valid during the call.
	Output func(stream Stream, line []byte)
}

// Options configure a Runner.
type Options struct {
	// Runc is the runc binary; "runc" on PATH when empty.
	Runc string
	// ResolvConf is the builder's resolv.conf: the processes' own with
	// NetworkNone and NetworkHost, and the name servers the forwarder of
	// NetworkBridge asks. The host's /etc/resolv.conf when nil.
	ResolvConf []byte
	// Memory, Pids and CPUs are every step's limits and the most a build
	// may ask for (the builder's --step-memory, --step-pids and
	// --step-cpus): DefaultMemory(), DefaultPids and every CPU of the
	// machine when 0.
	Memory int64
	Pids   int64
	CPUs   float64
	// StepDisk is the most bytes a step may write to its upper directory,
	// and the most a build may ask for (the builder's --step-disk):
	// DefaultStepDisk when 0. MinFreeDisk is the free space below which the
	// running step that wrote the most is killed and new steps wait
	// (--min-free-disk): DefaultMinFreeDisk of the filesystem when 0.
	StepDisk    int64
	MinFreeDisk int64
	// Network configures NetworkBridge and the network.host entitlement.
	Network stepnet.Options
}

// Runner runs processes with runc. It is safe for concurrent use.
type Runner struct {
	dir        string
	runc       runc.Runc
	resolvConf []byte
	max        maxima
	cgroups    *stepCgroups
	disks      *disks
	net        *stepnet.Bridge
	allowHost  bool
}

// maxLine bounds one output line; longer lines are delivered in pieces.
const maxLine = 64 << 10

// New returns a Runner keeping its state (runc's state, the runs' bundles,
// the network namespaces) under dir. It first kills and removes the
// containers and the network a previous process left there, so it must run
// before anything unmounts what those containers may still use. Close
// releases what it set up.
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
		max:        maxima{memory: opts.Memory, pids: opts.Pids, cpus: opts.CPUs},
		allowHost:  opts.Network.AllowHost,
		disks:      &disks{minFree: opts.MinFreeDisk, wait: admitWait},
	}
	if r.max.disk = opts.StepDisk; r.max.disk == 0 {
		r.max.disk = DefaultStepDisk
	}
	if r.max.disk < 0 || r.disks.minFree < 0 {
		return nil, errdefs.InvalidArgument("step disk limit %d and free-space floor %d: want 0 (the default) or more", opts.StepDisk, opts.MinFreeDisk)
	}
	if r.max.memory == 0 {
		r.max.memory = DefaultMemory()
	}
	if r.max.pids == 0 {
		r.max.pids = DefaultPids
	}
	if r.max.cpus == 0 {
		r.max.cpus = float64(runtime.NumCPU())
	}
	if r.max.memory < minMemory || r.max.pids < 1 || r.max.cpus < 0.01 {
		return nil, errdefs.InvalidArgument("step limits %s memory, %d processes, %g CPUs: want at least 6 MiB, 1 and 0.01",
			units.BytesSize(float64(r.max.memory)), r.max.pids, r.max.cpus)
	}
	if r.cgroups, err = newStepCgroups(); err != nil {
		return nil, err
	}
	if err := r.cleanup(ctx); err != nil {
		return nil, err
	}
	if r.net, err = stepnet.New(ctx, dir, opts.Network, stepnet.Resolvers(resolv)); err != nil {
		return nil, err
	}
	return r, nil
}

// Close removes the runner's network: its namespaces, their veths and
// addresses, its firewall rules and bridge, and stops its DNS forwarder.
// Every Run must have returned.
func (r *Runner) Close(ctx context.Context) {
	r.net.Close(ctx)
}

// Admit refuses, before a build runs anything, a network it may not have
// and limits above the runner's.
func (r *Runner) Admit(network Network, l Limits) error {
	if err := r.admitNetwork(network); err != nil {
		return err
	}
	_, err := r.max.resolve(l)
	return err
}

func (r *Runner) admitNetwork(n Network) error {
	switch n {
	case "", NetworkBridge, NetworkNone:
		return nil
	case NetworkHost:
		if !r.allowHost {
			return errdefs.FailedPrecondition("--network host is not allowed: the builder needs the network.host entitlement (start it with --allow-insecure-entitlement network.host)").WithReason("ENTITLEMENT_REQUIRED")
		}
		return nil
	}
	return errdefs.InvalidArgument("network %q: want %q, %q or %q", n, NetworkBridge, NetworkNone, NetworkHost)
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
	// A run with secrets has a tmpfs on its bundle: unmounted first, or
	// the bundle could not be removed (its values go with it).
	if entries, err := os.ReadDir(bundles); err == nil {
		for _, e := range entries {
			_ = unix.Unmount(filepath.Join(bundles, e.Name()), unix.MNT_DETACH)
		}
	}
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
func (r *Runner) Run(ctx context.Context, p Process) (code int, err error) {
	if len(p.Args) == 0 {
		return -1, errdefs.InvalidArgument("no command to run")
	}
	if p.Network == "" {
		p.Network = NetworkBridge
	}
	if err := r.admitNetwork(p.Network); err != nil {
		return -1, err
	}
	limits, err := r.max.resolve(p.Limits)
	if err != nil {
		return -1, err
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
	if p.Hostname != "" {
		hostname = p.Hostname
	}
	bundle := filepath.Join(r.dir, "bundles", id)
	if err := os.Mkdir(bundle, 0o700); err != nil {
		return -1, err
	}
	defer os.RemoveAll(bundle)
	var secretMounts []specs.Mount
	if len(p.Secrets) > 0 || len(p.Agents) > 0 {
		// Unmounted before the bundle is removed (defers run last first),
		// once runc deleted the container: the values go with the tmpfs.
		defer unix.Unmount(bundle, unix.MNT_DETACH)
		if secretMounts, err = secretsTmpfs(bundle, p.Secrets); err != nil {
			return -1, err
		}
		p.Env = withSecretEnv(p.Env, p.Secrets)
		if len(p.Agents) > 0 {
			agents, mounts, aerr := listenAgents(bundle, p.Agents)
			if aerr != nil {
				return -1, aerr
			}
			// Once the process ended: a step's agent connections end with it.
			defer agents.close()
			secretMounts = append(secretMounts, mounts...)
		}
	}
	s := stepSpec{id: id, hostname: hostname, bundle: bundle, cgroupsPath: r.cgroups.specPath(id),
		resources: limits.resources(r.cgroups.swapAccounted()), rlimits: rlimits(limits.Ulimits)}
	resolv := r.resolvConf
	if p.Network == NetworkBridge {
		if s.netns, err = r.net.Get(ctx); err != nil {
			return -1, err
		}
		// Back to the pool once runc deleted the container (this defer
		// runs after run returns): no process of the step is left in it.
		defer r.net.Put(s.netns)
		resolv = r.net.ResolvConf(r.resolvConf)
	}
	spec := runtimeSpec(p, u, s)
	spec.Mounts = append(spec.Mounts, secretMounts...)
	b, err := json.Marshal(spec)
	if err != nil {
		return -1, err
	}
	for name, content := range map[string][]byte{
		"config.json": b,
		"resolv.conf": resolv,
		"hosts":       hostsFile(hostname),
		"hostname":    []byte(hostname + "\n"),
	} {
		if err := os.WriteFile(filepath.Join(bundle, name), content, 0o644); err != nil {
			return -1, err
		}
	}
	var disk *diskWatch
	if p.UpperDir != "" {
		if err := r.disks.admit(ctx.Done(), p.UpperDir); err != nil {
			return -1, err
		}
		if err := ctx.Err(); err != nil {
			return -1, err
		}
		s := r.disks.add(id, p.RootFS, p.UpperDir)
		defer r.disks.remove(s)
		disk = &diskWatch{d: r.disks, s: s, limit: limits.Disk, discard: p.Discard,
			procs: func() []int { return r.cgroups.procs(id) }}
	}
	return r.run(ctx, id, bundle, limits, disk, p.Output)
}

// pidsPoll is how often a running step's cgroup is checked for a refused
// fork.
const pidsPoll = 100 * time.Millisecond

func (r *Runner) run(ctx context.Context, id, bundle string, limits Limits, disk *diskWatch, output func(Stream, []byte)) (int, error) {
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
	running := make(chan struct{})
	done := make(chan struct{})
	killed := make(chan struct{})
	var pidsHit, diskHit atomic.Bool
	go func() {
		// Once runc has the pipes, only the container holds their write
		// ends: the readers see EOF when its last process is gone.
		select {
		case <-started:
			close(running)
		case <-done:
		}
		outW.Close()
		errW.Close()
	}()
	go func() {
		defer close(killed)
		// A step that reached its process limit is killed at once: a fork
		// bomb would otherwise churn at the limit for as long as it likes.
		tick := time.NewTicker(pidsPoll)
		defer tick.Stop()
	watch:
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				break watch
			case <-tick.C:
				select {
				case <-running:
					if _, forks := r.cgroups.events(id); forks > 0 {
						pidsHit.Store(true)
						break watch
					}
					// A step past its disk limit, or the largest when
					// the filesystem is low, is killed before it fills
					// the disk other builds write to.
					if disk != nil && disk.check(time.Now()) {
						diskHit.Store(true)
						break watch
					}
				default:
				}
			}
		}
		// Kill every process of the container; retry until runc has
		// created it or the run is over.
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
	// Cancellation goes through runc kill above. --keep leaves the stopped
	// container, and its cgroup, for the events read below.
	status, runErr := rc.Run(context.Background(), id, bundle, &runc.CreateOpts{
		IO:        pipeIO{out: outW, err: errW},
		Started:   started,
		ExtraArgs: []string{"--keep"},
	})
	close(done)
	<-killed
	if disk != nil && !diskHit.Load() {
		// A writer faster than the polls may have finished in between:
		// its changes are measured once more, so that no step past its
		// limit, or filling the disk, ends with a layer.
		disk.nextWalk = time.Time{}
		if disk.check(time.Now()) {
			diskHit.Store(true)
		}
	}
	readers.Wait()
	ooms, forks := r.cgroups.events(id)
	rc.Delete(context.Background(), id, &runc.DeleteOpts{Force: true})
	if diskHit.Load() {
		// Nothing runs in the step any more: its space is given back
		// before it stops counting as the step the floor picked.
		if disk.discard != nil {
			if err := disk.discard(); err != nil {
				return -1, errors.Join(disk.hit, fmt.Errorf("discarding the step's changes: %w", err))
			}
		}
		return -1, disk.hit
	}

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
	switch {
	case pidsHit.Load() || forks > 0 && status != 0:
		return status, pidsExceeded(limits)
	case ooms > 0 && status != 0:
		// A step that survived an OOM kill (`cmd || true`) succeeded, as
		// in Docker.
		return status, memoryExceeded(limits)
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
