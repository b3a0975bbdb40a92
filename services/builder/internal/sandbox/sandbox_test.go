package sandbox

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/harness"
	"github.com/strata-build/strata/services/builder/internal/layer"
	"github.com/strata-build/strata/services/builder/internal/snapshot"
)

// busyboxLayer is the benchmark's base image as one layer: the rootfs
// ../shared/bench/make-rootfs.sh writes from Debian's busybox-static.
func busyboxLayer(t testing.TB) snapshot.Layer {
	t.Helper()
	blob := harness.BusyboxRootfs(t)
	return snapshot.Layer{
		DiffID: digest.FromBytes(blob),
		Open: func(context.Context) (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(blob)), nil
		},
	}
}

type env struct {
	runner *Runner
	snaps  *snapshot.Store
}

func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvWith(t, Options{})
}

// newEnvWith is newEnv with a runner of those options. When the test ends
// the runner is closed, and the host must hold nothing of it.
func newEnvWith(t testing.TB, opts Options) *env {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (runc, overlay mounts)")
	}
	dir := t.TempDir()
	opts.Runc = "/usr/sbin/runc"
	r, err := New(context.Background(), filepath.Join(dir, "sandbox"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.Close(context.Background())
		assertNothingLeft(t, r)
	})
	s, err := snapshot.New(filepath.Join(dir, "snapshots"), snapshot.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &env{runner: r, snaps: s}
}

// rootfs prepares a RUN step over busybox and returns it.
func (e *env) rootfs(t testing.TB) *snapshot.Active {
	t.Helper()
	a, err := e.snaps.Prepare(context.Background(), []snapshot.Layer{busyboxLayer(t)}, snapshot.WithInit())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Release() })
	return a
}

type line struct {
	stream Stream
	text   string
}

// run runs a shell command in a fresh busybox step and returns its exit
// code, its output lines and the step.
func (e *env) run(t testing.TB, p Process, script string) (int, []line, *snapshot.Active, error) {
	t.Helper()
	a := e.rootfs(t)
	var lines []line
	p.RootFS = a.RootFS()
	p.Args = []string{"/bin/sh", "-c", script}
	p.Output = func(s Stream, b []byte) { lines = append(lines, line{s, string(b)}) }
	code, err := e.runner.Run(context.Background(), p)
	return code, lines, a, err
}

func stdout(lines []line) string {
	var b strings.Builder
	for _, l := range lines {
		if l.stream == Stdout {
			b.WriteString(l.text + "\n")
		}
	}
	return b.String()
}

func TestRunOutputAndExitCode(t *testing.T) {
	e := newEnv(t)
	code, lines, _, err := e.run(t, Process{}, `echo one; echo two >&2; echo three; printf partial; exit 3`)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if code != 3 {
		t.Errorf("exit code = %d, want 3", code)
	}
	var out, errs []string
	for _, l := range lines {
		if l.stream == Stdout {
			out = append(out, l.text)
		} else {
			errs = append(errs, l.text)
		}
	}
	if strings.Join(out, "|") != "one|three|partial" || strings.Join(errs, "|") != "two" {
		t.Errorf("stdout lines %q, stderr lines %q; want [one three partial] and [two]", out, errs)
	}
}

func TestRunProcessSettings(t *testing.T) {
	e := newEnv(t)
	code, lines, _, err := e.run(t, Process{
		Env:  []string{"APP=/app", "LANG=C.UTF-8"},
		User: "nobody",
		Cwd:  "/work/dir",
	}, `id -u; id -g; pwd; hostname; echo "$APP $LANG $HOME $HOSTNAME"; echo "$PATH"; cat /etc/hostname`)
	if err != nil || code != 0 {
		t.Fatalf("Run = %d, %v; output %v", code, err, lines)
	}
	got := strings.Split(strings.TrimSpace(stdout(lines)), "\n")
	if len(got) != 7 {
		t.Fatalf("output %q, want 7 lines", got)
	}
	hostname := got[3]
	if !regexp.MustCompile(`^[0-9a-f]{12}$`).MatchString(hostname) {
		t.Errorf("hostname %q, want 12 hex digits like a Docker container ID", hostname)
	}
	want := []string{"65534", "65534", "/work/dir", hostname,
		"/app C.UTF-8 / " + hostname,
		"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", hostname}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d = %q, want %q", i, got[i], want[i])
		}
	}

	// A hostname given is the one the process sees (a build passes its
	// step's container ID's).
	code, lines, _, err = e.run(t, Process{Hostname: "0123456789ab"}, `hostname; echo "$HOSTNAME"; cat /etc/hostname`)
	if err != nil || code != 0 {
		t.Fatalf("Run = %d, %v; output %v", code, err, lines)
	}
	if got := strings.Fields(stdout(lines)); len(got) != 3 || got[0] != "0123456789ab" || got[1] != got[0] || got[2] != got[0] {
		t.Errorf("hostname, $HOSTNAME, /etc/hostname = %q, want 0123456789ab thrice", got)
	}
}

