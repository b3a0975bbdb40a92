package build

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/image"
)

// gitServer is a Git repository served over smart HTTP by git's own
// http-backend, as a forge serves one.
type gitServer struct {
	t    *testing.T
	work string // the repository's work tree
	url  string // the repository's URL
}

func newGitServer(t *testing.T) *gitServer {
	t.Helper()
	gitBin, err := exec.LookPath("git")
	if err != nil {
		t.Skip("git is not installed: the test serves a repository with git http-backend")
	}
	root := t.TempDir()
	s := &gitServer{t: t, work: filepath.Join(root, "work")}
	s.git(root, "init", "-q", "-b", "main", s.work)
	s.write("README", "hello\n", 0o644)
	s.write("bin/run.sh", "#!/bin/sh\necho run\n", 0o755)
	s.write("sub/dir/deep.txt", "deep\n", 0o644)
	if err := os.Symlink("README", filepath.Join(s.work, "link")); err != nil {
		t.Fatal(err)
	}
	s.commit("first")
	s.git(s.work, "tag", "-a", "-m", "v1", "v1")
	s.git(root, "clone", "-q", "--bare", s.work, filepath.Join(root, "srv", "repo.git"))
	srv := httptest.NewServer(&cgi.Handler{Path: gitBin, Args: []string{"http-backend"},
		Env: []string{"GIT_PROJECT_ROOT=" + filepath.Join(root, "srv"), "GIT_HTTP_EXPORT_ALL=1"}})
	t.Cleanup(srv.Close)
	s.url = srv.URL + "/repo.git"
	return s
}

func (s *gitServer) git(dir string, args ...string) {
	s.t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.com"}, args...)...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		s.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
}

func (s *gitServer) write(p, body string, mode os.FileMode) {
	s.t.Helper()
	host := filepath.Join(s.work, p)
	if err := os.MkdirAll(filepath.Dir(host), 0o755); err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(host, []byte(body), mode); err != nil {
		s.t.Fatal(err)
	}
}

// commit commits the work tree on main and pushes it to the served
// repository.
func (s *gitServer) commit(msg string) {
	s.t.Helper()
	s.git(s.work, "add", "-A")
	s.git(s.work, "commit", "-q", "-m", msg)
	if bare := filepath.Join(filepath.Dir(s.work), "srv", "repo.git"); fileExists(bare) {
		s.git(s.work, "push", "-q", bare, "main")
	}
}

