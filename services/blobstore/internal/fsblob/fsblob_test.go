package fsblob

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/blobstore/internal/blob"
	"github.com/strata-build/strata/services/blobstore/internal/blob/blobtest"
)

func TestConformance(t *testing.T) {
	blobtest.TestStore(t, func(t *testing.T) blob.Store {
		s, err := New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestDamage(t *testing.T) {
	blobtest.TestDamage(t, func(t *testing.T) (blob.Store, blobtest.Damage) {
		s, err := New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s, func(t *testing.T, d digest.Digest, off int64) { blobtest.FlipByte(t, s.blobPath(d), off) }
	})
}

// tree lists every path under root.
func tree(t *testing.T, root string) []string {
	var out []string
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		out = append(out, p)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestMalformedDigestTouchesNoPath checks that a digest such as
// "sha256:../../x" is refused before it becomes a path.
func TestMalformedDigestTouchesNoPath(t *testing.T) {
	parent := t.TempDir()
	root := filepath.Join(parent, "store")
	s, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	// What "sha256:../../x" would reach from blobs/sha256/.
	victim := filepath.Join(root, "x")
	if err := os.WriteFile(victim, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := tree(t, parent)
	ctx := context.Background()
	for _, bad := range blobtest.MalformedDigests {
		d := digest.Digest(bad)
		if err := s.Delete(ctx, d); !errdefs.IsInvalidArgument(err) {
			t.Errorf("Delete(%q) = %v, want invalid argument", bad, err)
		}
		if bad == "" {
			continue
		}
		w, err := s.NewWriter(ctx, blob.WriterOptions{Ref: "r", Expected: d, Size: -1})
		if err == nil {
			w.Close()
			t.Errorf("NewWriter(%q) succeeded, want invalid argument", bad)
		}
	}
	if diff := cmp.Diff(before, tree(t, parent)); diff != "" {
		t.Errorf("malformed digests changed the tree (-before +after):\n%s", diff)
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != "keep me" {
		t.Errorf("%s = %q, %v; want it untouched", victim, b, err)
	}
}

// TestResumeAcrossRestart checks that an upload survives the process: a new
// Store on the same root resumes it.
func TestResumeAcrossRestart(t *testing.T) {
	root := t.TempDir()
	ctx := context.Background()
	b := blobtest.Content(1, 3<<20)
	opts := blob.WriterOptions{Ref: "restart", Expected: digest.FromBytes(b), Size: int64(len(b))}
	s, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	w, err := s.NewWriter(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(b[:1<<20]); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	w, err = s2.NewWriter(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if w.Offset() != 1<<20 {
		t.Fatalf("resumed Offset() = %d, want %d", w.Offset(), 1<<20)
	}
	if _, err := w.Write(b[1<<20:]); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(ctx, ""); err != nil {
		t.Fatalf("Commit after restart = %v", err)
	}
}

// TestOneStorePerRoot: a second store on a root that one holds fails,
// naming the root, until the first is closed.
func TestOneStorePerRoot(t *testing.T) {
	root := t.TempDir()
	s, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	if s2, err := New(root); err == nil || !strings.Contains(err.Error(), root) || !strings.Contains(err.Error(), "in use by another process") {
		if s2 != nil {
			s2.Close()
		}
		t.Errorf("New(%s) while another store holds it = %v, want an error naming the root as in use", root, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := New(root)
	if err != nil {
		t.Fatalf("New(%s) once the first store closed = %v", root, err)
	}
	s2.Close()
}