func TestRunUsers(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct{ user, want string }{
		{"", "0:0"},
		{"root", "0:0"},
		{"1234", "1234:0"},
		{"1234:5678", "1234:5678"},
		{"nobody:root", "65534:0"},
	} {
		code, lines, _, err := e.run(t, Process{User: tc.user}, `echo "$(id -u):$(id -g)"`)
		if err != nil || code != 0 {
			t.Fatalf("USER %q: Run = %d, %v", tc.user, code, err)
		}
		if got := strings.TrimSpace(stdout(lines)); got != tc.want {
			t.Errorf("USER %q runs as %s, want %s", tc.user, got, tc.want)
		}
	}
	if _, _, _, err := e.run(t, Process{User: "nosuchuser"}, `true`); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "nosuchuser") {
		t.Errorf("USER nosuchuser: Run error %v, want INVALID_ARGUMENT naming the user", err)
	}
}

func TestRunMounts(t *testing.T) {
	e := newEnv(t)
	code, lines, _, err := e.run(t, Process{}, `
		test -d /proc/1 && echo proc
		touch /sys/x 2>/dev/null || echo sys-ro
		mount | grep -q ' /dev/shm ' && echo shm
		mount | grep -q ' /dev/mqueue ' && echo mqueue
		mount | grep -q ' /dev/pts ' && echo pts
		echo $$`)
	if err != nil || code != 0 {
		t.Fatalf("Run = %d, %v; output %v", code, err, lines)
	}
	if got, want := stdout(lines), "proc\nsys-ro\nshm\nmqueue\npts\n1\n"; got != want {
		t.Errorf("output %q, want %q (the shell is PID 1 of its own namespace)", got, want)
	}
}

// CVE-2024-21626: a working directory through a leaked fd of runc must not
// put the process on the host filesystem.
func TestRunWorkdirProcSelfFd(t *testing.T) {
	e := newEnv(t)
	marker := filepath.Join(os.TempDir(), "strata-pwned-"+fmt.Sprint(time.Now().UnixNano()))
	for n := 3; n <= 10; n++ {
		cwd := fmt.Sprintf("/proc/self/fd/%d", n)
		code, lines, _, err := e.run(t, Process{Cwd: cwd}, `touch ../../../../../../../../`+marker+`; cat ../../../../etc/hostname`)
		if _, serr := os.Stat(marker); serr == nil {
			os.Remove(marker)
			t.Fatalf("WORKDIR %s: the process wrote %s on the host", cwd, marker)
		}
		if err == nil && code == 0 {
			t.Errorf("WORKDIR %s: the step succeeded (output %v), want it to fail", cwd, lines)
		}
		t.Logf("WORKDIR %s: exit %d, error %v", cwd, code, err)
	}
}

func TestRunOnlyExpectedFds(t *testing.T) {
	e := newEnv(t)
	code, lines, _, err := e.run(t, Process{}, `for fd in /proc/$$/fd/*; do printf "%s " "${fd##*/}"; readlink $fd || echo gone; done`)
	if err != nil || code != 0 {
		t.Fatalf("Run = %d, %v (%v)", code, err, lines)
	}
	got := strings.Split(strings.TrimSpace(stdout(lines)), "\n")
	// runc in the foreground hands the process pipes it copies from its own
	// stdio (stdin: /dev/null, so at EOF at once).
	allowed := map[string]*regexp.Regexp{
		"0": regexp.MustCompile(`^(/dev/null|pipe:\[\d+\])$`),
		"1": regexp.MustCompile(`^pipe:\[\d+\]$`),
		"2": regexp.MustCompile(`^pipe:\[\d+\]$`),
	}
	for _, l := range got {
		fd, target, _ := strings.Cut(l, " ")
		if target == "gone" {
			continue // the directory the shell's glob read, closed since
		}
		if re, ok := allowed[fd]; !ok || !re.MatchString(target) {
			t.Errorf("fd %s -> %q is open in the container; only stdio is expected (%q)", fd, target, got)
		}
	}
}

