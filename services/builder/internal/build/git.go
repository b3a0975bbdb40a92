package build

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	git "github.com/go-git/go-git/v5"
	gitconfig "github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/capability"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/sideband"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"github.com/go-git/go-git/v5/storage/filesystem"
	"github.com/opencontainers/go-digest"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/buildctx"
	"github.com/strata-build/strata/services/builder/internal/plan"
)

// cloneGit fetches the commit an ADD Git source names over HTTP(S), through
// the builder's egress policy and within ADD's download bounds (time, and
// MaxDownload bytes fetched and checked out; checkPack's bounds on the
// objects, checkout.tree's on the paths), shallow when the ref is a
// branch or tag. It returns the checkout as a tree whose file contents are
// in the context store, with BuildKit's modes (0644, 0755 for executables
// and directories), root's ownership and the checkout's time (the
// commit's with ?mtime=commit), and the commit's hash.
//
// The fetch is go-git's upload-pack session driven here rather than its
// Remote.Fetch: only a session takes the builder's own HTTP client, where
// Fetch uses a process-wide transport.
func (b *Builder) cloneGit(ctx context.Context, g plan.GitSource) (*buildctx.Context, string, error) {
	u, err := url.Parse(g.Remote)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, "", errdefs.InvalidArgument("this builder fetches Git repositories over https:// and http:// only, not %s (ssh://, git@host:path and git:// URLs are not supported)", redactURL(g.Remote))
	}
	timeout := b.DownloadTimeout
	if timeout <= 0 {
		timeout = DefaultDownloadTimeout
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hc := urlClient(b.URLPolicy)
	tr := &fetchTransport{rt: hc.Transport}
	tr.left.Store(MaxDownload)
	hc.Transport = tr
	// what turns an error into the one to report: the bound the fetch
	// outlived or overran, the policy's refusal, or err.
	what := func(err error) error {
		switch {
		case ctx.Err() == nil && errors.Is(dctx.Err(), context.DeadlineExceeded):
			return errdefs.New(errdefs.ErrDeadlineExceeded, "fetching %s took longer than the builder allows (%v, --download-timeout)", redactURL(g.Remote), timeout).
				WithReason("DOWNLOAD_TIMEOUT")
		case tr.left.Load() < 0:
			return errdefs.ResourceExhausted("fetching %s: more than %d bytes", redactURL(g.Remote), MaxDownload)
		case tr.smallOver.Load():
			return errdefs.ResourceExhausted("fetching %s: the server's ref advertisement (info/refs) is more than %d bytes", redactURL(g.Remote), maxGitRefsBody)
		case tr.refused.Load() != nil:
			return tr.refused.Load()
		}
		return err
	}

	ep, err := transport.NewEndpoint(g.Remote)
	if err != nil {
		return nil, "", errdefs.InvalidArgument("%v", err)
	}
	sess, err := githttp.NewClient(hc).NewUploadPackSession(ep, nil)
	if err != nil {
		return nil, "", errdefs.InvalidArgument("%v", err)
	}
	defer sess.Close()
	ar, err := sess.AdvertisedReferencesContext(dctx)
	if err != nil {
		return nil, "", what(remoteError(g.Remote, err))
	}
	want, name, commitish, shallow, err := resolveRef(ar, g)
	if err != nil {
		return nil, "", err
	}

	tmp, err := b.Contexts.MkdirTemp("git-")
	if err != nil {
		return nil, "", err
	}
	defer os.RemoveAll(tmp)
	// Blobs over smallBlob are read from the pack as they are stored, not
	// whole into memory.
	st := filesystem.NewStorageWithOptions(osfs.New(filepath.Join(tmp, ".git")), cache.NewObjectLRUDefault(),
		filesystem.Options{LargeObjectThreshold: smallBlob})
	repo, err := git.Init(st, osfs.New(tmp))
	if err != nil {
		return nil, "", err
	}
	req := packp.NewUploadPackRequestFromCapabilities(ar.Capabilities)
	req.Wants = want
	if shallow && ar.Capabilities.Supports(capability.Shallow) {
		req.Depth = packp.DepthCommits(1)
		if err := req.Capabilities.Set(capability.Shallow); err != nil {
			return nil, "", err
		}
	}
	if ar.Capabilities.Supports(capability.NoProgress) {
		if err := req.Capabilities.Set(capability.NoProgress); err != nil {
			return nil, "", err
		}
	}
	resp, err := sess.UploadPack(dctx, req)
	if err != nil {
		return nil, "", what(remoteError(g.Remote, err))
	}
	defer resp.Close()
	if len(resp.Shallows) > 0 {
		if err := st.SetShallow(resp.Shallows); err != nil {
			return nil, "", err
		}
	}
	var pack io.Reader = resp
	switch {
	case req.Capabilities.Supports(capability.Sideband64k):
		pack = sideband.NewDemuxer(sideband.Sideband64k, resp)
	case req.Capabilities.Supports(capability.Sideband):
		pack = sideband.NewDemuxer(sideband.Sideband, resp)
	}
	// The pack is spooled and its objects' sizes checked before go-git
	// indexes it, which inflates each object whole into memory.
	spool, err := os.Create(filepath.Join(tmp, "fetch.pack"))
	if err != nil {
		return nil, "", err
	}
	defer spool.Close()
	if _, err := io.Copy(spool, pack); err != nil {
		return nil, "", what(errdefs.Unavailable("fetching %s: %v", redactURL(g.Remote), err))
	}
	if _, err := spool.Seek(0, io.SeekStart); err != nil {
		return nil, "", err
	}
	if err := checkPack(dctx, spool, redactURL(g.Remote)); err != nil {
		return nil, "", what(err)
	}
	if _, err := spool.Seek(0, io.SeekStart); err != nil {
		return nil, "", err
	}
	if err := packfile.UpdateObjectStorage(st, spool); err != nil {
		return nil, "", what(errdefs.Unavailable("fetching %s: %v", redactURL(g.Remote), err))
	}

	commit, err := findCommit(repo, commitish)
	if err != nil {
		return nil, "", errdefs.NotFound("repository %s has no commit %q: %v", redactURL(g.Remote), g.Ref, err)
	}
	tree, err := commit.Tree()
	if err != nil {
		return nil, "", err
	}
	subdir := strings.Trim(path.Clean("/"+g.Subdir), "/")
	if subdir != "" {
		if tree, err = tree.Tree(subdir); err != nil {
			return nil, "", errdefs.NotFound("repository %s has no directory %q at commit %s", redactURL(g.Remote), g.Subdir, commit.Hash)
		}
	}
	mtime := time.Now()
	if g.CommitMTime {
		mtime = commit.Committer.When
	}
	c := checkout{b: b, objects: st, mtime: mtime.UnixNano(), left: MaxDownload, remote: redactURL(g.Remote)}
	defer c.close()
	if err := c.tree(dctx, tree, g.SkipSubmodules); err != nil {
		return nil, "", what(err)
	}
	// .git is kept for the whole repository only, as BuildKit keeps it: a
	// repository whose HEAD is the commit, checked out, with origin the
	// remote (its files are go-git's, not byte for byte git's).
	if g.KeepGitDir && subdir == "" {
		if err := keepGitDir(repo, g, name, plumbing.NewHash(commitish), commit.Hash); err != nil {
			return nil, "", err
		}
		if err := c.dir(tmp, ".git"); err != nil {
			return nil, "", err
		}
	}
	bctx, err := buildctx.New(c.list)
	if err != nil {
		return nil, "", err
	}
	return bctx, commit.Hash.String(), nil
}

