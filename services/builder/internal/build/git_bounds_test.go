package build

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/format/objfile"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/buildctx"
)

// bareRepo is a bare repository made with go-git, object by object, and
// served over smart HTTP by git's http-backend.
type bareRepo struct {
	t    *testing.T
	dir  string
	repo *git.Repository
}

func newBareRepo(t *testing.T) *bareRepo {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed: the test serves a repository with git http-backend")
	}
	dir := filepath.Join(t.TempDir(), "repo.git")
	repo, err := git.PlainInit(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	return &bareRepo{t: t, dir: dir, repo: repo}
}

// blob stores a blob of size zero bytes, streamed into a loose object (a
// go-git MemoryObject would hold it whole in this process's memory).
func (r *bareRepo) zeros(size int64) plumbing.Hash {
	r.t.Helper()
	tmp, err := os.CreateTemp(r.dir, "obj-")
	if err != nil {
		r.t.Fatal(err)
	}
	w := objfile.NewWriter(tmp)
	if err := w.WriteHeader(plumbing.BlobObject, size); err != nil {
		r.t.Fatal(err)
	}
	if _, err := io.CopyN(w, zeroReader{}, size); err != nil {
		r.t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		r.t.Fatal(err)
	}
	tmp.Close()
	h := w.Hash().String()
	if err := os.MkdirAll(filepath.Join(r.dir, "objects", h[:2]), 0o755); err != nil {
		r.t.Fatal(err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(r.dir, "objects", h[:2], h[2:])); err != nil {
		r.t.Fatal(err)
	}
	return w.Hash()
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func (r *bareRepo) store(o interface {
	Encode(plumbing.EncodedObject) error
}) plumbing.Hash {
	r.t.Helper()
	enc := r.repo.Storer.NewEncodedObject()
	if err := o.Encode(enc); err != nil {
		r.t.Fatal(err)
	}
	h, err := r.repo.Storer.SetEncodedObject(enc)
	if err != nil {
		r.t.Fatal(err)
	}
	return h
}

func (r *bareRepo) emptyBlob() plumbing.Hash {
	r.t.Helper()
	enc := r.repo.Storer.NewEncodedObject()
	enc.SetType(plumbing.BlobObject)
	h, err := r.repo.Storer.SetEncodedObject(enc)
	if err != nil {
		r.t.Fatal(err)
	}
	return h
}

func (r *bareRepo) tree(entries ...object.TreeEntry) plumbing.Hash {
	return r.store(&object.Tree{Entries: entries})
}

// serve commits tree on main and serves the repository, returning its URL.
func (r *bareRepo) serve(tree plumbing.Hash) string {
	r.t.Helper()
	sig := object.Signature{Name: "t", Email: "t@example.com", When: time.Unix(1e9, 0)}
	c := r.store(&object.Commit{Author: sig, Committer: sig, Message: "bomb\n", TreeHash: tree})
	for _, ref := range []*plumbing.Reference{plumbing.NewHashReference("refs/heads/main", c), plumbing.NewSymbolicReference(plumbing.HEAD, "refs/heads/main")} {
		if err := r.repo.Storer.SetReference(ref); err != nil {
			r.t.Fatal(err)
		}
	}
	gitBin, _ := exec.LookPath("git")
	srv := httptest.NewServer(&cgi.Handler{Path: gitBin, Args: []string{"http-backend"},
		Env: []string{"GIT_PROJECT_ROOT=" + filepath.Dir(r.dir), "GIT_HTTP_EXPORT_ALL=1"}})
	r.t.Cleanup(srv.Close)
	return srv.URL + "/repo.git"
}

// vmHWM is this process's peak resident memory.
func vmHWM(t *testing.T) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status: the test measures the builder's peak memory there")
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/self/status")
	return 0
}

// A repository one file of which inflates past MaxGitObject (a pack of a
// few hundred KiB: zeros) is refused before go-git inflates it, naming the
// URL and the bound; the builder's memory does not grow by the file.
func TestAddGitPackBombRefused(t *testing.T) {
	r := newBareRepo(t)
	big := r.zeros(MaxGitObject + 1)
	url := r.serve(r.tree(object.TreeEntry{Name: "big", Mode: filemode.Regular, Hash: big}))
	e := newEnv(t)
	e.b.URLPolicy.AllowPrivate = true
	e.importBase("busybox:latest", busyboxLike())
	before := vmHWM(t)
	_, _, err := e.build("FROM busybox\nADD "+url+" /src\n", nil)
	grew := vmHWM(t) - before
	if !errors.Is(err, errdefs.ErrResourceExhausted) || !strings.Contains(err.Error(), url) || !strings.Contains(err.Error(), strconv.Itoa(MaxGitObject)) {
		t.Errorf("ADD of a repository with a file of %d bytes: %v, want RESOURCE_EXHAUSTED naming the URL and the bound %d", MaxGitObject+1, err, MaxGitObject)
	}
	if grew > 128<<20 {
		t.Errorf("the builder's peak memory grew by %d MiB fetching a file of %d MiB", grew>>20, MaxGitObject>>20)
	}
}

// A tree naming one subtree many times over, again and again, is refused
// as the walk reaches a bound, naming the URL: the paths' total length,
// one path's length, the number of entries.
func TestAddGitTreeBombRefused(t *testing.T) {
	// nest makes a tree of depth levels, each naming the one below fanout
	// times, with names of nameLen bytes; the deepest holds leaf.
	nest := func(r *bareRepo, depth, fanout, nameLen int, leaf object.TreeEntry) plumbing.Hash {
		var h plumbing.Hash
		for d := 0; d < depth; d++ {
			var es []object.TreeEntry
			for i := 0; i < fanout; i++ {
				name := fmt.Sprintf("%0*d", nameLen, i)
				if d == 0 {
					es = append(es, object.TreeEntry{Name: name, Mode: leaf.Mode, Hash: leaf.Hash})
				} else {
					es = append(es, object.TreeEntry{Name: name, Mode: filemode.Dir, Hash: h})
				}
			}
			h = r.tree(es...)
		}
		return h
	}
	e := newEnv(t)
	e.b.URLPolicy.AllowPrivate = true
	e.importBase("busybox:latest", busyboxLike())
	for _, c := range []struct {
		what                   string
		depth, fanout, nameLen int
		submodules             bool
		want                   string
	}{
		// 111,110 entries of paths of up to 1,255 bytes: 125 MB of paths.
		{"paths adding up to 125 MB", 5, 10, 250, false, strconv.Itoa(64 << 20)},
		{"a path of 17 names of 250 bytes", 17, 1, 250, false, "4096"},
		// 10^7 submodules (to check out as empty directories, which
		// go-git lists without reading an object) in 1,111,110
		// directories.
		{"10^7 submodules", 7, 10, 1, true, strconv.Itoa(buildctx.MaxEntries)},
	} {
		r := newBareRepo(t)
		leaf := object.TreeEntry{Mode: filemode.Regular, Hash: r.emptyBlob()}
		query := ""
		if c.submodules {
			leaf = object.TreeEntry{Mode: filemode.Submodule, Hash: plumbing.NewHash("0123456789012345678901234567890123456789")}
			query = "?submodules=false"
		}
		url := r.serve(nest(r, c.depth, c.fanout, c.nameLen, leaf))
		t0 := time.Now()
		_, _, err := e.build("FROM busybox\nADD "+url+query+" /src\n", nil)
		if !errors.Is(err, errdefs.ErrResourceExhausted) || !strings.Contains(err.Error(), url) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ADD of a repository of %s: %v, want RESOURCE_EXHAUSTED naming the URL and %s", c.what, err, c.want)
		}
		t.Logf("%s: refused in %v", c.what, time.Since(t0))
	}
}

