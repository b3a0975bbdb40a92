package buildctx

import (
	"errors"
	"io"
	"io/fs"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/errdefs"
)

func file(p, body string) *builderv1.FileEntry {
	return &builderv1.FileEntry{Path: p, Mode: 0o100644, Size: int64(len(body)), Digest: string(digest.FromString(body))}
}

func link(p, target string) *builderv1.FileEntry {
	return &builderv1.FileEntry{Path: p, Mode: 0o120777, LinkTarget: target}
}

func TestTraversalNamesAreRefused(t *testing.T) {
	for _, name := range []string{"../x", "/etc/passwd", "a/../../b", "a//b", "./a", "a/.", "", "a\x00b"} {
		_, err := New([]*builderv1.FileEntry{file(name, "x")})
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("New with path %q: err = %v, want INVALID_ARGUMENT", name, err)
		}
	}
	if _, err := New([]*builderv1.FileEntry{{Path: "f", Mode: 0o100644, Digest: "sha256:../../x"}}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("a malformed digest: err = %v, want INVALID_ARGUMENT", err)
	}
}

func TestResolveStaysInsideTheContext(t *testing.T) {
	c, err := New([]*builderv1.FileEntry{
		file("dir/f", "f"),
		link("abs", "/dir/f"),
		link("rel", "dir/f"),
		link("out", "/etc/shadow"),
		link("up", "../../../dir/f"),
		link("loop", "loop"),
	})
	if err != nil {
		t.Fatal(err)
	}
	for src, want := range map[string]string{"dir/f": "dir/f", "abs": "dir/f", "rel": "dir/f", "up": "dir/f", "./dir/../dir/f": "dir/f", "dir": "dir"} {
		e, err := c.Resolve(src)
		if err != nil || e.Path != want {
			t.Errorf("Resolve(%q) = %v, %v; want %s", src, e, err, want)
		}
	}
	for src, kind := range map[string]error{"out": errdefs.ErrNotFound, "../x": errdefs.ErrInvalidArgument, "dir/../../x": errdefs.ErrInvalidArgument, "loop": errdefs.ErrInvalidArgument, "nope": errdefs.ErrNotFound} {
		if _, err := c.Resolve(src); err == nil || !errors.Is(err, kind) {
			t.Errorf("Resolve(%q) err = %v, want %v", src, err, kind)
		}
	}
}

// An exception under an excluded directory keeps the file, in the
// directory Docker's context tar implies (mode 0755), not an orphan that
// COPY . and Resolve cannot reach.
func TestIgnoreKeepsExceptionsUnderExcludedDirectories(t *testing.T) {
	c, err := New([]*builderv1.FileEntry{{Path: "docs", Mode: 0o040700}, file("docs/README.md", "r"), file("docs/secret", "s")})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Ignore([]string{"docs", "!docs/README.md"}); err != nil {
		t.Fatal(err)
	}
	var walked []string
	c.Walk(".", func(e *Entry) error { walked = append(walked, e.Path); return nil })
	if want := []string{".", "docs", "docs/README.md"}; !slices.Equal(walked, want) {
		t.Errorf("after Ignore, Walk visits %q, want %q", walked, want)
	}
	if e, ok := c.Lookup("docs"); !ok || e.Mode != fs.ModeDir|0o755 {
		t.Errorf("docs after Ignore = %v, want a 0755 directory", e)
	}
}

