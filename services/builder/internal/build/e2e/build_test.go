package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/harness"
)

const seedDockerfile = `FROM busybox:latest
LABEL maintainer="NGINX Docker Maintainers <docker-maint@nginx.com>"
ENV NGINX_VERSION=1.17.4
RUN set -x && mkdir -p /var/log/nginx && echo ok > /var/log/nginx/install.log
RUN ln -sf /dev/stdout /var/log/nginx/access.log
COPY index.html /usr/share/nginx/html/
EXPOSE 80
STOPSIGNAL SIGTERM
CMD ["nginx", "-g", "daemon off;"]
`

// withBusybox starts a stack with busybox:latest imported.
func withBusybox(t *testing.T) *stack {
	s := startStack(t)
	s.ok(t, "", "import", rootfsTar(t), "busybox:latest")
	return s
}

func TestBuildPrintsDockerOutputAndRebuildsFromCache(t *testing.T) {
	s := withBusybox(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"Dockerfile-1": seedDockerfile, "index.html": "<h1>hi</h1>\n", ".dockerignore": "secret/\n", "secret/key": "k"})

	out := s.ok(t, dir, "build", "-t", "my-nginx", "-f", "Dockerfile-1", ".")
	for _, want := range []string{
		"Step 1/9 : FROM busybox:latest\n ---> ",
		"Step 2/9 : LABEL maintainer=\"NGINX Docker Maintainers <docker-maint@nginx.com>\"\n ---> Running in ",
		"Removing intermediate container ",
		"Step 4/9 : RUN set -x && mkdir -p /var/log/nginx && echo ok > /var/log/nginx/install.log\n ---> Running in ",
		"+ mkdir -p /var/log/nginx\n",
		"Step 6/9 : COPY index.html /usr/share/nginx/html/\n ---> ",
		"Successfully built ",
		"Successfully tagged my-nginx:latest\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("build output lacks %q:\n%s", want, out)
		}
	}

	again := s.ok(t, dir, "build", "-t", "my-nginx", "-f", "Dockerfile-1", ".")
	if n := strings.Count(again, " ---> Using cache\n"); n != 8 {
		t.Errorf("rebuild: %d steps from the cache, want all 8:\n%s", n, again)
	}
	if !strings.HasPrefix(again, "Sending build context to Strata builder  0B ") {
		t.Errorf("rebuild sent context content: %q", strings.SplitN(again, "\n", 2)[0])
	}
	if strings.Contains(again, "Running in") {
		t.Errorf("rebuild ran a step:\n%s", again)
	}
	id := func(s string) string { return s[strings.LastIndex(s, "Successfully built ")+19:][:12] }
	if id(out) != id(again) {
		t.Errorf("rebuild made image %s, want the cached %s", id(again), id(out))
	}

	// A changed file invalidates the COPY and what follows, nothing before.
	writeFiles(t, dir, map[string]string{"index.html": "<h1>changed</h1>\n"})
	changed := s.ok(t, dir, "build", "-t", "my-nginx", "-f", "Dockerfile-1", ".")
	if n := strings.Count(changed, " ---> Using cache\n"); n != 4 {
		t.Errorf("after a file change: %d steps cached, want the 4 before the COPY:\n%s", n, changed)
	}
	if out := s.ok(t, dir, "build", "-q", "--no-cache", "-f", "Dockerfile-1", "."); !strings.HasPrefix(out, "sha256:") || strings.Contains(out, "Using cache") {
		t.Errorf("--no-cache -q printed %q", out)
	}
}