func TestRunLeavesHostUntouched(t *testing.T) {
	e := newEnv(t)
	hosts, _ := os.ReadFile("/etc/hosts")
	resolv, _ := os.ReadFile("/etc/resolv.conf")
	code, _, a, err := e.run(t, Process{}, `echo x >> /etc/hosts; echo x >> /etc/resolv.conf; echo x > /etc/hostname; touch /strata-host-marker; ls /`)
	if err != nil || code != 0 {
		t.Fatalf("Run = %d, %v", code, err)
	}
	if b, _ := os.ReadFile("/etc/hosts"); !bytes.Equal(b, hosts) {
		t.Error("/etc/hosts of the host changed")
	}
	if b, _ := os.ReadFile("/etc/resolv.conf"); !bytes.Equal(b, resolv) {
		t.Error("/etc/resolv.conf of the host changed")
	}
	if _, err := os.Stat("/strata-host-marker"); err == nil {
		os.Remove("/strata-host-marker")
		t.Error("the process created /strata-host-marker on the host")
	}
	if _, err := os.Stat(filepath.Join(a.UpperDir(), "strata-host-marker")); err != nil {
		t.Errorf("the marker is not in the step's upper directory: %v", err)
	}
}

// The step's layer holds what the command changed and nothing of the
// sandbox's own mounts.
func TestRunLayerHoldsOnlyTheChange(t *testing.T) {
	e := newEnv(t)
	code, _, a, err := e.run(t, Process{Cwd: "/app"}, `echo hi > /app/x; rm /bin/ls`)
	if err != nil || code != 0 {
		t.Fatalf("Run = %d, %v", code, err)
	}
	var buf bytes.Buffer
	if err := layer.Diff(context.Background(), a.UpperDir(), &buf); err != nil {
		t.Fatal(err)
	}
	var names []string
	tr := tar.NewReader(&buf)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, hdr.Name)
	}
	if want := "app/ app/x bin/ bin/.wh.ls"; strings.Join(names, " ") != want {
		t.Errorf("layer entries %q, want %q", names, want)
	}
}

func TestRunCancelKillsEverything(t *testing.T) {
	e := newEnv(t)
	a := e.rootfs(t)
	// Durations unique to this run name its processes in ps.
	base := 1000000 + time.Now().UnixNano()%1000000
	sleeps := []string{fmt.Sprint(base), fmt.Sprint(base + 1), fmt.Sprint(base + 2)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan struct{})
	var once sync.Once
	result := make(chan error, 1)
	go func() {
		_, err := e.runner.Run(ctx, Process{
			RootFS: a.RootFS(),
			Args:   []string{"/bin/sh", "-c", fmt.Sprintf(`sleep %s & sh -c "sleep %s" & echo started; exec sleep %s`, sleeps[0], sleeps[1], sleeps[2])},
			Output: func(Stream, []byte) { once.Do(func() { close(started) }) },
		})
		result <- err
	}()
	select {
	case <-started:
	case err := <-result:
		t.Fatalf("Run ended before it was canceled: %v", err)
	}
	cancel()
	select {
	case err := <-result:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run after cancel = %v, want context.Canceled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return within 30s of the cancel")
	}
	containers, err := e.runner.runc.List(context.Background())
	if err != nil || len(containers) != 0 {
		t.Errorf("runc list after cancel: %d containers, %v", len(containers), err)
	}
	out, _ := exec.Command("ps", "-eo", "args").Output()
	for _, l := range strings.Split(string(out), "\n") {
		for _, d := range sleeps {
			if strings.Contains(l, "sleep "+d) {
				t.Errorf("process left after cancel: %q", l)
			}
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(e.runner.dir, "bundles")); len(entries) != 0 {
		t.Errorf("%d bundles left after cancel", len(entries))
	}
}

func TestRunDeadline(t *testing.T) {
	e := newEnv(t)
	a := e.rootfs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err := e.runner.Run(ctx, Process{RootFS: a.RootFS(), Args: []string{"sleep", "1000"}})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Run past its deadline = %v, want context.DeadlineExceeded", err)
	}
}