// head is the commit main is at.
func (s *gitServer) head() string {
	s.t.Helper()
	out, err := exec.Command("git", "-C", s.work, "rev-parse", "HEAD").Output()
	if err != nil {
		s.t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// ADD of a Git URL copies the commit's files into the destination, as
// BuildKit does: root-owned, 0644 or 0755 as git checks them out, symlinks
// kept, the subdirectory of "#ref:dir" only, .git only with
// --keep-git-dir.
func TestAddGitRepository(t *testing.T) {
	for _, intoMounts := range []bool{false, true} {
		s := newGitServer(t)
		e := newEnv(t)
		e.b.copyIntoMounts = intoMounts
		e.b.URLPolicy.AllowPrivate = true
		e.importBase("busybox:latest", busyboxLike())
		res, _ := e.mustBuild("FROM busybox\nADD "+s.url+" /all\nADD "+s.url+"#main:sub /s/\n"+
			"ADD --keep-git-dir=true "+s.url+"#v1 /k\nADD "+s.url+"?ref=main&subdir=sub/dir /q\n", nil)
		got := e.files(e.image(res.ImageID))
		want := map[string]string{
			"all/README":           "-rw-r--r-- 0:0 hello\n",
			"all/bin":              "drwxr-xr-x 0:0",
			"all/bin/run.sh":       "-rwxr-xr-x 0:0 #!/bin/sh\necho run\n",
			"all/link":             "-rwxrwxrwx 0:0 -> README",
			"all/sub/dir/deep.txt": "-rw-r--r-- 0:0 deep\n",
			"s/dir/deep.txt":       "-rw-r--r-- 0:0 deep\n",
			"k/README":             "-rw-r--r-- 0:0 hello\n",
			"q/deep.txt":           "-rw-r--r-- 0:0 deep\n",
		}
		for p, w := range want {
			if got[p] != w {
				t.Errorf("into mounts %v: %s = %q, want %q", intoMounts, p, got[p], w)
			}
		}
		checkFiles(t, got, []string{"k/.git/HEAD", "k/.git/config", "k/.git/refs/tags/v1"}, []string{"all/.git", "s/README", "s/sub", "q/dir"})
		if !strings.Contains(got["k/.git/config"], s.url) {
			t.Errorf("k/.git/config = %q, want origin %s", got["k/.git/config"], s.url)
		}
	}
}

// A rebuild is a cache hit while the branch stays where it was, and a miss
// once it moves.
func TestAddGitCacheFollowsTheCommit(t *testing.T) {
	s := newGitServer(t)
	e := newEnv(t)
	e.b.URLPolicy.AllowPrivate = true
	e.importBase("busybox:latest", busyboxLike())
	df := "FROM busybox\nADD " + s.url + "#main /src\n"
	e.mustBuild(df, nil)
	if _, rec := e.mustBuild(df, nil); rec.cached() != 1 {
		t.Errorf("rebuild with the branch unmoved: %d steps cached, want 1", rec.cached())
	}
	s.write("README", "hello again\n", 0o644)
	s.commit("second")
	res, rec := e.mustBuild(df, nil)
	if rec.cached() != 0 {
		t.Errorf("rebuild after the branch moved: %d steps cached, want 0", rec.cached())
	}
	if got := e.files(e.image(res.ImageID))["src/README"]; got != "-rw-r--r-- 0:0 hello again\n" {
		t.Errorf("src/README after the branch moved = %q", got)
	}
	// The key is the commit, as BuildKit's: a new commit of the same files
	// is a miss too.
	s.git(s.work, "commit", "-q", "--allow-empty", "-m", "empty")
	s.git(s.work, "push", "-q", filepath.Join(filepath.Dir(s.work), "srv", "repo.git"), "main")
	if _, rec := e.mustBuild(df, nil); rec.cached() != 0 {
		t.Errorf("rebuild after an empty commit on the branch: %d steps cached, want 0", rec.cached())
	}
	// The fetch is shallow: the commit without its parent.
	kept := e.files(e.image(e.mustBuildID("FROM busybox\nADD --keep-git-dir " + s.url + "#main /src\n")))
	if _, ok := kept["src/.git/shallow"]; !ok {
		t.Errorf("ADD --keep-git-dir of a branch of two commits: no .git/shallow, want a depth-1 fetch")
	}
	// The tag still names the first commit.
	if got := e.files(e.image(e.mustBuildID("FROM busybox\nADD " + s.url + "#v1 /src\n")))["src/README"]; got != "-rw-r--r-- 0:0 hello\n" {
		t.Errorf("src/README at v1 = %q", got)
	}
}

func (e *env) mustBuildID(df string) string {
	e.t.Helper()
	res, _ := e.mustBuild(df, nil)
	return res.ImageID
}

// What cannot be fetched fails naming the URL and what is wrong: a ref the
// repository lacks, a host nothing answers on, an address the policy
// refuses, a transport this builder does not speak, a COPY of a repository.
func TestAddGitErrors(t *testing.T) {
	s := newGitServer(t)
	e := newEnv(t)
	e.importBase("busybox:latest", busyboxLike())
	_, _, err := e.build("FROM busybox\nADD "+s.url+" /src\n", nil)
	if !errors.Is(err, errdefs.ErrPermissionDenied) || !strings.Contains(err.Error(), "127.0.0.1") {
		t.Errorf("ADD of a loopback repository without the policy allowing it: %v, want PERMISSION_DENIED naming the address", err)
	}
	e.b.URLPolicy.AllowPrivate = true

	_, _, err = e.build("FROM busybox\nADD "+s.url+"#nosuchbranch /src\n", nil)
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), `"nosuchbranch"`) || !strings.Contains(err.Error(), s.url) {
		t.Errorf("ADD of a ref the repository lacks: %v, want NOT_FOUND naming the ref and the URL", err)
	}
	_, _, err = e.build("FROM busybox\nADD "+s.url+"#main:nosuchdir /src\n", nil)
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), `"nosuchdir"`) {
		t.Errorf("ADD of a subdirectory the commit lacks: %v, want NOT_FOUND naming it", err)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String() + "/repo.git"
	l.Close()
	_, _, err = e.build("FROM busybox\nADD "+dead+" /src\n", nil)
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), dead) {
		t.Errorf("ADD of a repository nothing serves: %v, want UNAVAILABLE naming the URL", err)
	}

	for _, src := range []string{"git@github.com:moby/buildkit.git#master", "ssh://git@github.com/moby/buildkit.git"} {
		_, _, err = e.build("FROM busybox\nADD "+src+" /src\n", nil)
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), strings.TrimSuffix(src, "#master")) || !strings.Contains(err.Error(), "https://") {
			t.Errorf("ADD %s: %v, want INVALID_ARGUMENT naming it and what is supported", src, err)
		}
	}
	_, _, err = e.build("FROM busybox\nCOPY "+s.url+" /src\n", nil)
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "use ADD") {
		t.Errorf("COPY of a repository: %v, want INVALID_ARGUMENT saying to use ADD", err)
	}
}