// resolveRef picks what to fetch for the source's ref among the remote's
// refs, in git's order (the full name, a tag, a branch; HEAD for none): the
// object to want, the name of the ref it is ("" for HEAD or a commit hash),
// the commit (or tag) to check out and whether a depth-1 fetch has it. A ref that names no branch or tag but looks like a commit
// hash is fetched with the branches and tags in full and looked up.
func resolveRef(ar *packp.AdvRefs, g plan.GitSource) (want []plumbing.Hash, name plumbing.ReferenceName, commitish string, shallow bool, err error) {
	refs, err := ar.AllReferences()
	if err != nil {
		return nil, "", "", false, errdefs.Unavailable("fetching %s: %v", redactURL(g.Remote), err)
	}
	if g.Ref == "" {
		if ar.Head == nil {
			return nil, "", "", false, errdefs.NotFound("repository %s has no HEAD (it is empty?)", redactURL(g.Remote))
		}
		return []plumbing.Hash{*ar.Head}, "", ar.Head.String(), true, nil
	}
	for _, cand := range []string{g.Ref, "refs/tags/" + g.Ref, "refs/heads/" + g.Ref} {
		if !strings.HasPrefix(cand, "refs/") {
			continue
		}
		if r, ok := refs[plumbing.ReferenceName(cand)]; ok && r.Type() == plumbing.HashReference {
			return []plumbing.Hash{r.Hash()}, r.Name(), r.Hash().String(), true, nil
		}
	}
	if len(g.Ref) >= 7 && len(g.Ref) <= 40 && gitHex(g.Ref) {
		seen := map[plumbing.Hash]bool{}
		for n, r := range refs {
			if r.Type() == plumbing.HashReference && (n.IsBranch() || n.IsTag() || n == plumbing.HEAD) && !seen[r.Hash()] {
				seen[r.Hash()] = true
				want = append(want, r.Hash())
			}
		}
		if len(want) > 0 {
			return want, "", strings.ToLower(g.Ref), false, nil
		}
	}
	return nil, "", "", false, errdefs.NotFound("repository %s has no branch, tag or commit %q", redactURL(g.Remote), g.Ref)
}

