package exec

import (
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	securejoin "github.com/cyphar/filepath-securejoin"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/sandbox"
)

// mountPoint is where one of a RUN step's mounts goes in its root
// filesystem: a directory, or a file for a bind mount of a file (a
// secret's, or a bind mount's source that is a file).
type mountPoint struct {
	target string
	file   bool
	// what names the mount in messages.
	what string
}

// mountPoints lists where a step's mounts and its secrets' files go.
func mountPoints(ms []specs.Mount, secrets []sandbox.Secret, agents []sandbox.Agent) []mountPoint {
	var out []mountPoint
	for _, m := range ms {
		file := false
		if m.Type == "bind" {
			if fi, err := os.Stat(m.Source); err == nil && !fi.IsDir() {
				file = true
			}
		}
		out = append(out, mountPoint{target: m.Destination, file: file, what: "mount target " + m.Destination})
	}
	for _, s := range secrets {
		if s.Target != "" {
			out = append(out, mountPoint{target: s.Target, file: true, what: "secret target " + s.Target})
		}
	}
	for _, a := range agents {
		out = append(out, mountPoint{target: a.Target, file: true, what: "ssh target " + a.Target})
	}
	return out
}

// stubs are the mount points a step's mounts needed created in its root
// filesystem (the overlay's merged view), and the directories above them
// that creating them copied up into the upper directory. As BuildKit's
// mount stubs, they are removed from the upper directory once the step
// ended, and the directories that stay get their times back, so that a
// mount point made only for the step never shows up in its layer.
//
// The step may have replaced any of them, or a directory above them, with
// a symlink to anywhere, the host included: the removal works through an
// os.Root on the upper directory, which no path leaves, and leaves alone
// any path with a symlink on its way.
type stubs struct {
	upper string
	// created are the paths made, relative to the root, parents first.
	created []stub
	// dirs are the directories on the way to them that were there
	// before, by path relative to the root.
	dirs map[string]*dirState
}

type stub struct {
	rel  string
	file bool
}

// dirState is a directory above a stub as it was.
type dirState struct {
	// inUpper is whether the upper directory held it before the stubs
	// were made; if not, making them copied it up.
	inUpper  bool
	mode     fs.FileMode
	uid, gid uint32
	// before are its times before the stubs were made, after those once
	// they were.
	before, after times
}

type times struct{ atime, mtime time.Time }

func timesOf(fi fs.FileInfo) times {
	st := fi.Sys().(*syscall.Stat_t)
	return times{atime: time.Unix(st.Atim.Unix()), mtime: time.Unix(st.Mtim.Unix())}
}

// makeStubs creates under root the mount points of ps that are missing: a
// directory, or an empty file for a file's mount. upper is the overlay's
// upper directory, which receives them. A target that resolves to the
// root, or with a file where a directory is needed (or a directory where
// a file is), is refused. On an error, the stubs returned hold what was
// made, for remove.
func makeStubs(root, upper string, ps []mountPoint) (*stubs, error) {
	s := &stubs{upper: upper, dirs: map[string]*dirState{}}
	if len(ps) == 0 {
		return s, nil
	}
	r, err := os.OpenRoot(root)
	if err != nil {
		return s, err
	}
	defer r.Close()
	u, err := os.OpenRoot(upper)
	if err != nil {
		return s, err
	}
	defer u.Close()
	for _, p := range ps {
		// Resolved in the root as runc resolves it: the image's own
		// symlinks (/var/run -> /run) lead where the mount goes.
		host, err := securejoin.SecureJoin(root, p.target)
		if err != nil {
			return s, err
		}
		rel, err := filepath.Rel(root, host)
		if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
			return s, errdefs.InvalidArgument("%s resolves to the root", p.what)
		}
		parts := strings.Split(rel, string(filepath.Separator))
		// The directories there before on the way to the stubs made
		// for p, as they were.
		var above []string
		made := false
		for i := range parts {
			q := filepath.Join(parts[:i+1]...)
			last := i == len(parts)-1
			fi, err := r.Lstat(q)
			if err == nil {
				switch {
				case !last && !fi.IsDir():
					return s, errdefs.InvalidArgument("%s: /%s is not a directory", p.what, q)
				case last && fi.IsDir() == p.file:
					return s, errdefs.InvalidArgument("%s: a %s cannot be mounted on a %s", p.what, kind(p.file), kind(!fi.IsDir()))
				}
				if _, ok := s.dirs[q]; !ok && !last && !s.made(q) {
					_, uerr := u.Lstat(q)
					sys := fi.Sys().(*syscall.Stat_t)
					s.dirs[q] = &dirState{inUpper: uerr == nil, mode: fi.Mode(), uid: sys.Uid, gid: sys.Gid, before: timesOf(fi)}
					above = append(above, q)
				}
				continue
			}
			if !errors.Is(err, fs.ErrNotExist) {
				return s, errdefs.InvalidArgument("%s: /%s: %v", p.what, q, unwrapPath(err))
			}
			if last && p.file {
				f, err := r.OpenFile(q, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
				if err != nil {
					return s, errdefs.InvalidArgument("%s: creating it: %v", p.what, unwrapPath(err))
				}
				f.Close()
			} else if err := r.Mkdir(q, 0o755); err != nil {
				return s, errdefs.InvalidArgument("%s: creating /%s: %v", p.what, q, unwrapPath(err))
			}
			s.created = append(s.created, stub{rel: q, file: last && p.file})
			made = true
		}
		if !made {
			for _, q := range above {
				delete(s.dirs, q)
			}
		}
	}
	for q, d := range s.dirs {
		if fi, err := r.Lstat(q); err == nil {
			d.after = timesOf(fi)
		}
	}
	return s, nil
}

