package buildcontext

import (
	"os"
	"path/filepath"
	"sort"
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
		m, _ := filepath.Glob(filepath.Join(cacheDir, "*.gob"))
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
