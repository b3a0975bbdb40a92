package layertest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Node is what a root filesystem holds at one path.
type Node struct {
	// Mode has the type bits and the permission bits, setuid, setgid and
	// sticky included.
	Mode     fs.FileMode
	UID, GID int
	// Sum is the hex SHA-256 of a regular file's content.
	Sum string
	// Target is a symlink's target.
	Target string
	// Ino tells hard links apart: two paths with the same Ino are one file.
	Ino uint64
	// Nlink is the number of hard links (0 when unknown).
	Nlink uint64
}

// Tree is a root filesystem: every path in it, relative to its root
// ("etc/passwd"), "/"-separated, the root itself left out.
type Tree map[string]Node

// ReadTree lists the root filesystem at dir without following any symlink.
func ReadTree(dir string) (Tree, error) {
	t := Tree{}
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err == unix.ENOENT {
			// An overlay lists the whiteout of nothing that a directory
			// of one layer only holds, but there is nothing there.
			return nil
		} else if err != nil {
			return &fs.PathError{Op: "lstat", Path: p, Err: err}
		}
		n := Node{Mode: unixMode(st.Mode), UID: int(st.Uid), GID: int(st.Gid), Ino: st.Ino, Nlink: uint64(st.Nlink)}
		switch {
		case n.Mode.IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			n.Sum = sum(string(b))
		case n.Mode&fs.ModeSymlink != 0:
			if n.Target, err = os.Readlink(p); err != nil {
				return err
			}
		}
		t[filepath.ToSlash(rel)] = n
		return nil
	})
	return t, err
}

// Listing lists every entry under dir, one line each in walk order, for
// comparing two trees where times matter too (ReadTree leaves them out):
// path, type and mode bits, owner, mtime to the precision given, size,
// and a symlink's target or a regular file's content SHA-256.
func Listing(t testing.TB, dir string, mtime time.Duration) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		mt := time.Unix(st.Mtim.Sec, st.Mtim.Nsec).Truncate(mtime).UnixNano()
		line := fmt.Sprintf("%s mode %o owner %d:%d mtime %d size %d", strings.TrimPrefix(p, dir), st.Mode, st.Uid, st.Gid, mt, st.Size)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			line += " -> " + target
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			line += " " + sum(string(b))
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ReportPath is where a RUN step writes what ReportScript prints.
const ReportPath = "/.layertest-report"

// ReportScript is a busybox shell script that lists the root filesystem a
// container sees, on stdout, in the form ParseReport reads: it is how a
// test looks at an image from inside a RUN step. /proc, /sys, /dev, /bin
// and ReportPath are left out.
const ReportScript = `find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /bin -o -path ` + ReportPath + ` \) -prune -o -print |
while IFS= read -r p; do
	set -- $(stat -c '%i %f %u %g' "$p")
	s=- l=
	if [ -L "$p" ]; then l=$(readlink "$p"); elif [ -f "$p" ]; then s=$(sha256sum <"$p"); s=${s%% *}; fi
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$s" "$p" "$l"
done
`

// ParseReport reads what ReportScript printed.
func ParseReport(b []byte) (Tree, error) {
	t := Tree{}
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 7 {
			return nil, fmt.Errorf("report line %q: %d fields, want 7", line, len(f))
		}
		ino, err1 := strconv.ParseUint(f[0], 10, 64)
		mode, err2 := strconv.ParseUint(f[1], 16, 32)
		uid, err3 := strconv.Atoi(f[2])
		gid, err4 := strconv.Atoi(f[3])
		for _, err := range []error{err1, err2, err3, err4} {
			if err != nil {
				return nil, fmt.Errorf("report line %q: %v", line, err)
			}
		}
		p := strings.TrimPrefix(path.Clean(f[5]), "/")
		if p == "" {
			continue // the root
		}
		n := Node{Mode: unixMode(uint32(mode)), UID: uid, GID: gid, Ino: ino, Target: f[6]}
		if f[4] != "-" {
			n.Sum = f[4]
		}
		t[p] = n
	}
	return t, nil
}