func TestRunBadCommand(t *testing.T) {
	e := newEnv(t)
	a := e.rootfs(t)
	code, err := e.runner.Run(context.Background(), Process{RootFS: a.RootFS(), Args: []string{"/no/such/binary"}})
	if err == nil && code == 0 {
		t.Errorf("Run of a missing binary = %d, nil; want an error or a non-zero exit", code)
	}
	t.Logf("missing binary: code %d, err %v", code, err)
}

// BenchmarkRunTrue is the fixed cost of a RUN: runc's create, start and
// delete of a container running /bin/true.
func BenchmarkRunTrue(b *testing.B) {
	e := newEnv(b)
	a := e.rootfs(b)
	ctx := context.Background()
	for b.Loop() {
		if code, err := e.runner.Run(ctx, Process{RootFS: a.RootFS(), Args: []string{"/bin/true"}}); err != nil || code != 0 {
			b.Fatalf("Run = %d, %v", code, err)
		}
	}
}

// BenchmarkRunSmallFiles is the benchmark workload's second RUN: a shell
// loop writing 2,000 small files into the step's upper directory.
func BenchmarkRunSmallFiles(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	script := `mkdir -p /data/small && i=0; while [ $i -lt 2000 ]; do echo "line $i" > /data/small/f$i; i=$((i+1)); done`
	for b.Loop() {
		b.StopTimer()
		a, err := e.snaps.Prepare(ctx, []snapshot.Layer{busyboxLayer(b)}, snapshot.WithInit())
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if code, err := e.runner.Run(ctx, Process{RootFS: a.RootFS(), Args: []string{"/bin/sh", "-c", script}}); err != nil || code != 0 {
			b.Fatalf("Run = %d, %v", code, err)
		}
		b.StopTimer()
		a.Release()
		b.StartTimer()
	}
}

