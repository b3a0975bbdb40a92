package copier

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/buildctx"
	"github.com/strata-build/strata/services/builder/internal/plan"
)

// The source hash Docker's classic builder writes in COPY and ADD history
// (moby builder/dockerfile/copy.go over builder/remotecontext): one place,
// for sources from the context and from another image's root alike.
//
//   - a file is "file:" and its tarsum (pkg/tarsum, version 1): sha256 over
//     its tar header's fields as name+value strings (name, mode, uid, gid,
//     size, typeflag, linkname, uname and gname left empty, devmajor,
//     devminor; no mtime) followed by its content;
//   - a directory is "dir:" and sha256 of the sorted sums of every entry
//     under it, itself included unless it is the context's root, joined by
//     ",". An entry that is a symlink counts as what it points to, or as its
//     own path when that is not there;
//   - several sources are "multi:" and sha256 of their hashes, in order,
//     joined by ",".
//
// The header is the one the tar that carried the file has: for the
// context, the one Docker's CLI writes (owner 0:0, permission and special
// bits only in the mode, a directory's name ending in "/"); for another
// image's root, the one the daemon makes from the file (its own owner, and
// the mode with the file type bits as well).

// tarHeader holds the header fields tarsum covers.
type tarHeader struct {
	name     string
	mode     int64
	uid, gid int
	size     int64
	typeflag byte
	linkname string
}

// tarsum returns the tarsum of an entry with header h and content r (nil
// for none).
func tarsum(h tarHeader, r io.Reader) (string, error) {
	s := sha256.New()
	for _, kv := range [...][2]string{
		{"name", h.name}, {"mode", strconv.FormatInt(h.mode, 10)},
		{"uid", strconv.Itoa(h.uid)}, {"gid", strconv.Itoa(h.gid)},
		{"size", strconv.FormatInt(h.size, 10)}, {"typeflag", string([]byte{h.typeflag})},
		{"linkname", h.linkname}, {"uname", ""}, {"gname", ""}, {"devmajor", "0"}, {"devminor", "0"},
	} {
		io.WriteString(s, kv[0]+kv[1])
	}
	if r != nil {
		if _, err := io.Copy(s, r); err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(s.Sum(nil)), nil
}

// joinHash is Docker's hashStringSlice: prefix and sha256 of the strings
// joined by ",".
func joinHash(prefix string, hashes []string) string {
	s := sha256.Sum256([]byte(strings.Join(hashes, ",")))
	return prefix + ":" + hex.EncodeToString(s[:])
}

// combine is the hash of several sources' hashes.
func combine(hashes []string) string {
	if len(hashes) == 1 {
		return hashes[0]
	}
	return joinHash("multi", hashes)
}

// tarMode is a mode as tar headers carry it: permission and special bits.
func tarPermBits(m fs.FileMode) int64 {
	b := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		b |= unix.S_ISUID
	}
	if m&fs.ModeSetgid != 0 {
		b |= unix.S_ISGID
	}
	if m&fs.ModeSticky != 0 {
		b |= unix.S_ISVTX
	}
	return b
}

// SourceHash returns the history hash of cp's sources from the build
// context (or its heredocs and downloads). It reads their contents from
// o.Store, so they must have arrived; what it computes for a context entry
// is kept with the context.
func SourceHash(cp *plan.Copy, o Options) (string, error) {
	var hashes []string
	for _, f := range cp.Sources {
		switch e := f.Entry; {
		case e == nil: // a heredoc, which Docker's classic builder does not have
			d := sha256.Sum256(f.Data)
			hashes = append(hashes, "file:"+hex.EncodeToString(d[:]))
		case e.Mode.IsDir():
			fo := o
			fo.Context = f.Tree(o.Context)
			h, err := contextDirHash(fo, cp, f)
			if err != nil {
				return "", errdefs.New(errdefs.KindOf(err), "%s %s: %w", name(cp), f.Src, err)
			}
			hashes = append(hashes, h)
		default:
			h, err := contextSum(o, e)
			if err != nil {
				return "", errdefs.New(errdefs.KindOf(err), "%s %s: %w", name(cp), f.Src, err)
			}
			hashes = append(hashes, "file:"+h)
		}
	}
	return combine(hashes), nil
}

type memoHash struct {
	h   string
	err error
}

// contextDirHash is the "dir:" hash of a context directory source, over
// what --exclude and a --parents pattern keep of it. Its files are read on
// a few cores, as copying them is.
func contextDirHash(o Options, cp *plan.Copy, f plan.Source) (string, error) {
	dir := f.Entry
	key := fmt.Sprintf("dockerhash\x00dir\x00%q\x00%q\x00%q", dir.Path, cp.Exclude, f.Include)
	m := o.Context.Memo(key, func() any {
		var all []*buildctx.Entry
		err := o.Context.Walk(dir.Path, func(x *buildctx.Entry) error {
			all = append(all, x)
			return nil
		})
		if err != nil {
			return memoHash{err: err}
		}
		all = plan.Filter(cp.Excluder, f.Include, all, func(x *buildctx.Entry) (string, bool) {
			if x == dir {
				return "", true
			}
			return relTo(dir.Path, x.Path), x.Mode.IsDir()
		})
		var entries []*buildctx.Entry
		for _, x := range all {
			if x.Path != "." {
				entries = append(entries, x)
			}
		}
		subs := make([]string, len(entries))
		errs := make([]error, len(entries))
		next := make(chan int)
		var wg sync.WaitGroup
		for range min(runtime.NumCPU(), 4, max(len(entries), 1)) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					subs[i], errs[i] = contextEntryHash(o, entries[i])
				}
			}()
		}
		for i := range entries {
			next <- i
		}
		close(next)
		wg.Wait()
		slices.Sort(subs)
		return memoHash{joinHash("dir", subs), errors.Join(errs...)}
	}).(memoHash)
	return m.h, m.err
}

