package layer

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// tree describes every entry under dir (type, mode, owner, content or link
// target, device numbers, user xattrs), keyed by path: the facts a user of
// the filesystem sees, for comparing two trees.
func tree(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return err
		}
		desc := fmt.Sprintf("mode=%o uid=%d gid=%d", st.Mode, st.Uid, st.Gid)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" sha=%x", sha256.Sum256(b))
		case unix.S_IFLNK:
			target, _ := os.Readlink(path)
			desc += " -> " + target
		case unix.S_IFCHR, unix.S_IFBLK:
			desc += fmt.Sprintf(" dev=%d,%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
		if rel != "." {
			xattrs, err := listXattrs(path)
			if err != nil {
				return err
			}
			var keys []string
			for k, v := range xattrs {
				if strings.HasPrefix(k, "user.") && !strings.HasPrefix(k, "user.overlay.") {
					keys = append(keys, k+"="+v)
				}
			}
			sort.Strings(keys)
			if len(keys) > 0 {
				desc += " xattrs=" + strings.Join(keys, ",")
			}
		}
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffTrees(a, b map[string]string) []string {
	var d []string
	for k, v := range a {
		if w, ok := b[k]; !ok {
			d = append(d, fmt.Sprintf("%s: only in first (%s)", k, v))
		} else if v != w {
			d = append(d, fmt.Sprintf("%s: %s != %s", k, v, w))
		}
	}
	for k, v := range b {
		if _, ok := a[k]; !ok {
			d = append(d, fmt.Sprintf("%s: only in second (%s)", k, v))
		}
	}
	sort.Strings(d)
	return d
}