// A builder killed mid-RUN leaves a container behind, and the tmpfs of
// its secrets on its bundle; the next Runner on the same state directory
// kills and deletes the one and unmounts the other.
func TestNewCleansUpAfterACrash(t *testing.T) {
	e := newEnv(t)
	a := e.rootfs(t)
	started := make(chan struct{})
	var once sync.Once
	result := make(chan int, 1)
	go func() {
		code, _ := e.runner.Run(context.Background(), Process{
			RootFS:  a.RootFS(),
			Args:    []string{"/bin/sh", "-c", "echo up; exec sleep 1000"},
			Secrets: []Secret{{Target: "/run/secrets/s", Data: []byte("crash"), Mode: 0o400}},
			Output:  func(Stream, []byte) { once.Do(func() { close(started) }) },
		})
		result <- code
	}()
	select {
	case <-started:
	case code := <-result:
		t.Fatalf("the run ended (%d) before the simulated crash", code)
	}
	// The "restarted" builder. A crashed builder's sockets are gone with
	// it; this one's DNS forwarder still holds the gateway's port 53.
	e.runner.net.Abandon()
	// A crashed builder's runs never unmount their secrets' tmpfs.
	crashed := filepath.Join(e.runner.dir, "bundles", "crashed")
	if err := os.Mkdir(crashed, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", crashed, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	r2, err := New(context.Background(), e.runner.dir, Options{Runc: "/usr/sbin/runc"})
	if err != nil {
		t.Fatalf("New after a crash: %v", err)
	}
	select {
	case code := <-result:
		if code != 128+9 {
			t.Errorf("the orphaned process ended with %d, want 137 (SIGKILL)", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the orphaned container still runs 30s after New")
	}
	if containers, err := r2.runc.List(context.Background()); err != nil || len(containers) != 0 {
		t.Errorf("runc list after New: %d containers, %v", len(containers), err)
	}
	r2.Close(context.Background())
	assertNothingLeft(t, r2)
}

type discardBlob struct{}

func (discardBlob) Write(p []byte) (int, error)                        { return len(p), nil }
func (discardBlob) Commit(context.Context, int64, digest.Digest) error { return nil }
func (discardBlob) Close() error                                       { return nil }

// BenchmarkRunStep200MB is the benchmark workload's first RUN as the
// builder executes it, the blob store aside: prepare the step over busybox,
// run `dd` of 200 MB of random data in runc, turn the upper directory into a
// compressed layer, commit the snapshot.
func BenchmarkRunStep200MB(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	script := `mkdir -p /data && dd if=/dev/urandom of=/data/blob bs=1M count=200 2>/dev/null`
	for b.Loop() {
		a, err := e.snaps.Prepare(ctx, []snapshot.Layer{busyboxLayer(b)}, snapshot.WithInit())
		if err != nil {
			b.Fatal(err)
		}
		if code, err := e.runner.Run(ctx, Process{RootFS: a.RootFS(), Args: []string{"/bin/sh", "-c", script}}); err != nil || code != 0 {
			b.Fatalf("Run = %d, %v", code, err)
		}
		desc, err := layer.WriteDiff(ctx, discardBlob{}, layer.DirSource(a.UpperDir()))
		if err != nil {
			b.Fatal(err)
		}
		chain, err := a.Commit(ctx, desc.DiffID, desc.DiffSize)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := e.snaps.Remove(chain); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// extraLayer is a layer made of tar entries, for a step over busybox.
func extraLayer(t testing.TB, hdrs ...*tar.Header) snapshot.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hdrs {
		body := []byte(h.Linkname)
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(body))
			h.Linkname = ""
		} else {
			body = nil
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(body)
	}
	tw.Close()
	blob := buf.Bytes()
	return snapshot.Layer{DiffID: digest.FromBytes(blob), Open: func(context.Context) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(blob)), nil
	}}
}

// Images link /etc/passwd and working directories with absolute symlinks;
// they resolve inside the image, as in Docker, never on the host.
func TestRunResolvesSymlinksInTheImage(t *testing.T) {
	e := newEnv(t)
	top := extraLayer(t,
		// Linkname carries a regular file's content here.
		&tar.Header{Name: "etc/real-passwd", Typeflag: tar.TypeReg, Mode: 0o644, Linkname: "app:x:1000:1000::/home/app:/bin/sh\n"},
		&tar.Header{Name: "etc/passwd", Typeflag: tar.TypeSymlink, Linkname: "/etc/real-passwd"},
		&tar.Header{Name: "srv/", Typeflag: tar.TypeDir, Mode: 0o755},
		&tar.Header{Name: "var/", Typeflag: tar.TypeDir, Mode: 0o755},
		&tar.Header{Name: "var/www", Typeflag: tar.TypeSymlink, Linkname: "/srv/www"},
		&tar.Header{Name: "escape", Typeflag: tar.TypeSymlink, Linkname: "../../../../../../../../.."},
	)
	ctx := context.Background()
	run := func(p Process, script string) (string, *snapshot.Active) {
		t.Helper()
		a, err := e.snaps.Prepare(ctx, []snapshot.Layer{busyboxLayer(t), top}, snapshot.WithInit())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Release() })
		var out strings.Builder
		p.RootFS, p.Args = a.RootFS(), []string{"/bin/sh", "-c", script}
		p.Output = func(_ Stream, b []byte) { out.Write(b); out.WriteString("\n") }
		code, err := e.runner.Run(ctx, p)
		if err != nil || code != 0 {
			t.Fatalf("Run = %d, %v (%s)", code, err, out.String())
		}
		return out.String(), a
	}
	if got, _ := run(Process{User: "app"}, `id -u`); got != "1000\n" {
		t.Errorf("USER app through an absolute /etc/passwd symlink runs as %q, want 1000", got)
	}
	if got, a := run(Process{Cwd: "/var/www/html"}, `pwd -P`); got != "/srv/www/html\n" {
		t.Errorf("WORKDIR /var/www/html (var/www -> /srv/www) is %q, want /srv/www/html", got)
	} else if _, err := os.Stat(filepath.Join(a.UpperDir(), "srv/www/html")); err != nil {
		t.Errorf("the working directory is not in the step's layer: %v", err)
	}
	marker := fmt.Sprintf("strata-workdir-%d", time.Now().UnixNano())
	if got, a := run(Process{Cwd: "/escape/tmp/" + marker}, `pwd -P`); got != "/tmp/"+marker+"\n" {
		t.Errorf("WORKDIR through a symlink climbing out is %q, want /tmp/%s inside the image", got, marker)
	} else if _, err := os.Stat(filepath.Join(a.UpperDir(), "tmp", marker)); err != nil {
		t.Errorf("the working directory is not in the step's layer: %v", err)
	}
	if _, err := os.Stat(filepath.Join("/tmp", marker)); err == nil {
		os.Remove(filepath.Join("/tmp", marker))
		t.Errorf("the working directory was created on the host: /tmp/%s", marker)
	}
}
