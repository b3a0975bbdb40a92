package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	securejoin "github.com/cyphar/filepath-securejoin"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/lib/errdefs"
)

// Secret is a build secret given to one process (RUN
// --mount=type=secret): as the read-only file Target, as the variable Env,
// or both. Its value stays in memory and in a tmpfs the runner mounts for
// the run and unmounts after it: never on disk, and never in the upper
// directory, where the runner removes the mount point it created for the
// file.
type Secret struct {
	// Target is the file's absolute path in the container; empty for a
	// variable only.
	Target string
	// Env is the variable's name; empty for a file only.
	Env  string
	Data []byte
	// Mode is the file's permission bits; UID and GID its owner.
	Mode     fs.FileMode
	UID, GID uint32
}

// secretsTmpfs mounts a tmpfs on the run's bundle directory, which then
// holds its config (the secrets' variables are in the process's
// environment) and the secrets' files, and writes the files. It returns
// the bind mounts that put them at their targets, read-only. The caller
// unmounts the bundle once runc deleted the container.
func secretsTmpfs(bundle string, secrets []Secret) ([]specs.Mount, error) {
	size := int64(64 << 20)
	for _, s := range secrets {
		size += int64(len(s.Data)) + 4096
	}
	opts := "mode=0700,size=" + strconv.FormatInt(size, 10)
	if err := unix.Mount("tmpfs", bundle, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, opts); err != nil {
		return nil, fmt.Errorf("mounting the secrets' tmpfs: %w", err)
	}
	var mounts []specs.Mount
	for i, s := range secrets {
		if s.Target == "" {
			continue
		}
		name := filepath.Join(bundle, "secret-"+strconv.Itoa(i))
		f, err := os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return nil, err
		}
		_, err = f.Write(s.Data)
		if err == nil {
			err = f.Chown(int(s.UID), int(s.GID))
		}
		if err == nil {
			// After chown, which clears the setuid and setgid bits.
			err = f.Chmod(s.Mode.Perm() | s.Mode&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky))
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("writing a secret's file: %w", err)
		}
		mounts = append(mounts, specs.Mount{Destination: s.Target, Type: "bind", Source: name,
			Options: []string{"rbind", "rprivate", "ro", "nosuid", "nodev", "noexec"}})
	}
	return mounts, nil
}

// withSecretEnv returns env with the secrets' variables, which replace
// variables of the same name.
func withSecretEnv(env []string, secrets []Secret) []string {
	out := env
	for _, s := range secrets {
		if s.Env == "" {
			continue
		}
		kept := out[:0:0]
		for _, kv := range out {
			if k, _, _ := strings.Cut(kv, "="); k != s.Env {
				kept = append(kept, kv)
			}
		}
		out = append(kept, s.Env+"="+string(s.Data))
	}
	return out
}

// stub is a mount point the runner created in the root filesystem (the
// overlay's merged view) for a secret's file, so that it can remove what
// it created after the run: the mount target, and directories such as
// /run/secrets, must not show up in the step's layer.
type stub struct {
	// created are the paths the runner created, relative to the root,
	// outermost first; the last is the file.
	created []string
	// ancestors are the directories above the outermost created path,
	// innermost first, as they were before: creating a path in one copies
	// it (and its own ancestors) up into the upper directory.
	ancestors []ancestor
}

type ancestor struct {
	rel          string
	inUpper      bool
	mode         uint32
	uid, gid     uint32
	atime, mtime time.Time
}