func TestStoreVerifiesContent(t *testing.T) {
	s, err := NewStore(t.TempDir(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	d := digest.FromString("hello")
	w, _ := s.NewWriter(d, 5)
	io.WriteString(w, "hellO")
	if err := w.Commit(); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("committing the wrong bytes: err = %v, want INVALID_ARGUMENT", err)
	}
	if m := s.Missing([]digest.Digest{d}); len(m) != 1 {
		t.Fatal("wrong bytes became visible")
	}
	w, _ = s.NewWriter(d, 5)
	io.WriteString(w, "hello")
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if m := s.Missing([]digest.Digest{d}); len(m) != 0 {
		t.Fatalf("Missing after commit = %v", m)
	}
	f, _ := s.Open(d)
	b, _ := io.ReadAll(f)
	f.Close()
	if string(b) != "hello" {
		t.Errorf("content = %q", b)
	}
	if _, err := s.NewWriter(digest.Digest("sha256:"+strings.Repeat("z", 64)), SizeUnknown); !errdefs.IsInvalidArgument(err) {
		t.Errorf("a malformed digest: err = %v", err)
	}
}

func TestTrimKeepsHeldContent(t *testing.T) {
	s, _ := NewStore(t.TempDir(), 4)
	var ds []digest.Digest
	for _, body := range []string{"aaaa", "bbbb", "cccc"} {
		d := digest.FromString(body)
		w, _ := s.NewWriter(d, int64(len(body)))
		io.WriteString(w, body)
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	release := s.Hold(ds[:1])
	if _, err := s.Trim(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(s.Missing(ds[:1])) != 0 {
		t.Error("Trim removed content a build holds")
	}
	if len(s.Missing(ds)) != 2 {
		t.Errorf("after Trim to 4 bytes, %d of 3 contents are missing, want 2", len(s.Missing(ds)))
	}
	// Two builds hold it: it stays until both let go.
	other := s.Hold(ds[:2])
	release()
	add := func(body string) {
		w, _ := s.NewWriter(digest.FromString(body), int64(len(body)))
		io.WriteString(w, body)
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Trim(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	add("dddd")
	if len(s.Missing(ds[:1])) != 0 {
		t.Error("Trim removed content one of two builds still holds")
	}
	other()
	add("eeee")
	if len(s.Missing(ds[:1])) != 1 {
		t.Error("Trim kept content no build holds any more")
	}
}

func TestStoreKeepsFinishedTransfersAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	s, _ := NewStore(dir, 1<<30)
	put := func(b *Batch, body string) digest.Digest {
		d := digest.FromString(body)
		w, _ := b.NewWriter(d, int64(len(body)))
		io.WriteString(w, body)
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		return d
	}
	done := s.NewBatch()
	small, large := put(done, "small"), put(done, strings.Repeat("L", packLimit+1))
	if err := done.Close(); err != nil {
		t.Fatal(err)
	}
	unfinished := put(s.NewBatch(), "lost with its transfer")

	s, err := NewStore(dir, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if m := s.Missing([]digest.Digest{small, large}); len(m) != 0 {
		t.Errorf("after a restart, finished contents are missing: %v", m)
	}
	if m := s.Missing([]digest.Digest{unfinished}); len(m) != 1 {
		t.Error("a transfer that never finished survived the restart")
	}
	f, err := s.Open(small)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(f)
	f.Close()
	if string(b) != "small" {
		t.Errorf("content read back = %q", b)
	}
}

func TestWriterHoldsContentToItsDeclaredSize(t *testing.T) {
	s, err := NewStore(t.TempDir(), 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	d := digest.FromString("hello")
	w, _ := s.NewWriter(d, 5)
	if _, err := io.WriteString(w, "hello"); err != nil {
		t.Fatal(err)
	}
	// A client that keeps streaming past the declared size is stopped at
	// the first byte over, not once it filled the disk.
	if _, err := w.Write(make([]byte, 1<<20)); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "more bytes than the 5") {
		t.Errorf("writing past the declared size: err = %v, want INVALID_ARGUMENT naming the size", err)
	}
	w.Close()

	short, _ := s.NewWriter(d, 6)
	io.WriteString(short, "hello")
	if err := short.Commit(); !errdefs.IsInvalidArgument(err) {
		t.Errorf("committing fewer bytes than declared: err = %v, want INVALID_ARGUMENT", err)
	}
}
