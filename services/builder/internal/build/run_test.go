package build

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/errdefs"
	planexec "github.com/strata-build/strata/services/builder/internal/exec"
	"github.com/strata-build/strata/services/builder/internal/sandbox"
)

// busybox returns the files of a busybox-static root filesystem, as
// shared/bench/make-rootfs.sh writes it.
func busybox(t *testing.T) []tarFile {
	t.Helper()
	bin, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal("busybox not found: apt-get install busybox-static (make deps)")
	}
	body, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "--list").Output()
	if err != nil {
		t.Fatal(err)
	}
	files := []tarFile{
		{name: "bin/", dir: true, mode: 0o755},
		{name: "bin/busybox", body: string(body), mode: 0o755},
		{name: "etc/", dir: true, mode: 0o755},
		{name: "etc/passwd", body: "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n", mode: 0o644},
		{name: "etc/group", body: "root:x:0:\nnogroup:x:65534:\n", mode: 0o644},
		{name: "tmp/", dir: true, mode: 0o1777},
		{name: "root/", dir: true, mode: 0o700},
		{name: "proc/", dir: true, mode: 0o755},
		{name: "sys/", dir: true, mode: 0o755},
		{name: "dev/", dir: true, mode: 0o755},
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet != "busybox" {
			files = append(files, tarFile{name: "bin/" + applet, link: "busybox"})
		}
	}
	return files
}

// newRuncEnv is newEnv with the real runc sandbox.
func newRuncEnv(t *testing.T) *env {
	e := newEnv(t)
	r, err := sandbox.New(context.Background(), filepath.Join(t.TempDir(), "sandbox"), sandbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(context.Background()) })
	e.b.Sandbox = planexec.RuncSandbox(r)
	e.importBase("busybox:latest", busybox(t))
	return e
}

func TestRunMakesDockerLayers(t *testing.T) {
	e := newRuncEnv(t)
	df := `FROM busybox
ARG V=1
RUN set -x && echo "nginx:x:101:101:nginx:/nonexistent:/bin/false" >> /etc/passwd && mkdir -p /var/log/nginx && echo $V > /var/log/nginx/install.log
RUN ln -sf /dev/stdout /var/log/nginx/access.log && rm /bin/vi
RUN echo nothing changes
WORKDIR /work
RUN pwd > here && id -u > uid
USER nobody
RUN id -u > /tmp/uid
`
	res, rec := e.mustBuild(df, nil)
	img := e.image(res.ImageID)
	files := e.files(img)
	for path, want := range map[string]string{
		"var/log/nginx/install.log": "-rw-r--r-- 0:0 1\n",
		"var/log/nginx/access.log":  "-rwxrwxrwx 0:0 -> /dev/stdout",
		"work/here":                 "-rw-r--r-- 0:0 /work\n",
		"work/uid":                  "-rw-r--r-- 0:0 0\n",
		"tmp/uid":                   "-rw-r--r-- 65534:65534 65534\n",
	} {
		if got := files[path]; got != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}
	if _, ok := files["bin/vi"]; ok {
		t.Error("bin/vi survived rm: the whiteout is missing")
	}
	for _, p := range []string{"etc/hosts", "etc/resolv.conf", "etc/hostname", ".dockerenv"} {
		if _, ok := files[p]; ok {
			t.Errorf("%s is in the image: a mount point leaked into a RUN layer", p)
		}
	}
	h := history(img)
	want := []string{
		"/bin/sh -c #(nop)  ARG V=1 (empty)",
		`|1 V=1 /bin/sh -c set -x && echo "nginx:x:101:101:nginx:/nonexistent:/bin/false" >> /etc/passwd && mkdir -p /var/log/nginx && echo $V > /var/log/nginx/install.log`,
		"|1 V=1 /bin/sh -c ln -sf /dev/stdout /var/log/nginx/access.log && rm /bin/vi",
		"|1 V=1 /bin/sh -c echo nothing changes (empty)",
		"/bin/sh -c #(nop) WORKDIR /work",
	}
	for i, w := range want {
		if h[i+1] != w {
			t.Errorf("history[%d] = %q, want %q", i+1, h[i+1], w)
		}
	}
	var stderr, stdout []string
	for _, ev := range rec.events {
		if o := ev.GetOutput(); o != nil {
			if o.GetStream() == 2 {
				stderr = append(stderr, string(o.GetData()))
			} else {
				stdout = append(stdout, string(o.GetData()))
			}
		}
	}
	if len(stderr) == 0 || !strings.HasPrefix(stderr[0], "+ echo nginx:x:101") {
		t.Errorf("stderr lines = %q, want set -x's trace", stderr)
	}
	if len(stdout) == 0 || stdout[0] != "nothing changes\n" {
		t.Errorf("stdout lines = %q", stdout)
	}
}