func gitHex(s string) bool {
	return strings.Trim(strings.ToLower(s), "0123456789abcdef") == ""
}

// findCommit returns the commit commitish (a hash, full or abbreviated, of
// a commit or an annotated tag) names.
func findCommit(repo *git.Repository, commitish string) (*object.Commit, error) {
	h, err := repo.ResolveRevision(plumbing.Revision(commitish))
	if err != nil {
		return nil, err
	}
	if t, err := repo.TagObject(*h); err == nil {
		return t.Commit()
	}
	return repo.CommitObject(*h)
}

// keepGitDir makes the fetched repository the checkout BuildKit keeps:
// HEAD detached at the commit, the branch or tag named (when one is) at
// what was fetched for it (so git describe finds a tag), origin the remote
// (without credentials), the index and work tree at the commit.
func keepGitDir(repo *git.Repository, g plan.GitSource, name plumbing.ReferenceName, fetched, commit plumbing.Hash) error {
	if _, err := repo.CreateRemote(&gitconfig.RemoteConfig{Name: "origin", URLs: []string{redactURL(g.Remote)}}); err != nil {
		return err
	}
	if name != "" {
		if err := repo.Storer.SetReference(plumbing.NewHashReference(name, fetched)); err != nil {
			return err
		}
	}
	if err := repo.Storer.SetReference(plumbing.NewHashReference(plumbing.HEAD, commit)); err != nil {
		return err
	}
	wt, err := repo.Worktree()
	if err != nil {
		return err
	}
	return wt.Reset(&git.ResetOptions{Commit: commit, Mode: git.MixedReset})
}

// The bounds of a checkout's paths: one path's length (Linux's PATH_MAX)
// and the paths' total length, which bounds the memory the list takes
// when its files are empty or directories.
const (
	maxGitPath      = 4096
	maxGitPathBytes = 64 << 20
)