// A token in a Git URL's user information (https://TOKEN@host/…) is sent,
// but never shown: not in errors, not in a kept .git/config.
func TestAddGitURLTokenNotShown(t *testing.T) {
	s := newGitServer(t)
	const token = "ghp_SECRETTOKEN"
	withToken := strings.Replace(s.url, "http://", "http://"+token+"@", 1)
	e := newEnv(t)
	e.b.URLPolicy.AllowPrivate = true
	e.importBase("busybox:latest", busyboxLike())
	res, _ := e.mustBuild("FROM busybox\nADD --keep-git-dir=true "+withToken+" /k\n", nil)
	config := e.files(e.image(res.ImageID))["k/.git/config"]
	if !strings.Contains(config, s.url) || strings.Contains(config, token) {
		t.Errorf("k/.git/config = %q, want origin %s without the token", config, s.url)
	}
	_, _, err := e.build("FROM busybox\nADD "+withToken+"#nosuchbranch /src\n", nil)
	if err == nil || strings.Contains(err.Error(), token) || !strings.Contains(err.Error(), s.url) {
		t.Errorf("ADD of a ref the repository lacks, with a token in the URL: %v, want an error naming %s without the token", err, s.url)
	}
}

// A server whose ref advertisement never ends is cut off at
// maxGitRefsBody, not read into memory up to the download bound.
func TestAddGitRefAdvertisementBounded(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-git-upload-pack-advertisement")
		fmt.Fprint(w, "001e# service=git-upload-pack\n0000")
		fmt.Fprintf(w, "%04x%s HEAD\x00side-band-64k\n", 4+40+6+14, strings.Repeat("1", 40))
		// Refs of 1 KiB up to 64 MiB, a bounded answer past the bound.
		name := strings.Repeat("r", 1024-4-40-1-11-1-8)
		for i := 0; i < 64<<10; i++ {
			if _, err := fmt.Fprintf(w, "%04x%s refs/heads/%s%08d\n", 1024, strings.Repeat("1", 40), name, i); err != nil {
				return
			}
		}
		fmt.Fprint(w, "0000")
	}))
	defer srv.Close()
	e := newEnv(t)
	e.b.URLPolicy.AllowPrivate = true
	e.importBase("busybox:latest", busyboxLike())
	_, _, err := e.build("FROM busybox\nADD "+srv.URL+"/big.git /src\n", nil)
	if !errors.Is(err, errdefs.ErrResourceExhausted) || !strings.Contains(err.Error(), srv.URL+"/big.git") || !strings.Contains(err.Error(), strconv.Itoa(maxGitRefsBody)) {
		t.Errorf("ADD of a repository whose ref advertisement is 64 MiB: %v, want RESOURCE_EXHAUSTED naming the URL and the bound %d", err, maxGitRefsBody)
	}
}