func TestRunFailureNamesExitCodeAndRecordsNothing(t *testing.T) {
	e := newRuncEnv(t)
	before := len(e.index.images)
	// What the command printed, not found in the command's own text.
	_, _, err := e.build("FROM busybox\nRUN echo first\nRUN echo $((6*7)) >&2; exit 7\n", nil)
	if err == nil || !strings.Contains(err.Error(), "Dockerfile:3: The command '/bin/sh -c echo $((6*7)) >&2; exit 7' returned a non-zero code: 7") ||
		!strings.Contains(err.Error(), "last output:\n42") {
		t.Fatalf("err = %v; want the exit code and the last output, 42", err)
	}
	if len(e.index.images) != before {
		t.Error("a failed build recorded images")
	}
}

func TestWorkdirInProcSelfFdDoesNotEscape(t *testing.T) {
	e := newRuncEnv(t)
	sentinel := filepath.Join(os.TempDir(), "strata-pwned-"+strings.ReplaceAll(t.Name(), "/", "_"))
	os.Remove(sentinel)
	for n := 3; n <= 8; n++ {
		df := "FROM busybox\nWORKDIR /proc/self/fd/" + itoa(n) + "\nRUN touch ../../../../.." + sentinel + "\n"
		before := len(e.index.images)
		_, _, err := e.build(df, nil)
		if _, serr := os.Stat(sentinel); serr == nil {
			os.Remove(sentinel)
			t.Fatalf("WORKDIR /proc/self/fd/%d let RUN write %s on the host", n, sentinel)
		}
		// runc refuses such a working directory; the error names the RUN.
		if err == nil || !strings.Contains(err.Error(), "Dockerfile:3: ") || !strings.Contains(err.Error(), "/proc/self/fd/"+itoa(n)) {
			t.Errorf("WORKDIR /proc/self/fd/%d: err = %v; want an error naming line 3 and the directory", n, err)
		}
		if len(e.index.images) != before {
			t.Errorf("WORKDIR /proc/self/fd/%d: the failed build recorded images", n)
		}
	}
}

func TestCancelKillsTheRunningStep(t *testing.T) {
	e := newRuncEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	started := make(chan struct{}, 1)
	go func() {
		_, err := e.b.Build(ctx, &Request{Dockerfile: []byte("FROM busybox\nRUN echo go; exec sleep 617\n"), Context: e.context(nil)}, func(ev *builderv1.BuildEvent) {
			if ev.GetOutput() != nil {
				select {
				case started <- struct{}{}:
				default:
				}
			}
		})
		done <- err
	}()
	select {
	case <-started:
	case <-time.After(60 * time.Second):
		t.Fatal("the RUN step did not start")
	}
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a canceled build succeeded")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the build did not stop within 30 s of its cancellation")
	}
	out, _ := exec.Command("pgrep", "-fx", "sleep 617").Output()
	if len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("the step's process survived the cancellation: pids %s", out)
	}
}

func TestConcurrentBuildsShareTheBase(t *testing.T) {
	e := newRuncEnv(t)
	c := e.context([]ctxFile{{path: "f", body: "shared\n"}})
	errs := make(chan error, 3)
	for i := range 3 {
		go func() {
			df := "FROM busybox\nCOPY f /f\nRUN echo " + itoa(i) + " > /n\n"
			_, _, err := e.build(df, c, func(r *Request) { r.Tags = []string{"par:" + itoa(i)} })
			errs <- err
		}()
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Errorf("a concurrent build failed: %v", err)
		}
	}
	for i := range 3 {
		img := e.image("par:" + itoa(i))
		if got := e.files(img)["n"]; got != "-rw-r--r-- 0:0 "+itoa(i)+"\n" {
			t.Errorf("par:%d has /n = %q", i, got)
		}
	}
}