// checkout lists a commit's tree as a context, storing file contents.
type checkout struct {
	b       *Builder
	objects storer.EncodedObjectStorer
	mtime   int64
	left    int64 // bytes the checkout may still store
	// pathBytes is the length of the paths listed so far.
	pathBytes int64
	remote    string
	list      []*builderv1.FileEntry
	batch     *buildctx.Batch // small contents, once one is stored
}

// close makes the small contents stored survive a restart.
func (c *checkout) close() {
	if c.batch != nil {
		c.batch.Close()
	}
}

func (c *checkout) add(p string, mode fs.FileMode, size int64, d, target string) {
	c.list = append(c.list, &builderv1.FileEntry{Path: p, Mode: buildctx.UnixMode(mode), Size: size, Digest: d, LinkTarget: target, MtimeUnixNano: c.mtime})
}

// tree lists t's entries, with the modes git checks them out with under
// the usual umask (022), as BuildKit runs git.
func (c *checkout) tree(ctx context.Context, t *object.Tree, skipSubmodules bool) error {
	w := object.NewTreeWalker(t, true, nil)
	defer w.Close()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		name, e, err := w.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		// A tree can name one subtree many times over, and those many
		// times over again: the walk stops at what a context may hold.
		if len(c.list) >= buildctx.MaxEntries {
			return errdefs.ResourceExhausted("checking out %s: more than %d files and directories", c.remote, buildctx.MaxEntries)
		}
		if len(name) > maxGitPath {
			return errdefs.ResourceExhausted("checking out %s: a path of %d bytes (%.64s…); this builder checks out paths of up to %d bytes", c.remote, len(name), name, maxGitPath)
		}
		if c.pathBytes += int64(len(name)); c.pathBytes > maxGitPathBytes {
			return errdefs.ResourceExhausted("checking out %s: the paths add up to more than %d bytes", c.remote, maxGitPathBytes)
		}
		switch e.Mode {
		case filemode.Dir:
			c.add(name, fs.ModeDir|0o755, 0, "", "")
		case filemode.Submodule:
			if !skipSubmodules {
				return errdefs.New(errdefs.ErrFailedPrecondition, "%s has a submodule at %s, which this builder does not fetch: add ?submodules=false to the URL to get an empty directory there", c.remote, name)
			}
			c.add(name, fs.ModeDir|0o755, 0, "", "")
		case filemode.Symlink:
			target, err := c.blobText(e.Hash)
			if err != nil {
				return err
			}
			c.add(name, fs.ModeSymlink|0o777, 0, "", target)
		default:
			mode := fs.FileMode(0o644)
			if e.Mode == filemode.Executable {
				mode = 0o755
			}
			blob, err := object.GetBlob(c.objects, e.Hash)
			if err != nil {
				return err
			}
			if blob.Size > c.left {
				return errdefs.ResourceExhausted("checking out %s: more than %d bytes", c.remote, MaxDownload)
			}
			r, err := blob.Reader()
			if err != nil {
				return err
			}
			d, n, err := c.store(r, blob.Size)
			r.Close()
			if err != nil {
				return err
			}
			c.add(name, mode, n, d, "")
		}
	}
}

func (c *checkout) blobText(h plumbing.Hash) (string, error) {
	blob, err := object.GetBlob(c.objects, h)
	if err != nil {
		return "", err
	}
	r, err := blob.Reader()
	if err != nil {
		return "", err
	}
	defer r.Close()
	b, err := io.ReadAll(io.LimitReader(r, 4096))
	return string(b), err
}

// smallBlob is the size up to which a file of a checkout is read whole,
// to be stored once (a rebuild of an unchanged repository writes nothing)
// and packed with the checkout's other small files.
const smallBlob = 1 << 20

