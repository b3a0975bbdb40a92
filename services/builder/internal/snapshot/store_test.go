package snapshot

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/lib/compression"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/layer"
)

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (overlay mounts)")
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// tarLayer is a layer blob (a plain tar) holding files name → content;
// a name ending in "/" is a directory, a content starting with "->" a symlink.
type tarLayer struct {
	blob  []byte
	opens atomic.Int32
}

func newTarLayer(t testing.TB, files ...string) *tarLayer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i := 0; i < len(files); i += 2 {
		name, content := files[i], files[i+1]
		hdr := &tar.Header{Name: name, Mode: 0o644, Typeflag: tar.TypeReg, Size: int64(len(content))}
		switch {
		case strings.HasSuffix(name, "/"):
			hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeDir, 0o755, 0
		case strings.HasPrefix(content, "->"):
			hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeSymlink, content[2:], 0
		}
		must(t, tw.WriteHeader(hdr))
		if hdr.Typeflag == tar.TypeReg {
			_, err := io.WriteString(tw, content)
			must(t, err)
		}
	}
	must(t, tw.Close())
	return &tarLayer{blob: buf.Bytes()}
}

func (l *tarLayer) Layer() Layer {
	return Layer{
		DiffID: digest.FromBytes(l.blob),
		Open: func(context.Context) (io.ReadCloser, error) {
			l.opens.Add(1)
			return io.NopCloser(bytes.NewReader(l.blob)), nil
		},
	}
}

func newStore(t testing.TB, opts Options) *Store {
	t.Helper()
	requireRoot(t)
	s, err := New(filepath.Join(t.TempDir(), "state"), opts)
	must(t, err)
	return s
}

func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return string(b)
}

// memBlob is a layer.BlobWriter over memory.
type memBlob struct{ bytes.Buffer }

func (m *memBlob) Commit(context.Context, int64, digest.Digest) error { return nil }
func (m *memBlob) Close() error                                       { return nil }

// step prepares a step over layers, runs change on its root filesystem,
// stores its diff and commits it, returning the new layer.
func step(t *testing.T, s *Store, layers []Layer, change func(root string)) (Layer, digest.Digest) {
	t.Helper()
	ctx := context.Background()
	a, err := s.Prepare(ctx, layers)
	must(t, err)
	defer a.Release()
	change(a.RootFS())
	blob := &memBlob{}
	desc, err := layer.WriteDiff(ctx, blob, layer.DirSource(a.UpperDir()))
	must(t, err)
	chainID, err := a.Commit(ctx, desc.DiffID, desc.DiffSize)
	must(t, err)
	return Layer{DiffID: desc.DiffID}, chainID
}

func TestPrepareCommitChain(t *testing.T) {
	s := newStore(t, Options{})
	base := newTarLayer(t, "etc/", "", "etc/passwd", "root", "etc/motd", "hello", "bin/", "", "bin/sh", "#!", "bin/ls", "->sh")

	l1, chain1 := step(t, s, []Layer{base.Layer()}, func(root string) {
		must(t, os.WriteFile(filepath.Join(root, "data"), []byte("one"), 0o644))
		must(t, os.Remove(filepath.Join(root, "etc/motd")))
	})
	if want := ChainID(base.Layer().DiffID, l1.DiffID); chain1 != want {
		t.Errorf("Commit = %s, want the chain ID %s", chain1, want)
	}
	// The committed layer is used as is: no Open needed.
	l2, chain2 := step(t, s, []Layer{base.Layer(), l1}, func(root string) {
		if got := readFile(t, filepath.Join(root, "data")); got != "one" {
			t.Errorf("step 2 reads data = %q, want %q", got, "one")
		}
		if _, err := os.Stat(filepath.Join(root, "etc/motd")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("etc/motd deleted by step 1: stat = %v, want not exist", err)
		}
		must(t, os.RemoveAll(filepath.Join(root, "etc")))
		must(t, os.Mkdir(filepath.Join(root, "etc"), 0o755))
		must(t, os.WriteFile(filepath.Join(root, "etc/new"), []byte("new"), 0o644))
	})

	a, err := s.Prepare(context.Background(), []Layer{base.Layer(), l1, l2})
	must(t, err)
	defer a.Release()
	root := a.RootFS()
	for path, want := range map[string]string{"data": "one", "bin/sh": "#!", "bin/ls": "#!", "etc/new": "new"} {
		if got := readFile(t, filepath.Join(root, path)); got != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "etc/passwd")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("etc/passwd under the directory step 2 replaced: stat = %v, want not exist", err)
	}
	if n := base.opens.Load(); n != 1 {
		t.Errorf("the base layer was opened %d times, want once (then reused)", n)
	}
	info, err := s.Stat(chain2)
	must(t, err)
	if info.Parent != chain1 || info.InUse != 1 {
		t.Errorf("Stat(%s) = %+v, want parent %s and in use once", chain2, info, chain1)
	}
}