// made reports whether q is one of the stubs.
func (s *stubs) made(q string) bool {
	return slices.ContainsFunc(s.created, func(c stub) bool { return c.rel == q })
}

// kind names a file or a directory, for messages.
func kind(file bool) string {
	if file {
		return "file"
	}
	return "directory"
}

// unwrapPath drops the host path of an error, which names the builder's
// state directory.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// remove takes the stubs out of the upper directory: the mount points
// made, where the step left them as they were (an empty file, a directory
// holding nothing), and the directories above them copied up only for
// them (still empty there, not opaque, mode and owner unchanged). A
// directory above them that stays gets its times back: those from before
// the stubs when the step did not change them, else those the step left.
func (s *stubs) remove() {
	if len(s.created) == 0 {
		return
	}
	u, err := os.OpenRoot(s.upper)
	if err != nil {
		return
	}
	defer u.Close()
	left := map[string]times{}
	for q := range s.dirs {
		if fi, err := u.Lstat(q); err == nil && plain(u, q) {
			left[q] = timesOf(fi)
		}
	}
	for i := len(s.created) - 1; i >= 0; i-- {
		c := s.created[i]
		if !plain(u, c.rel) {
			continue
		}
		fi, err := u.Lstat(c.rel)
		if err != nil || c.file && (!fi.Mode().IsRegular() || fi.Size() != 0) || !c.file && !fi.IsDir() {
			continue // the step's own, in place of the stub
		}
		u.Remove(c.rel) // fails, as it should, for a directory the step wrote in
	}
	// Deepest first: a parent empties once its children go.
	dirs := slices.Collect(maps.Keys(s.dirs))
	slices.SortFunc(dirs, func(a, b string) int {
		return strings.Count(b, string(filepath.Separator)) - strings.Count(a, string(filepath.Separator))
	})
	for _, q := range dirs {
		d := s.dirs[q]
		t, ok := left[q]
		if !ok {
			continue // gone, or behind a symlink: the step's
		}
		if !d.inUpper && unchangedCopy(u, q, d) && u.Remove(q) == nil {
			continue
		}
		if t.mtime.Equal(d.after.mtime) {
			t = d.before
		}
		u.Chtimes(q, t.atime, t.mtime)
	}
}

// plain reports whether no symlink lies on the way to rel in root, rel
// itself included.
func plain(root *os.Root, rel string) bool {
	for q := rel; q != "." && q != string(filepath.Separator); q = filepath.Dir(q) {
		fi, err := root.Lstat(q)
		if err != nil || fi.Mode()&fs.ModeSymlink != 0 {
			return false
		}
	}
	return true
}

// unchangedCopy reports whether the upper directory's q is what copying
// it up for a stub left: a directory with its mode and owner, not opaque
// (which would hide its lower directories' files once removed).
func unchangedCopy(u *os.Root, q string, d *dirState) bool {
	fi, err := u.Lstat(q)
	if err != nil || !fi.IsDir() || fi.Mode() != d.mode {
		return false
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != d.uid || st.Gid != d.gid {
		return false
	}
	f, err := u.Open(q)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, x := range []string{"trusted.overlay.opaque", "user.overlay.opaque"} {
		if n, err := unix.Fgetxattr(int(f.Fd()), x, make([]byte, 8)); err == nil && n > 0 {
			return false
		}
	}
	return true
}