func unixMode(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	switch m & unix.S_IFMT {
	case unix.S_IFDIR:
		mode |= fs.ModeDir
	case unix.S_IFLNK:
		mode |= fs.ModeSymlink
	case unix.S_IFCHR:
		mode |= fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		mode |= fs.ModeDevice
	case unix.S_IFIFO:
		mode |= fs.ModeNamedPipe
	case unix.S_IFSOCK:
		mode |= fs.ModeSocket
	}
	if m&unix.S_ISUID != 0 {
		mode |= fs.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		mode |= fs.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

func sum(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// maxLinks bounds symlink resolution, as the kernel's ELOOP does.
const maxLinks = 40

// Resolve resolves p as a process whose root is the tree's root does:
// every symlink on the way, the last one too when follow is set, inside
// the root ("/" and ".." stop at the root). It returns the path reached
// and whether something is there.
func (t Tree) Resolve(p string, follow bool) (string, bool) {
	rest := strings.Split(strings.TrimPrefix(path.Clean("/"+p), "/"), "/")
	cur := ""
	for links := 0; len(rest) > 0; {
		el := rest[0]
		rest = rest[1:]
		switch el {
		case "", ".":
			continue
		case "..":
			if cur = path.Dir(cur); cur == "." {
				cur = ""
			}
			continue
		}
		next := path.Join(cur, el)
		n, ok := t[next]
		if !ok {
			return path.Join(append([]string{next}, rest...)...), false
		}
		if n.Mode&fs.ModeSymlink != 0 && (len(rest) > 0 || follow) {
			if links++; links > maxLinks {
				return next, false
			}
			if strings.HasPrefix(n.Target, "/") {
				cur = ""
			}
			rest = append(strings.Split(n.Target, "/"), rest...)
			continue
		}
		if len(rest) > 0 && !n.Mode.IsDir() {
			return path.Join(append([]string{next}, rest...)...), false
		}
		cur = next
	}
	_, ok := t[cur]
	return cur, ok || cur == ""
}

// Check is one fact about a root filesystem. Its paths may hold the
// placeholders Expand replaces.
type Check struct {
	kind       string
	path, also string // also: the second path of SameFile and NotSameFile
	body       string
	mode       fs.FileMode
}

// IsFile: a process in the root reading path (symlinks followed inside the
// root) reads a regular file holding body.
func IsFile(path, body string) Check { return Check{kind: "file", path: path, body: body} }

// IsDir: path is, or resolves inside the root to, a directory.
func IsDir(path string) Check { return Check{kind: "dir", path: path} }

// IsSymlink: path itself (its parents resolved) is a symlink to target.
func IsSymlink(path, target string) Check { return Check{kind: "symlink", path: path, body: target} }

// Absent: nothing is at path (its parents resolved, the last element not
// followed).
func Absent(path string) Check { return Check{kind: "absent", path: path} }

// SameFile: path and other, both resolved inside the root, are one file
// (hard links of each other).
func SameFile(path, other string) Check { return Check{kind: "same", path: path, also: other} }

// NotSameFile: path and other both exist, resolved inside the root, and
// are different files.
func NotSameFile(path, other string) Check { return Check{kind: "notsame", path: path, also: other} }

// HasPerm: path, resolved inside the root, has exactly these permission
// bits (setuid, setgid and sticky included).
func HasPerm(path string, perm fs.FileMode) Check { return Check{kind: "perm", path: path, mode: perm} }

func (c Check) String() string {
	switch c.kind {
	case "file":
		return fmt.Sprintf("%s holds %q", c.path, c.body)
	case "dir":
		return c.path + " is a directory"
	case "symlink":
		return fmt.Sprintf("%s -> %s", c.path, c.body)
	case "absent":
		return c.path + " is absent"
	case "same":
		return fmt.Sprintf("%s is the same file as %s", c.path, c.also)
	case "notsame":
		return fmt.Sprintf("%s is not the same file as %s", c.path, c.also)
	case "perm":
		return fmt.Sprintf("%s has mode %v", c.path, c.mode)
	}
	return c.kind
}

// Verify returns one error per check the tree fails.
func (t Tree) Verify(checks []Check) []error {
	var errs []error
	for _, c := range checks {
		if err := t.verify(c); err != nil {
			errs = append(errs, fmt.Errorf("want %v: %v", c, err))
		}
	}
	return errs
}

func (t Tree) verify(c Check) error {
	resolved := func(p string) (Node, error) {
		at, ok := t.Resolve(p, true)
		if !ok {
			return Node{}, fmt.Errorf("%s resolves to %s, which does not exist", p, at)
		}
		if at == "" {
			return Node{Mode: fs.ModeDir}, nil
		}
		return t[at], nil
	}
	switch c.kind {
	case "file":
		n, err := resolved(c.path)
		if err != nil {
			return err
		}
		if !n.Mode.IsRegular() {
			return fmt.Errorf("it is %v", n.Mode)
		}
		if n.Sum != sum(c.body) {
			return fmt.Errorf("its content differs (sha256 %s)", n.Sum)
		}
	case "dir":
		n, err := resolved(c.path)
		if err != nil {
			return err
		}
		if !n.Mode.IsDir() {
			return fmt.Errorf("it is %v", n.Mode)
		}
	case "perm":
		n, err := resolved(c.path)
		if err != nil {
			return err
		}
		if got := n.Mode & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky); got != c.mode {
			return fmt.Errorf("it has %v", got)
		}
	case "symlink", "absent":
		at, ok := t.Resolve(c.path, false)
		if c.kind == "absent" {
			if ok {
				return fmt.Errorf("%s is there: %v", at, t[at].Mode)
			}
			return nil
		}
		n := t[at]
		if !ok || n.Mode&fs.ModeSymlink == 0 {
			return fmt.Errorf("%s is %v", at, n.Mode)
		}
		if n.Target != c.body {
			return fmt.Errorf("it points to %s", n.Target)
		}
	case "same", "notsame":
		a, err := resolved(c.path)
		if err != nil {
			return err
		}
		b, err := resolved(c.also)
		if err != nil {
			return err
		}
		if same := a.Ino == b.Ino && a.Ino != 0; same != (c.kind == "same") {
			return fmt.Errorf("inodes %d and %d", a.Ino, b.Ino)
		}
	}
	return nil
}