// makeStub creates the mount point of a secret's file at target under
// root unless it exists; nil when it does. A target whose path has a file
// where a directory is needed, or that is a directory, is refused: the
// bind mount of a file could not be made there.
func makeStub(rootDir, upper, target string) (*stub, error) {
	root, err := os.OpenRoot(rootDir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	rel := strings.TrimPrefix(path.Clean("/"+target), "/")
	parts := prefixes(rel)
	missing := -1
	for i, p := range parts {
		fi, err := root.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			missing = i
			break
		}
		if err != nil {
			return nil, errdefs.InvalidArgument("mount target %s: %v", target, err)
		}
		if i < len(parts)-1 && !fi.IsDir() {
			return nil, errdefs.InvalidArgument("mount target %s: /%s is not a directory", target, p)
		}
		if i == len(parts)-1 && fi.IsDir() {
			return nil, errdefs.InvalidArgument("mount target %s is a directory in the image", target)
		}
	}
	if missing < 0 {
		return nil, nil
	}
	st := &stub{created: parts[missing:]}
	for dir := path.Dir(parts[missing]); dir != "."; dir = path.Dir(dir) {
		fi, err := root.Stat(dir)
		if err != nil {
			return nil, err
		}
		sys := fi.Sys().(*syscall.Stat_t)
		a := ancestor{rel: dir, mode: sys.Mode, uid: sys.Uid, gid: sys.Gid,
			atime: time.Unix(sys.Atim.Unix()), mtime: time.Unix(sys.Mtim.Unix())}
		if upper != "" {
			if host, err := securejoin.SecureJoin(upper, dir); err == nil {
				_, err := os.Lstat(host)
				a.inUpper = err == nil
			}
		}
		st.ancestors = append(st.ancestors, a)
	}
	if err := root.MkdirAll(path.Dir(rel), 0o755); err != nil {
		return nil, fmt.Errorf("creating the mount point of %s: %w", target, err)
	}
	f, err := root.OpenFile(rel, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("creating the mount point of %s: %w", target, err)
	}
	return st, f.Close()
}

// remove removes what makeStub created, as long as the step left it as it
// was (an empty file, directories holding nothing else), and gives the
// directories above it back their state: an ancestor the stub alone
// copied up into the upper directory leaves it when it is still the
// unchanged, empty copy; one that stays gets its times back.
func (s *stub) remove(rootDir, upper string) error {
	root, err := os.OpenRoot(rootDir)
	if err != nil {
		return err
	}
	defer root.Close()
	for i := len(s.created) - 1; i >= 0; i-- {
		p := s.created[i]
		fi, err := root.Lstat(p)
		if err != nil {
			return nil
		}
		if i == len(s.created)-1 && (!fi.Mode().IsRegular() || fi.Size() != 0) || i < len(s.created)-1 && !fi.IsDir() {
			return nil // the step replaced the mount point: its own file
		}
		if err := root.Remove(p); err != nil {
			return nil // a directory the step put something in
		}
	}
	for _, a := range s.ancestors {
		if upper != "" && !a.inUpper && unchangedCopy(upper, a) {
			host, err := securejoin.SecureJoin(upper, a.rel)
			if err == nil && os.Remove(host) == nil {
				continue
			}
		}
		return root.Chtimes(a.rel, a.atime, a.mtime)
	}
	return nil
}

// unchangedCopy reports whether the upper directory's copy of a is an
// empty directory with a's mode and owner, and not opaque: what copying it
// up for a child left, which the lower directory stands for.
func unchangedCopy(upper string, a ancestor) bool {
	host, err := securejoin.SecureJoin(upper, a.rel)
	if err != nil {
		return false
	}
	var st unix.Stat_t
	if err := unix.Lstat(host, &st); err != nil || st.Mode != a.mode || st.Uid != a.uid || st.Gid != a.gid {
		return false
	}
	for _, x := range []string{"trusted.overlay.opaque", "user.overlay.opaque"} {
		if n, err := unix.Lgetxattr(host, x, make([]byte, 8)); err == nil && n > 0 {
			return false
		}
	}
	entries, err := os.ReadDir(host)
	return err == nil && len(entries) == 0
}

// prefixes returns "a", "a/b", "a/b/c" for "a/b/c".
func prefixes(rel string) []string {
	var out []string
	for p := rel; p != "." && p != "/" && p != ""; p = path.Dir(p) {
		out = append([]string{p}, out...)
	}
	return out
}