// checkPack reads a delta's target size from the start of its data: a pack
// of deltas a few bytes long that each make an object under MaxGitObject
// but all together more than MaxDownload is refused, and so is one delta
// making an object over MaxGitObject.
func TestGitPackCheckDeltas(t *testing.T) {
	// pack is a pack of REF deltas (against one base, which is not in it:
	// the check does not resolve them) each making an object of size.
	pack := func(sizes ...int64) *bytes.Reader {
		var b bytes.Buffer
		b.WriteString("PACK")
		binary.Write(&b, binary.BigEndian, uint32(2))
		binary.Write(&b, binary.BigEndian, uint32(len(sizes)))
		for _, size := range sizes {
			delta := binary.AppendUvarint(binary.AppendUvarint(nil, 10), uint64(size))
			// The object's type (7, a REF delta) and its data's length.
			n := len(delta)
			b.WriteByte(0x70 | byte(n&0x0f))
			b.Write(make([]byte, 20)) // the base's hash
			z := zlib.NewWriter(&b)
			z.Write(delta)
			z.Close()
		}
		b.Write(make([]byte, 20)) // the pack's checksum, not checked here
		return bytes.NewReader(b.Bytes())
	}
	const remote = "https://example.com/repo.git"
	if err := checkPack(context.Background(), pack(100, MaxGitObject), remote); err != nil {
		t.Errorf("a pack of deltas making objects of 100 and %d bytes: %v, want it taken", MaxGitObject, err)
	}
	err := checkPack(context.Background(), pack(100, MaxGitObject+1), remote)
	if !errors.Is(err, errdefs.ErrResourceExhausted) || !strings.Contains(err.Error(), remote) || !strings.Contains(err.Error(), strconv.Itoa(MaxGitObject+1)) {
		t.Errorf("a pack of a delta making an object of %d bytes: %v, want RESOURCE_EXHAUSTED naming the URL and the size", MaxGitObject+1, err)
	}
	err = checkPack(context.Background(), pack(MaxGitObject, MaxGitObject, MaxGitObject, MaxGitObject, 1), remote)
	if !errors.Is(err, errdefs.ErrResourceExhausted) || !strings.Contains(err.Error(), remote) || !strings.Contains(err.Error(), strconv.Itoa(MaxDownload)) {
		t.Errorf("a pack of deltas making objects of %d bytes in all: %v, want RESOURCE_EXHAUSTED naming the URL and the bound %d", 4*MaxGitObject+1, err, MaxDownload)
	}
}

// A server that answers with an error of 64 MiB has its answer read only
// as far as go-git puts into a message (which reads it whole), not into
// memory up to the download bound.
func TestAddGitErrorAnswerBounded(t *testing.T) {
	var sent atomic.Int64
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(done)
		w.WriteHeader(http.StatusNotFound)
		line := strings.Repeat("e", 1023) + "\n"
		for i := 0; i < 64<<10; i++ {
			n, err := io.WriteString(w, line)
			if sent.Add(int64(n)); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	e := newEnv(t)
	e.b.URLPolicy.AllowPrivate = true
	e.importBase("busybox:latest", busyboxLike())
	_, _, err := e.build("FROM busybox\nADD "+srv.URL+"/broken.git /src\n", nil)
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), srv.URL+"/broken.git") {
		t.Errorf("ADD of a repository whose server answers 404: %v, want NOT_FOUND naming the URL", err)
	}
	<-done
	// What the server sent is what the builder read and what the
	// connection's buffers took before the builder hung up.
	if n := sent.Load(); n >= 32<<20 {
		t.Errorf("the server sent %d MiB of its 64 MiB answer of 404 before the builder hung up", n>>20)
	}
}

// The fetch's scratch repository is in the context store's scratch
// directory (emptied when the builder starts), not the system's: a
// builder whose TMPDIR cannot be written still fetches.
func TestAddGitScratchInContextStore(t *testing.T) {
	s := newGitServer(t)
	e := newEnv(t)
	e.b.URLPolicy.AllowPrivate = true
	e.importBase("busybox:latest", busyboxLike())
	t.Setenv("TMPDIR", filepath.Join(t.TempDir(), "missing"))
	res, _ := e.mustBuild("FROM busybox\nADD "+s.url+" /src\n", nil)
	if got := e.files(e.image(res.ImageID))["src/README"]; got != "-rw-r--r-- 0:0 hello\n" {
		t.Errorf("src/README = %q", got)
	}
}
