package layertest

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// Host is a directory that stands for the builder's host: the cases aim
// their symlinks, hard links and names at it, and Check asserts that no
// extraction changed it. It holds an empty sentinel directory and a few
// files whose content and mode must stay as they are:
//
//	sentinel/                        0755, must stay empty
//	secret                           0400
//	perm400                          0400
//	also-exists-outside-root         0640
//	etc/passwd, etc/emptied          0644
type Host struct {
	// Dir is the host directory, an absolute path outside every root the
	// cases are extracted into.
	Dir    string
	before Tree
}

// NewHost makes the host directory dir (which must not exist) and records
// what it holds.
func NewHost(t testing.TB, dir string) *Host {
	t.Helper()
	dir, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		name, body string
		mode       os.FileMode
	}{
		{"secret", "host: secret\n", 0o400},
		{"perm400", "host: perm400\n", 0o400},
		{"also-exists-outside-root", "host: also exists\n", 0o640},
		{"etc/passwd", "host: root:x:0:0:root:/root:/bin/sh\n", 0o644},
		{"etc/emptied", "host: not empty\n", 0o644},
	} {
		p := filepath.Join(dir, f.name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f.body), f.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, f.mode); err != nil { // whatever the umask
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "sentinel"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "sentinel"), 0o755); err != nil {
		t.Fatal(err)
	}
	h := &Host{Dir: dir}
	if h.before, err = ReadTree(dir); err != nil {
		t.Fatal(err)
	}
	return h
}

// Check fails the test if anything under the host directory changed since
// NewHost: an entry added, removed or replaced, a file's content, mode or
// owner, a symlink's target.
func (h *Host) Check(t testing.TB) {
	t.Helper()
	for _, d := range h.Changes() {
		t.Errorf("the host directory changed: %s", d)
	}
}

// Changes lists what changed under the host directory since NewHost.
func (h *Host) Changes() []string {
	now, err := ReadTree(h.Dir)
	if err != nil {
		return []string{err.Error()}
	}
	var d []string
	for p, n := range h.before {
		if m, ok := now[p]; !ok {
			d = append(d, p+" is gone")
		} else if m != n {
			d = append(d, fmt.Sprintf("%s was %+v, is %+v", p, n, m))
		}
	}
	for p, n := range now {
		if _, ok := h.before[p]; !ok {
			d = append(d, fmt.Sprintf("%s appeared (%v)", p, n.Mode))
		}
	}
	sort.Strings(d)
	return d
}