// contextEntryHash is what an entry met in a directory counts as: its sum,
// its target's for a symlink, or its path when the tar had no header for
// it (the target is not there, or the directory is only implied).
func contextEntryHash(o Options, x *buildctx.Entry) (string, error) {
	if x.Mode&fs.ModeSymlink != 0 {
		t, err := o.Context.Resolve(x.Path)
		if err != nil || t.Path == "." || t.Implied {
			return x.Path, nil
		}
		x = t
	}
	if x.Implied {
		return x.Path, nil
	}
	return contextSum(o, x)
}

// contextSum is the tarsum of a context entry, as the tar Docker's CLI
// sends it.
func contextSum(o Options, e *buildctx.Entry) (string, error) {
	sum := func() any {
		h := tarHeader{name: e.Path, mode: tarPermBits(e.Mode)}
		var r io.Reader
		switch {
		case e.Mode.IsDir():
			h.name += "/"
			h.typeflag = '5'
		case e.Mode&fs.ModeSymlink != 0:
			h.typeflag, h.linkname = '2', e.LinkTarget
		default:
			// The same file in the next build's context has the same sum:
			// the store keeps it, so that only changed files are read.
			h.typeflag, h.size = '0', e.Size
			key := fmt.Sprintf("tarsum\x00%q\x00%d\x00%d\x00%s", h.name, h.mode, h.size, e.Digest)
			s, err := o.Store.Memo(key, func() (string, error) {
				f, err := o.Store.Open(e.Digest)
				if err != nil {
					return "", err
				}
				defer f.Close()
				return tarsum(h, f)
			})
			return memoHash{s, err}
		}
		s, err := tarsum(h, r)
		return memoHash{s, err}
	}
	if x, ok := o.Context.Lookup(e.Path); !ok || x != e {
		m := sum().(memoHash) // a download, which the context does not hold
		return m.h, m.err
	}
	m := o.Context.Memo("dockerhash\x00"+e.Path, sum).(memoHash)
	return m.h, m.err
}

// rootHash returns the history hash of the source s (clean, absolute) of
// the root filesystem srcRoot, as Docker hashes a COPY --from's sources.
func rootHash(srcRoot, s string) (string, error) {
	host, err := securejoin.SecureJoin(srcRoot, s)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(host)
	if err != nil {
		return "", err
	}
	if !fi.IsDir() {
		h, err := rootSum(srcRoot, host)
		return "file:" + h, err
	}
	var subs []string
	err = filepath.WalkDir(host, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == srcRoot {
			return nil
		}
		target := p
		if d.Type()&fs.ModeSymlink != 0 {
			rel, _ := filepath.Rel(srcRoot, p)
			if target, err = securejoin.SecureJoin(srcRoot, rel); err != nil {
				return err
			}
		}
		h, err := rootSum(srcRoot, target)
		if os.IsNotExist(err) {
			rel, _ := filepath.Rel(srcRoot, p)
			h, err = filepath.ToSlash(rel), nil
		}
		subs = append(subs, h)
		return err
	})
	slices.Sort(subs)
	return joinHash("dir", subs), err
}

// rootSum is the tarsum of a file of a root filesystem, with the header
// Docker's daemon makes from it (archive.FileInfoHeader).
func rootSum(srcRoot, host string) (string, error) {
	fi, err := os.Lstat(host)
	if err != nil {
		return "", err
	}
	rel, err := filepath.Rel(srcRoot, host)
	if err != nil {
		return "", err
	}
	h := tarHeader{name: path.Clean(filepath.ToSlash(rel)), mode: tarPermBits(fi.Mode())}
	if st, ok := fi.Sys().(*unix.Stat_t); ok {
		h.uid, h.gid = int(st.Uid), int(st.Gid)
	}
	switch {
	case fi.IsDir():
		h.name += "/"
		h.mode |= unix.S_IFDIR
		h.typeflag = '5'
		return tarsum(h, nil)
	case fi.Mode()&fs.ModeSymlink != 0:
		h.mode |= unix.S_IFLNK
		h.typeflag = '2'
		if h.linkname, err = os.Readlink(host); err != nil {
			return "", err
		}
		return tarsum(h, nil)
	case fi.Mode().IsRegular():
		h.mode |= unix.S_IFREG
		h.typeflag, h.size = '0', fi.Size()
		f, err := os.Open(host)
		if err != nil {
			return "", err
		}
		defer f.Close()
		return tarsum(h, f)
	default:
		return tarsum(h, nil)
	}
}