// store puts a content of size bytes into the context store, within what
// the checkout may still store.
func (c *checkout) store(r io.Reader, size int64) (string, int64, error) {
	if size > c.left {
		return "", 0, errdefs.ResourceExhausted("checking out %s: more than %d bytes", c.remote, MaxDownload)
	}
	if size <= smallBlob {
		b, err := io.ReadAll(io.LimitReader(r, size+1))
		if err != nil {
			return "", 0, err
		}
		if int64(len(b)) != size {
			return "", 0, fmt.Errorf("checking out %s: a file of %d bytes read as %d", c.remote, size, len(b))
		}
		c.left -= size
		d := digest.FromBytes(b)
		if len(c.b.Contexts.Missing([]digest.Digest{d})) == 0 {
			return string(d), size, nil
		}
		if c.batch == nil {
			c.batch = c.b.Contexts.NewBatch()
		}
		w, err := c.batch.NewWriter(d, size)
		if err != nil {
			return "", 0, err
		}
		if _, err := w.Write(b); err != nil {
			w.Close()
			return "", 0, err
		}
		return string(d), size, w.Commit()
	}
	tmp, err := c.b.Contexts.NewTempFile()
	if err != nil {
		return "", 0, err
	}
	defer tmp.Close()
	n, err := io.Copy(tmp, io.LimitReader(r, c.left+1))
	if err != nil {
		return "", 0, err
	}
	if c.left -= n; c.left < 0 {
		return "", 0, errdefs.ResourceExhausted("checking out %s: more than %d bytes", c.remote, MaxDownload)
	}
	d, err := tmp.Commit()
	return string(d), n, err
}

// dir lists the directory host (.git) as name, with its files' modes.
func (c *checkout) dir(host, name string) error {
	return filepath.WalkDir(filepath.Join(host, name), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(host, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			c.add(rel, fs.ModeDir|fi.Mode().Perm(), 0, "", "")
		case fi.Mode().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			dg, n, err := c.store(f, fi.Size())
			f.Close()
			if err != nil {
				return err
			}
			c.add(rel, fi.Mode().Perm(), n, dg, "")
		}
		return nil
	})
}

// fetchTransport bounds the bytes a fetch reads, over all its requests,
// and keeps the egress policy's refusal to report it as it is (go-git
// wraps transport errors in its own words).
type fetchTransport struct {
	rt        http.RoundTripper
	left      atomic.Int64
	smallOver atomic.Bool // a ref advertisement overran maxGitRefsBody
	refused   atomic.Pointer[errdefs.Error]
}

func (t *fetchTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.rt.RoundTrip(req)
	if err != nil {
		var e *errdefs.Error
		if errors.As(err, &e) {
			t.refused.CompareAndSwap(nil, e)
		}
		return nil, err
	}
	body := &boundedBody{ReadCloser: resp.Body, t: t}
	switch {
	case resp.StatusCode/100 != 2:
		// go-git reads an error's answer whole into its message: the
		// message gets the answer's start, as if that were all of it.
		body.ReadCloser = struct {
			io.Reader
			io.Closer
		}{io.LimitReader(resp.Body, maxGitErrorBody), resp.Body}
	case strings.HasSuffix(req.URL.Path, "/info/refs"):
		// go-git reads the ref advertisement whole into memory.
		body.small = maxGitRefsBody
	}
	resp.Body = body
	return resp, nil
}

const (
	// maxGitRefsBody bounds a Git server's ref advertisement (info/refs).
	maxGitRefsBody = 16 << 20
	// maxGitErrorBody is what is read of a Git server's error answer.
	maxGitErrorBody = 4 << 10
)

type boundedBody struct {
	io.ReadCloser
	t     *fetchTransport
	small int64 // the bytes this body may have, when it is bounded alone (0 when not)
	read  int64
}

func (b *boundedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.read += int64(n)
	if b.small > 0 && b.read > b.small {
		b.t.smallOver.Store(true)
		return n, fmt.Errorf("more than %d bytes", b.small)
	}
	if b.t.left.Add(-int64(n)) < 0 {
		return n, fmt.Errorf("more than %d bytes", MaxDownload)
	}
	return n, err
}