// A layer added over a chain from its files is there for a step to mount
// without a blob, under the chain ID of the diff ID its maker gave.
func TestAddUnpacksOnce(t *testing.T) {
	s := newStore(t, Options{})
	base := newTarLayer(t, "etc/", "", "etc/passwd", "root", "bin/", "", "bin/sh", "#!")
	a, err := s.Prepare(context.Background(), []Layer{base.Layer()})
	must(t, err)
	must(t, a.Release())

	added := newTarLayer(t, "src/", "", "src/main.c", "int main;", "src/ln", "->main.c")
	fill := func(ctx context.Context, dir string) (digest.Digest, int64, error) {
		res, err := layer.Unpack(ctx, bytes.NewReader(added.blob), dir)
		return res.DiffID, res.DiffSize, err
	}
	ref, info, err := s.Add(context.Background(), base.Layer().DiffID, fill)
	must(t, err)
	defer ref.Release()
	want := Info{ChainID: ChainID(base.Layer().DiffID, added.Layer().DiffID), Parent: base.Layer().DiffID,
		DiffID: added.Layer().DiffID, Size: int64(len("int main;") + len("main.c"))}
	if info != want {
		t.Errorf("Add = %+v, want %+v", info, want)
	}

	// No Open: the layer must be unpacked already.
	a, err = s.Prepare(context.Background(), []Layer{base.Layer(), {DiffID: info.DiffID}})
	must(t, err)
	defer a.Release()
	for path, want := range map[string]string{"src/main.c": "int main;", "src/ln": "int main;", "etc/passwd": "root"} {
		if got := readFile(t, filepath.Join(a.RootFS(), path)); got != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}
	if got, err := s.Stat(info.ChainID); err != nil || got.InUse != 2 {
		t.Errorf("Stat(%s) = %+v, %v; want in use by the ref and the step", info.ChainID, got, err)
	}

	// Adding it again keeps the layer there.
	ref2, info2, err := s.Add(context.Background(), base.Layer().DiffID, fill)
	must(t, err)
	ref2.Release()
	if info2 != want {
		t.Errorf("Add again = %+v, want %+v", info2, want)
	}
}

func TestPrepareScratch(t *testing.T) {
	s := newStore(t, Options{})
	l, chain := step(t, s, nil, func(root string) {
		entries, err := os.ReadDir(root)
		must(t, err)
		if len(entries) != 0 {
			t.Errorf("scratch root holds %d entries, want none", len(entries))
		}
		must(t, os.WriteFile(filepath.Join(root, "hello"), []byte("hi"), 0o644))
	})
	if chain != l.DiffID {
		t.Errorf("chain ID of a first layer = %s, want its diff ID %s", chain, l.DiffID)
	}
}

