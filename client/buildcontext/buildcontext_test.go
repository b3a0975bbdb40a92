package buildcontext

import (
	"maps"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
)

func write(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func paths(c *Context) []string {
	var out []string
	for _, e := range c.Entries {
		out = append(out, e.Path)
	}
	sort.Strings(out)
	return out
}

func TestWalkHonoursDockerignore(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, map[string]string{
		".dockerignore":    "secrets/\n*.log\n!keep.log\nbuild/Dockerfile\n",
		"Dockerfile":       "FROM scratch\n",
		"build/Dockerfile": "FROM busybox\n",
		"secrets/key":      "k",
		"a.log":            "x",
		"keep.log":         "y",
		"src/main.go":      "package main\n",
		"src/deep/x/y.txt": "y",
	})
	c, err := Walk(Options{Dir: dir, Dockerfile: "build/Dockerfile"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{".", ".dockerignore", "Dockerfile", "build", "build/Dockerfile", "keep.log", "src", "src/deep", "src/deep/x", "src/deep/x/y.txt", "src/main.go"}
	if diff := cmp.Diff(want, paths(c)); diff != "" {
		t.Errorf("Walk paths (-want +got):\n%s", diff)
	}
	for _, e := range c.Entries {
		if e.Path == "src/main.go" && e.Digest != string(digest.FromString("package main\n")) {
			t.Errorf("digest of src/main.go = %s", e.Digest)
		}
	}
}

func TestWalkCacheNoticesChanges(t *testing.T) {
	dir, cacheDir := t.TempDir(), t.TempDir()
	write(t, dir, map[string]string{"a": "one", "b": "two"})
	if _, err := Walk(Options{Dir: dir, CacheDir: cacheDir}); err != nil {
		t.Fatal(err)
	}
	// A cached digest is trusted while size, mtime, ctime and inode hold:
	// prove it is used by making the file unreadable (the walk only stats).
	if err := os.Chmod(filepath.Join(dir, "a"), 0); err != nil {
		t.Fatal(err)
	}
	if os.Getuid() == 0 {
		// root reads anything; check the cache file is there instead.
		m, _ := filepath.Glob(filepath.Join(cacheDir, "*"+cacheSuffix))
		if len(m) != 1 {
			t.Fatalf("cache files = %v, want one", m)
		}
	}
	if _, err := Walk(Options{Dir: dir, CacheDir: cacheDir}); err != nil {
		t.Fatalf("second walk: %v", err)
	}
	// A changed file is hashed again.
	os.Chmod(filepath.Join(dir, "a"), 0o644)
	write(t, dir, map[string]string{"b": "changed"})
	c, err := Walk(Options{Dir: dir, CacheDir: cacheDir})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range c.Entries {
		if e.Path == "b" && e.Digest != string(digest.FromString("changed")) {
			t.Errorf("after a change, b's digest = %s, want the new content's", e.Digest)
		}
	}
}

func TestSendSendsOnlyWhatIsAsked(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, map[string]string{"a": "one", "b": "two"})
	c, err := Walk(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	var got []*builderv1.FileData
	n, err := c.Send([]string{string(digest.FromString("two"))}, func(fd *builderv1.FileData) error {
		got = append(got, fd)
		return nil
	})
	if err != nil || n != 3 || len(got) != 1 || string(got[0].Data) != "two" || !got[0].Eof {
		t.Fatalf("Send = %d, %v, %v; want the 3 bytes of b in one message", n, got, err)
	}
	if _, err := c.Send([]string{string(digest.FromString("nope"))}, func(*builderv1.FileData) error { return nil }); err == nil {
		t.Error("Send of a digest the context does not hold succeeded")
	}
}

// Bytes is what Send sends for the digests asked (nothing when none are);
// UniqueBytes counts every content of the context once.
func TestBytesCountsEachContentOnce(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, map[string]string{"a": "one", "b": "two", "c": "two"})
	c, err := Walk(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	two := string(digest.FromString("two"))
	for _, tc := range []struct {
		digests []string
		want    int64
	}{{nil, 0}, {[]string{}, 0}, {[]string{two}, 3}, {[]string{two, two}, 3}} {
		if got := c.Bytes(tc.digests); got != tc.want {
			t.Errorf("Bytes(%v) = %d, want %d", tc.digests, got, tc.want)
		}
	}
	if got := c.UniqueBytes(); got != 6 || c.Size != 9 {
		t.Errorf("UniqueBytes = %d, Size = %d; want 6 and 9", got, c.Size)
	}
}

// The digest cache reads back what it wrote, and a file that is not whole
// (cut short, another format) is an empty cache, never a wrong digest.
func TestDigestCacheFile(t *testing.T) {
	entries := map[string]cachedDigest{
		"a":       {Key: statKey{Size: 3, Mtime: -1, Ctime: 1 << 62, Ino: 7}, Digest: digest.FromString("one")},
		"dir/b c": {Key: statKey{Size: 0, Mtime: 5, Ctime: 6, Ino: 1 << 63}, Digest: digest.FromString("")},
	}
	b := encodeCache(entries)
	got, ok := decodeCache(b)
	if !ok || !maps.Equal(got, entries) {
		t.Fatalf("decodeCache(encodeCache(%v)) = %v, %v", entries, got, ok)
	}
	for i := range len(b) {
		if got, ok := decodeCache(b[:i]); ok {
			t.Fatalf("decodeCache of the first %d of %d bytes = %v, want not ok", i, len(b), got)
		}
	}
	if _, ok := decodeCache(append(b, 0)); ok {
		t.Error("decodeCache with a byte past the end is ok, want not")
	}
	if _, ok := decodeCache([]byte("\x0f\xff\x83\x04\x01\x02\xff\x84")); ok {
		t.Error("decodeCache of a gob file is ok, want not")
	}
}

// Each entry carries its file's type, mode bits, owner, size, mtime and
// link target as lstat reports them; sockets, fifos and devices are left
// out.
func TestWalkEntriesAreTheFilesMetadata(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, map[string]string{"bin/tool": "#!/bin/sh\n", "dir/file": "data"})
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Chmod(filepath.Join(dir, "bin/tool"), 0o4755))
	must(os.Chmod(filepath.Join(dir, "dir"), 0o2750|os.ModeSetgid))
	must(os.Symlink("../dir/file", filepath.Join(dir, "bin/link")))
	must(syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644))
	c, err := Walk(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{".", "bin", "bin/link", "bin/tool", "dir", "dir/file"}
	if diff := cmp.Diff(want, paths(c)); diff != "" {
		t.Fatalf("Walk paths (-want +got):\n%s", diff)
	}
	for _, e := range c.Entries {
		p := filepath.Join(dir, e.GetPath())
		info, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := info.Sys().(*syscall.Stat_t)
		var size int64
		if info.Mode().IsRegular() {
			size = info.Size()
		}
		target, _ := os.Readlink(p)
		got := []any{e.GetMode(), e.GetUid(), e.GetGid(), e.GetSize(), e.GetMtimeUnixNano(), e.GetLinkTarget()}
		want := []any{unixMode(info.Mode()), st.Uid, st.Gid, size, info.ModTime().UnixNano(), target}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("entry %q (-lstat +walk):\n%s", e.GetPath(), diff)
		}
	}
}