// remoteError words a failure to talk to the remote.
func remoteError(remote string, err error) error {
	switch {
	case errors.Is(err, transport.ErrRepositoryNotFound):
		return errdefs.NotFound("no Git repository at %s", redactURL(remote))
	case errors.Is(err, transport.ErrAuthenticationRequired), errors.Is(err, transport.ErrAuthorizationFailed):
		return errdefs.FailedPrecondition("%s needs credentials, and the URL has none or they were refused (this builder sends only a user and password or token in the URL, https://user:token@host/…)", redactURL(remote))
	case errors.Is(err, transport.ErrEmptyRemoteRepository):
		return errdefs.NotFound("repository %s is empty", redactURL(remote))
	}
	return errdefs.Unavailable("fetching %s: %v", redactURL(remote), err)
}

// redactURL drops an HTTP(S) URL's user information, for messages and the origin
// of a kept .git: a token is often the user (https://TOKEN@host/…), which
// url.URL.Redacted keeps.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return u.Redacted() // ssh://git@host/…: the user is no secret
	}
	u.User = nil
	return u.String()
}

// MaxGitObject bounds one object of a fetched Git repository, inflated (a
// delta's target too): go-git inflates each object whole into memory to
// index the pack, so this is about what one fetch may hold in memory.
const MaxGitObject = 256 << 20

// checkPack refuses a pack (before go-git indexes it) any object of which
// inflates to more than MaxGitObject, or all of whose objects inflate to
// more than MaxDownload: a pack of a few hundred KiB can hold a blob of
// gigabytes of zeros. It reads the pack's object headers and, of a delta,
// the target size its data starts with; what it inflates is discarded as
// it is read.
func checkPack(ctx context.Context, pack io.ReadSeeker, remote string) error {
	s := packfile.NewScanner(pack)
	_, objects, err := s.Header()
	if err != nil {
		return errdefs.Unavailable("fetching %s: %v", remote, err)
	}
	var total int64
	for i := uint32(0); i < objects; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := s.NextObjectHeader()
		if err != nil {
			return errdefs.Unavailable("fetching %s: %v", remote, err)
		}
		size := h.Length
		if h.Type.IsDelta() && size <= MaxGitObject {
			head := deltaHead{}
			if _, _, err := s.NextObject(&head); err != nil {
				return errdefs.Unavailable("fetching %s: %v", remote, err)
			}
			target, err := head.targetSize()
			if err != nil {
				return errdefs.Unavailable("fetching %s: object %d of the pack: %v", remote, i, err)
			}
			// The delta is inflated too, to apply it.
			size = max(size, target)
		}
		if size > MaxGitObject {
			return errdefs.ResourceExhausted("fetching %s: the repository has an object of %d bytes; this builder checks out objects of up to %d bytes (%d MiB)", remote, size, int64(MaxGitObject), MaxGitObject>>20)
		}
		if total += size; total > MaxDownload {
			return errdefs.ResourceExhausted("fetching %s: the objects fetched inflate to more than %d bytes, the bound of one ADD", remote, int64(MaxDownload))
		}
	}
	return nil
}

// deltaHead keeps the start of a delta's data, where its base's and its
// target's sizes are, and discards the rest.
type deltaHead struct {
	b []byte
}

func (d *deltaHead) Write(p []byte) (int, error) {
	if n := 2 * binary.MaxVarintLen64; len(d.b) < n {
		d.b = append(d.b, p[:min(len(p), n-len(d.b))]...)
	}
	return len(p), nil
}

// targetSize is the size the delta's data says its target has: after the
// base's size, as a little-endian base-128 number (binary.Uvarint's
// encoding).
func (d *deltaHead) targetSize() (int64, error) {
	_, n := binary.Uvarint(d.b)
	if n <= 0 {
		return 0, errors.New("a delta with no base size")
	}
	t, m := binary.Uvarint(d.b[n:])
	if m <= 0 || t > math.MaxInt64 {
		return 0, errors.New("a delta with no target size")
	}
	return int64(t), nil
}