// Bad input: each a clear error naming the line, and no image recorded.
func TestBadInputIsAClearErrorAndRecordsNothing(t *testing.T) {
	s := withBusybox(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"f": "x", "out -> /etc/shadow": ""})
	var chain strings.Builder
	chain.WriteString("FROM busybox\nARG A0=xxxxxxxxxxxxxxxx\n")
	for i := 1; i < 40; i++ {
		chain.WriteString("ARG A" + itoa(i) + "=${A" + itoa(i-1) + "}${A" + itoa(i-1) + "}${A" + itoa(i-1) + "}\n")
	}
	chain.WriteString("RUN echo $A39\n")
	before := s.ok(t, "", "images", "-a", "-q")
	for _, tc := range []struct{ name, dockerfile, want string }{
		{"unknown instruction", "FROM busybox\nFOO bar\n", "Dockerfile:2: unknown instruction: FOO"},
		{"unknown flag", "FROM busybox\nCOPY --nope=1 f /f\n", "Dockerfile:2: unknown flag: --nope"},
		{"unterminated quote", "FROM busybox\nENV A=\"x\n", "Dockerfile:2:"},
		{"unterminated heredoc", "FROM busybox\nRUN <<EOF\necho\n", "Dockerfile:2: unterminated heredoc"},
		{"no FROM", "RUN echo\n", "Dockerfile:1:"},
		{"unknown stage", "FROM busybox\nCOPY --from=nostage /a /b\n", "nostage"},
		{"source outside the context", "FROM busybox\nCOPY ../x /x\n", "Dockerfile:2: COPY ../x: \"../x\" is outside the build context"},
		{"symlink out of the context", "FROM busybox\nCOPY out /x\n", "Dockerfile:2: COPY out"},
		{"missing source", "FROM busybox\nCOPY nope /x\n", "Dockerfile:2: COPY nope"},
		{"failing RUN", "FROM busybox\nRUN echo $((40+2)); exit 3\n", "Dockerfile:2: The command '/bin/sh -c echo $((40+2)); exit 3' returned a non-zero code: 3\nlast output:\n42"},
		{"WORKDIR in /proc/self/fd", "FROM busybox\nWORKDIR /proc/self/fd/7\nRUN true\n", "Dockerfile:3: running step 3: the container could not start"},
		{"ARG blow-up", chain.String(), "limit"},
		{"10 MB one-line Dockerfile", "FROM busybox\nRUN echo " + strings.Repeat("x", 10<<20) + "\n", "limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(tc.dockerfile), 0o644); err != nil {
				t.Fatal(err)
			}
			r := s.strata(t, dir, "build", "-t", "bad:input", ".")
			if r.code != 1 || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("exit %d, stderr %q; want exit 1 and %q", r.code, r.stderr, tc.want)
			}
		})
	}
	if after := s.ok(t, "", "images", "-a", "-q"); after != before {
		t.Errorf("failed builds recorded images:\nbefore %q\nafter  %q", before, after)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// A RUN that plants a symlink to / and a COPY through it: the file lands
// inside the image's root, never on the builder's host.
func TestCopyThroughPlantedSymlinkStaysInTheImage(t *testing.T) {
	s := withBusybox(t)
	dir := t.TempDir()
	name := "strata-e2e-escape-" + itoa(os.Getpid()%100)
	writeFiles(t, dir, map[string]string{"f": "payload\n", "Dockerfile": "FROM busybox\nRUN ln -s / /app\nCOPY f /app/" + name + "\n"})
	s.ok(t, dir, "build", "-t", "planted", ".")
	if _, err := os.Stat("/" + name); err == nil {
		os.Remove("/" + name)
		t.Fatalf("COPY through /app -> / wrote /%s on the host", name)
	}
	img := readArchive(t, s.save(t, "planted"))
	if _, ok := img.files["/"+name]; !ok {
		t.Errorf("/%s is not in the image; files under /: %d", name, len(img.files))
	}
}

// rawBuild runs a Build stream by hand, as a hostile or broken client
// could, and returns the error it ends with.
func rawBuild(t *testing.T, addr string, opts *builderv1.BuildOptions, entries []*builderv1.FileEntry, contents map[digest.Digest][]byte) (*builderv1.BuildResult, error) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(16<<20)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stream, err := builderv1.NewBuildServiceClient(conn).Build(ctx)
	if err != nil {
		return nil, err
	}
	stream.Send(&builderv1.BuildRequest{Request: &builderv1.BuildRequest_Options{Options: opts}})
	stream.Send(&builderv1.BuildRequest{Request: &builderv1.BuildRequest_Entries{Entries: &builderv1.ContextEntries{Entries: entries, Last: true}}})
	for {
		resp, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		if req := resp.GetContextRequest(); req != nil {
			for _, d := range req.GetDigests() {
				stream.Send(&builderv1.BuildRequest{Request: &builderv1.BuildRequest_FileData{FileData: &builderv1.FileData{
					Digest: d, Data: contents[digest.Digest(d)], Eof: true,
				}}})
			}
		}
		if r := resp.GetResult(); r != nil {
			return r, nil
		}
	}
}

func fileEntry(p string, body []byte) *builderv1.FileEntry {
	return &builderv1.FileEntry{Path: p, Mode: 0o100644, Size: int64(len(body)), Digest: string(digest.FromBytes(body))}
}

func TestContextWithTraversalNamesIsRefused(t *testing.T) {
	s := withBusybox(t)
	df := []byte("FROM busybox\nCOPY . /app\n")
	sentinel := filepath.Join(os.TempDir(), "strata-e2e-traversal")
	os.Remove(sentinel)
	for _, name := range []string{"../../../../.." + sentinel, sentinel, "a/../../x"} {
		body := []byte("pwned")
		_, err := rawBuild(t, s.BuilderAddr, &builderv1.BuildOptions{DockerfileContent: df},
			[]*builderv1.FileEntry{fileEntry(name, body)}, map[digest.Digest][]byte{digest.FromBytes(body): body})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("context entry %q: err = %v, want INVALID_ARGUMENT", name, err)
		}
	}
	if _, err := os.Stat(sentinel); err == nil {
		os.Remove(sentinel)
		t.Fatal("a context entry reached the host")
	}
}