func TestReleaseDiscards(t *testing.T) {
	s := newStore(t, Options{})
	base := newTarLayer(t, "f", "x")
	a, err := s.Prepare(context.Background(), []Layer{base.Layer()})
	must(t, err)
	must(t, os.WriteFile(filepath.Join(a.RootFS(), "junk"), []byte("junk"), 0o644))
	must(t, a.Release())
	must(t, a.Release()) // a second Release is harmless
	if _, err := a.Commit(context.Background(), digest.FromString("x"), 1); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Commit after Release = %v, want FAILED_PRECONDITION", err)
	}
	if mounts, _ := mountsUnder(s.Root()); len(mounts) != 0 {
		t.Errorf("mounts left after Release: %v", mounts)
	}
	if entries, _ := os.ReadDir(filepath.Join(s.Root(), "active")); len(entries) != 0 {
		t.Errorf("active/ holds %d entries after Release, want none", len(entries))
	}
	info, err := s.Stat(base.Layer().DiffID)
	must(t, err)
	if info.InUse != 0 {
		t.Errorf("base layer in use %d times after Release, want 0", info.InUse)
	}
}

func TestPrepareBadLayer(t *testing.T) {
	s := newStore(t, Options{})
	good := newTarLayer(t, "f", "x")
	wrong := good.Layer()
	wrong.DiffID = digest.FromString("something else")
	if _, err := s.Prepare(context.Background(), []Layer{wrong}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Prepare of a layer whose content does not match its diff ID = %v, want INVALID_ARGUMENT", err)
	}
	if _, err := s.Stat(wrong.DiffID); !errdefs.IsNotFound(err) {
		t.Errorf("the mismatching layer is registered: Stat = %v", err)
	}
	if _, err := s.Prepare(context.Background(), []Layer{{DiffID: digest.FromString("x")}}); !errdefs.IsNotFound(err) {
		t.Errorf("Prepare of an absent layer without a blob = %v, want NOT_FOUND", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(s.Root(), "tmp")); len(entries) != 0 {
		t.Errorf("tmp/ holds %d entries after failed unpacks, want none", len(entries))
	}
}

func TestEvictionSparesLayersInUse(t *testing.T) {
	s := newStore(t, Options{MaxBytes: 250})
	ctx := context.Background()
	big := func(name string) *tarLayer { return newTarLayer(t, name, strings.Repeat("x", 100)) }
	a, b, c := big("a"), big("b"), big("c")

	inUse, err := s.Prepare(ctx, []Layer{a.Layer()})
	must(t, err)
	defer inUse.Release()
	for _, l := range []*tarLayer{b, c} {
		p, err := s.Prepare(ctx, []Layer{l.Layer()})
		must(t, err)
		must(t, p.Release())
	}
	// 300 bytes against a 250 limit: b, the least recently used idle layer,
	// goes; a is in use and stays.
	if _, err := s.Stat(a.Layer().DiffID); err != nil {
		t.Errorf("layer in use was evicted: %v", err)
	}
	if _, err := s.Stat(b.Layer().DiffID); !errdefs.IsNotFound(err) {
		t.Errorf("least recently used idle layer: Stat = %v, want NOT_FOUND (evicted)", err)
	}
	if _, err := s.Stat(c.Layer().DiffID); err != nil {
		t.Errorf("most recently used layer was evicted: %v", err)
	}
	if got := s.Usage(); got != 200 {
		t.Errorf("Usage = %d, want 200", got)
	}
	// An evicted layer comes back through its blob.
	p, err := s.Prepare(ctx, []Layer{b.Layer()})
	must(t, err)
	if got := readFile(t, filepath.Join(p.RootFS(), "b")); got != strings.Repeat("x", 100) {
		t.Errorf("re-unpacked layer reads %q", got)
	}
	must(t, p.Release())
	if n := b.opens.Load(); n != 2 {
		t.Errorf("evicted layer opened %d times, want 2", n)
	}
}

func TestConcurrentPrepareUnpacksOnce(t *testing.T) {
	s := newStore(t, Options{})
	base := newTarLayer(t, "f", strings.Repeat("y", 1<<20))
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := s.Prepare(context.Background(), []Layer{base.Layer()})
			if err != nil {
				errs <- err
				return
			}
			defer a.Release()
			if err := os.WriteFile(filepath.Join(a.RootFS(), "mine"), fmt.Appendf(nil, "%d", i), 0o644); err != nil {
				errs <- err
			}
			if got := readFile(t, filepath.Join(a.RootFS(), "mine")); got != fmt.Sprint(i) {
				errs <- fmt.Errorf("step %d reads its own file as %q", i, got)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := base.opens.Load(); n != 1 {
		t.Errorf("8 concurrent Prepares opened the layer %d times, want once", n)
	}
}

func TestDeepChain(t *testing.T) {
	s := newStore(t, Options{})
	var layers []Layer
	for i := range 130 {
		l := newTarLayer(t, fmt.Sprintf("f%03d", i), fmt.Sprint(i))
		layers = append(layers, l.Layer())
	}
	a, err := s.Prepare(context.Background(), layers)
	must(t, err)
	defer a.Release()
	for _, i := range []int{0, 64, 129} {
		if got := readFile(t, filepath.Join(a.RootFS(), fmt.Sprintf("f%03d", i))); got != fmt.Sprint(i) {
			t.Errorf("f%03d = %q in a 130-layer chain", i, got)
		}
	}
}

func TestRestartCleansUp(t *testing.T) {
	requireRoot(t)
	root := filepath.Join(t.TempDir(), "state")
	s, err := New(root, Options{})
	must(t, err)
	base := newTarLayer(t, "f", "x")
	a, err := s.Prepare(context.Background(), []Layer{base.Layer()})
	must(t, err)
	must(t, os.WriteFile(filepath.Join(a.RootFS(), "junk"), nil, 0o644))

	// The process dies here: a new store on the same root cleans up.
	s2, err := New(root, Options{})
	must(t, err)
	if mounts, _ := mountsUnder(root); len(mounts) != 0 {
		t.Errorf("mounts left after restart: %v", mounts)
	}
	if entries, _ := os.ReadDir(filepath.Join(root, "active")); len(entries) != 0 {
		t.Errorf("active/ holds %d entries after restart", len(entries))
	}
	if _, err := s2.Stat(base.Layer().DiffID); err != nil {
		t.Errorf("unpacked layer lost across a restart: %v", err)
	}
	b, err := s2.Prepare(context.Background(), []Layer{{DiffID: base.Layer().DiffID}})
	must(t, err)
	defer b.Release()
	if got := readFile(t, filepath.Join(b.RootFS(), "f")); got != "x" {
		t.Errorf("layer after restart reads %q", got)
	}

	// After a reboot the layers are dropped: they were written without syncs.
	must(t, os.WriteFile(filepath.Join(root, bootIDFile), []byte("another boot"), 0o600))
	must(t, b.Release())
	s3, err := New(root, Options{})
	must(t, err)
	if got := s3.List(); len(got) != 0 {
		t.Errorf("layers kept across a reboot: %v", got)
	}
}

func TestStateRootIsPrivate(t *testing.T) {
	s := newStore(t, Options{})
	var st unix.Stat_t
	must(t, unix.Stat(s.Root(), &st))
	if st.Mode&0o077 != 0 {
		t.Errorf("state root mode %o, want no access for group and others", st.Mode&0o777)
	}
}

func TestMountLegacy(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	var lowers []string
	for _, n := range []string{"l1", "l2", "upper", "work", "merged"} {
		must(t, os.Mkdir(filepath.Join(dir, n), 0o755))
	}
	must(t, os.WriteFile(filepath.Join(dir, "l1/a"), []byte("top"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "l2/a"), []byte("bottom"), 0o644))
	lowers = append(lowers, filepath.Join(dir, "l1"), filepath.Join(dir, "l2"))
	merged := filepath.Join(dir, "merged")
	must(t, mountLegacy(merged, lowers, filepath.Join(dir, "upper"), filepath.Join(dir, "work")))
	defer unix.Unmount(merged, 0)
	if got := readFile(t, filepath.Join(merged, "a")); got != "top" {
		t.Errorf("a = %q, want the top layer's", got)
	}
	many := make([]string, 200)
	for i := range many {
		many[i] = filepath.Join(dir, "l1")
	}
	if err := mountLegacy(merged, many, dir, dir); !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Errorf("mountLegacy with 200 lowers = %v, want RESOURCE_EXHAUSTED", err)
	}
}

// BenchmarkPrepareRelease is the cost of a step's root filesystem over a
// prepared three-layer chain: mount and unmount.
func BenchmarkPrepareRelease(b *testing.B) {
	s := newStore(b, Options{})
	var layers []Layer
	for i := range 3 {
		layers = append(layers, newTarLayer(b, fmt.Sprintf("f%d", i), "x").Layer())
	}
	ctx := context.Background()
	a, err := s.Prepare(ctx, layers)
	must(b, err)
	must(b, a.Release())
	for b.Loop() {
		a, err := s.Prepare(ctx, layers)
		if err != nil {
			b.Fatal(err)
		}
		if err := a.Release(); err != nil {
			b.Fatal(err)
		}
	}
}

// A build can commit a step with the diff ID alone and upload the layer
// from the committed directory later: the blob has the same diff ID.
func TestCommitThenUploadFromLayerDir(t *testing.T) {
	s := newStore(t, Options{})
	ctx := context.Background()
	base := newTarLayer(t, "etc/", "", "etc/passwd", "root", "etc/gone", "x")
	a, err := s.Prepare(ctx, []Layer{base.Layer()})
	must(t, err)
	defer a.Release()
	must(t, os.WriteFile(filepath.Join(a.RootFS(), "etc/new"), []byte("new"), 0o644))
	must(t, os.Remove(filepath.Join(a.RootFS(), "etc/gone")))
	must(t, os.Link(filepath.Join(a.RootFS(), "etc/new"), filepath.Join(a.RootFS(), "etc/new2")))

	id, err := layer.DiffID(ctx, layer.DirSource(a.UpperDir()))
	must(t, err)
	chainID, err := a.Commit(ctx, id.DiffID, id.DiffSize)
	must(t, err)

	ref, err := s.Acquire(chainID)
	must(t, err)
	if err := s.Remove(chainID); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Remove of an acquired layer = %v, want FAILED_PRECONDITION", err)
	}
	desc, err := layer.WriteDiff(ctx, &memBlob{}, layer.DirSource(ref.Dir()))
	must(t, err)
	ref.Release()
	ref.Release()
	if desc.DiffID != id.DiffID || desc.DiffSize != id.DiffSize {
		t.Errorf("layer uploaded from the committed dir: diff ID %s size %d, want %s size %d", desc.DiffID, desc.DiffSize, id.DiffID, id.DiffSize)
	}
	must(t, s.Remove(chainID))
}

func TestPrepareLayerLimits(t *testing.T) {
	for name, opts := range map[string]Options{
		"bytes":   {Limits: compression.Limits{MaxSize: 1000}},
		"entries": {MaxLayerEntries: 2},
	} {
		t.Run(name, func(t *testing.T) {
			s := newStore(t, opts)
			big := newTarLayer(t, "a", strings.Repeat("x", 5000), "b", "", "c", "")
			_, err := s.Prepare(context.Background(), []Layer{big.Layer()})
			if !errors.Is(err, errdefs.ErrResourceExhausted) {
				t.Errorf("Prepare over a layer beyond the %s limit = %v, want RESOURCE_EXHAUSTED", name, err)
			}
			if entries, _ := os.ReadDir(filepath.Join(s.Root(), "tmp")); len(entries) != 0 {
				t.Errorf("tmp/ holds %d entries after the refused unpack", len(entries))
			}
		})
	}
}