// ADD --checksum of a Git source is the commit (or its start), as BuildKit
// checks it; a commit hash as the ref is fetched though no branch names it
// at depth 1.
func TestAddGitChecksum(t *testing.T) {
	s := newGitServer(t)
	e := newEnv(t)
	e.b.URLPolicy.AllowPrivate = true
	e.importBase("busybox:latest", busyboxLike())
	first := s.head()
	e.mustBuild("FROM busybox\nADD --checksum="+first[:12]+" "+s.url+"#main /src\nADD "+s.url+"?checksum="+first+" /q\n", nil)
	s.write("README", "changed\n", 0o644)
	s.commit("second")
	_, _, err := e.build("FROM busybox\nADD --checksum="+first+" "+s.url+"#main /src\n", nil)
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), first) || !strings.Contains(err.Error(), s.head()) {
		t.Errorf("ADD --checksum of a branch that moved on: %v, want FAILED_PRECONDITION naming both commits", err)
	}
	_, _, err = e.build("FROM busybox\nADD --checksum=sha256:abc "+s.url+" /src\n", nil)
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "sha256:abc") {
		t.Errorf("ADD --checksum=sha256:abc of a Git source: %v, want INVALID_ARGUMENT naming it", err)
	}
	for _, ref := range []string{first, first[:10]} {
		res, _ := e.mustBuild("FROM busybox\nADD "+s.url+"#"+ref+" /src\n", nil)
		if got := e.files(e.image(res.ImageID))["src/README"]; got != "-rw-r--r-- 0:0 hello\n" {
			t.Errorf("ADD of %s#%s: src/README = %q, want the first commit's", s.url, ref, got)
		}
	}
}

// A Git server that never answers fails the build within the download
// timeout, naming the URL and the setting.
func TestAddGitTimeout(t *testing.T) {
	e := newEnv(t)
	e.importBase("busybox:latest", busyboxLike())
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer srv.Close()
	e.b.URLPolicy.AllowPrivate = true
	e.b.DownloadTimeout = 300 * time.Millisecond
	t0 := time.Now()
	_, _, err := e.build("FROM busybox\nADD "+srv.URL+"/slow.git /src\n", nil)
	if !errors.Is(err, errdefs.ErrDeadlineExceeded) || !strings.Contains(err.Error(), srv.URL+"/slow.git") || !strings.Contains(err.Error(), "--download-timeout") {
		t.Errorf("ADD of a repository whose server never answers: %v, want DEADLINE_EXCEEDED naming the URL and --download-timeout", err)
	}
	if d := time.Since(t0); d > 10*time.Second {
		t.Errorf("the build took %v to give up", d)
	}
}

// Files get the checkout's time, as BuildKit's, or the commit's with
// ?mtime=commit.
func TestAddGitMtimes(t *testing.T) {
	s := newGitServer(t)
	commitTime := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	s.write("README", "dated\n", 0o644)
	s.t.Setenv("GIT_COMMITTER_DATE", commitTime.Format(time.RFC3339))
	s.commit("dated")
	e := newEnv(t)
	e.b.URLPolicy.AllowPrivate = true
	e.importBase("busybox:latest", busyboxLike())
	t0 := time.Now().Truncate(time.Second)
	res, _ := e.mustBuild("FROM busybox\nADD "+s.url+" /co\nADD "+s.url+"?mtime=commit /cm\n", nil)
	img := e.image(res.ImageID)
	layers := img.Layers()
	for _, c := range []struct {
		layer image.Layer
		path  string
		ok    func(time.Time) bool
		want  string
	}{
		{layers[len(layers)-2], "co/README", func(m time.Time) bool { return !m.Before(t0) }, "the checkout's time"},
		{layers[len(layers)-1], "cm/README", func(m time.Time) bool { return m.Equal(commitTime) }, "the commit's time " + commitTime.String()},
	} {
		var mtime time.Time
		for _, line := range e.layerHeaders(c.layer) {
			if line.Name == c.path {
				mtime = line.ModTime
			}
		}
		if !c.ok(mtime) {
			t.Errorf("%s mtime = %v, want %s", c.path, mtime, c.want)
		}
	}
}

// layerHeaders lists the tar headers of a layer.
func (e *env) layerHeaders(l image.Layer) []tar.Header {
	e.t.Helper()
	rc, err := e.blobs.Open(context.Background(), l.Blob.Digest)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rc.Close()
	gz, err := gzip.NewReader(rc)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []tar.Header
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			e.t.Fatal(err)
		}
		out = append(out, *h)
	}
}