func TestIgnoredFilesNeverReachTheImage(t *testing.T) {
	s := withBusybox(t)
	ignore, secret, app := []byte("secrets/\n"), []byte("the key"), []byte("app")
	df := []byte("FROM busybox\nCOPY . /app\n")
	res, err := rawBuild(t, s.BuilderAddr, &builderv1.BuildOptions{Tags: []string{"ignored"}, Dockerfile: "Dockerfile"},
		[]*builderv1.FileEntry{fileEntry("Dockerfile", df), fileEntry(".dockerignore", ignore), fileEntry("secrets/key", secret), fileEntry("app.txt", app)},
		map[digest.Digest][]byte{digest.FromBytes(df): df, digest.FromBytes(ignore): ignore, digest.FromBytes(secret): secret, digest.FromBytes(app): app})
	if err != nil {
		t.Fatal(err)
	}
	img := readArchive(t, s.save(t, res.GetImageId()))
	if _, ok := img.files["/app/secrets/key"]; ok {
		t.Error("/app/secrets/key is in the image although .dockerignore excludes secrets/")
	}
	if _, ok := img.files["/app/app.txt"]; !ok {
		t.Error("/app/app.txt is missing")
	}
}

// Ctrl-C on the client cancels the build on the server: its RUN process is
// killed and no image is recorded.
func TestInterruptedClientCancelsTheBuild(t *testing.T) {
	s := withBusybox(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"Dockerfile": "FROM busybox\nRUN echo started; exec sleep 619\n"})
	cmd := exec.Command(filepath.Join(s.Bin, "strata"), "build", "--progress=plain", "-t", "interrupted", ".")
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "HOME="+s.home), s.Env()...)
	// The output goes to a file, as the harness's processes do: a buffer
	// would be written by exec's copying goroutine while the test reads it.
	outPath := filepath.Join(t.TempDir(), "build.log")
	out, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	harness.WaitFor(t, "the RUN step", 60*time.Second, func(context.Context) error {
		if b, _ := os.ReadFile(outPath); !bytes.Contains(b, []byte("started")) {
			return os.ErrNotExist
		}
		return nil
	})
	cmd.Process.Signal(syscall.SIGINT)
	cmd.Wait()
	harness.WaitFor(t, "the step's process to be killed", 30*time.Second, func(context.Context) error {
		if b, _ := exec.Command("pgrep", "-fx", "sleep 619").Output(); len(bytes.TrimSpace(b)) > 0 {
			return os.ErrExist
		}
		return nil
	})
	if r := s.strata(t, "", "inspect", "interrupted"); r.code == 0 {
		t.Error("an interrupted build tagged an image")
	}
}

// A base image whose layer holds "..", absolute, symlink-out and
// hard-link-out entries: importing it is refused, or building on it leaves
// the host untouched.
func TestHostileBaseLayerStaysInItsRoot(t *testing.T) {
	s := startStack(t)
	tag := strconv.Itoa(os.Getpid())
	victims := []string{"/tmp/strata-evil-dotdot-" + tag, "/tmp/strata-evil-abs-" + tag, "/tmp/strata-evil-link-" + tag}
	for _, v := range victims {
		os.Remove(v)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(h *tar.Header, body string) {
		h.Size = int64(len(body))
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		tw.WriteHeader(h)
		tw.Write([]byte(body))
	}
	rootfs, err := os.ReadFile(rootfsTar(t))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(bytes.NewReader(rootfs))
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		b, _ := io.ReadAll(tr)
		add(h, string(b))
	}
	add(&tar.Header{Name: "../../../../../../.." + victims[0]}, "pwned")
	add(&tar.Header{Name: victims[1]}, "pwned")
	add(&tar.Header{Name: "escape", Typeflag: tar.TypeSymlink, Linkname: "/tmp", Mode: 0o777}, "")
	add(&tar.Header{Name: "escape/" + filepath.Base(victims[2])}, "pwned")
	add(&tar.Header{Name: "hl", Typeflag: tar.TypeLink, Linkname: "../../../../../../../etc/passwd"}, "")
	tw.Close()
	evil := filepath.Join(t.TempDir(), "evil.tar")
	if err := os.WriteFile(evil, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	passwd, _ := os.ReadFile("/etc/passwd")
	r := s.strata(t, "", "import", evil, "evil:latest")
	t.Logf("import of the hostile layer: exit %d %s", r.code, strings.TrimSpace(r.stderr))
	if r.code == 0 {
		dir := t.TempDir()
		writeFiles(t, dir, map[string]string{"Dockerfile": "FROM evil\nRUN echo more >> /hl; ls /escape/ > /listing\n"})
		s.strata(t, dir, "build", "-t", "evil-child", ".")
	}
	for _, v := range victims {
		if _, err := os.Stat(v); err == nil {
			os.Remove(v)
			t.Errorf("%s was written on the host", v)
		}
	}
	if after, _ := os.ReadFile("/etc/passwd"); !bytes.Equal(after, passwd) {
		t.Fatal("the host's /etc/passwd changed")
	}
}