// A base image whose /etc/group is a FIFO, or whose /etc/passwd is a
// character device, once hung the builder (opening the FIFO) or grew its
// memory without bound (reading /dev/zero for --chown): the step that reads
// it now fails at once, naming the file and its line, and the builder goes
// on.
func TestHostileIDFilesFailTheStepFast(t *testing.T) {
	e := newRuncEnv(t)
	c := e.context([]ctxFile{{path: "f", body: "x"}})
	for _, tc := range []struct {
		name, df, file string
	}{
		{"group is a fifo", "FROM busybox\nRUN rm /etc/group && mkfifo /etc/group\nRUN echo next\n", "/etc/group"},
		{"passwd is /dev/zero for RUN", "FROM busybox\nRUN rm /etc/passwd && mknod /etc/passwd c 1 5\nRUN echo next\n", "/etc/passwd"},
		{"passwd is /dev/zero for --chown", "FROM busybox\nRUN rm /etc/passwd && mknod /etc/passwd c 1 5\nCOPY --chown=app f /f\n", "/etc/passwd"},
		{"passwd is a fifo for USER", "FROM busybox\nRUN rm /etc/passwd && mkfifo /etc/passwd\nUSER nobody\nRUN echo next\n", "/etc/passwd"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			start := time.Now()
			_, _, err := e.build(tc.df, c)
			took := time.Since(start)
			if err == nil || !strings.Contains(err.Error(), tc.file) || !strings.Contains(err.Error(), "not a regular file") {
				t.Errorf("build = %v, want an error naming %s as not a regular file", err, tc.file)
			}
			lines := strings.Count(tc.df, "\n")
			if err != nil && !strings.Contains(err.Error(), "Dockerfile:"+itoa(lines)) {
				t.Errorf("build = %v, want it to name line %d", err, lines)
			}
			if took > 5*time.Second {
				t.Errorf("the build took %v to fail", took)
			}
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 64<<20 {
				t.Errorf("the builder's heap grew by %d MiB", grew>>20)
			}
		})
	}
	if _, _, err := e.build("FROM busybox\nRUN echo still building\n", nil); err != nil {
		t.Errorf("the next build failed: %v", err)
	}
}

// A RUN past a build's limit fails the build with the limit's error and
// the Dockerfile line; the next build runs. Limits and networks the
// sandbox refuses stop a build before any step.
func TestRunLimitsOfABuild(t *testing.T) {
	e := newRuncEnv(t)
	limit := func(r *Request) { r.Resources = &builderv1.RunResources{PidsLimit: 32} }
	_, _, err := e.build("FROM busybox\nRUN echo start\nRUN bomb() { bomb | bomb; }; bomb\n", nil, limit)
	if !errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), "Dockerfile:3") || !strings.Contains(err.Error(), "process limit 32 reached") {
		t.Errorf("fork bomb under --pids-limit 32: %v, want RESOURCE_EXHAUSTED at Dockerfile:3 naming the limit", err)
	}
	if _, _, err := e.build("FROM busybox\nRUN echo next > /next\n", nil, limit); err != nil {
		t.Errorf("the build after the fork bomb: %v", err)
	}
	for name, tc := range map[string]struct {
		mod  func(*Request)
		want func(error) bool
	}{
		"--network host": {func(r *Request) { r.Network = builderv1.NetworkMode_NETWORK_MODE_HOST }, errdefs.IsFailedPrecondition},
		"--memory 1 TiB": {func(r *Request) { r.Resources = &builderv1.RunResources{Memory: 1 << 40} }, errdefs.IsInvalidArgument},
	} {
		_, rec, err := e.build("FROM busybox\nRUN echo never\n", nil, tc.mod)
		if !tc.want(err) || len(rec.events) != 0 {
			t.Errorf("%s: %v after %d events, want it refused before any step", name, err, len(rec.events))
		}
	}
}
