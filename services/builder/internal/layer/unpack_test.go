package layer

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
	"testing"

	"github.com/containerd/containerd/v2/pkg/archive/tartest"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/lib/compression"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/layer/layertest"
)

func tarBytes(t testing.TB, w tartest.WriterToTar) []byte {
	t.Helper()
	b, err := io.ReadAll(tartest.TarFromWriterTo(w))
	must(t, err)
	return b
}

// TestUnpackBreakouts runs the breakout table against Unpack, the way
// layers of loaded and pulled images reach a build (each layer unpacked on
// its own, the lower one under the hostile one) and the way an imported
// root filesystem does (one layer holding both). Whatever the case, the host
// directory is untouched; then the archive is refused or the merged root
// holds what the case says. An archive import and load would refuse as it is
// (absolute or climbing names) is tried re-rooted too, with the same outcome.
func TestUnpackBreakouts(t *testing.T) {
	requireRoot(t)
	for _, mode := range []layertest.Mode{layertest.Layers, layertest.OneLayer} {
		for _, c := range layertest.Cases() {
			variants := map[string]func([]layertest.Entry) []layertest.Entry{"": nil}
			if layertest.Unsafe(c.Archive) {
				variants["/rerooted"] = layertest.Reroot
			}
			for suffix, rewrite := range variants {
				t.Run(mode.String()+"/"+c.Name+suffix, func(t *testing.T) {
					sandbox := t.TempDir()
					h := layertest.NewHost(t, filepath.Join(sandbox, "host"))
					c := c.Expand(h.Dir)
					archive := c.Archive
					if rewrite != nil {
						archive = rewrite(archive)
					}
					merged, err := unpackCase(t, sandbox, mode, c.Lower, archive)
					h.Check(t)
					verifyOutcome(t, c.Outcome(mode), merged, err)
				})
			}
		}
	}
}

// unpackCase unpacks a case's layers in mode under sandbox and returns the
// root an overlay of them shows.
func unpackCase(t *testing.T, sandbox string, mode layertest.Mode, lower, archive []layertest.Entry) (string, error) {
	t.Helper()
	var lowers []string
	unpack := func(name string, entries []layertest.Entry) error {
		dir := filepath.Join(sandbox, name)
		must(t, os.Mkdir(dir, 0o755))
		lowers = append([]string{dir}, lowers...)
		_, err := Unpack(context.Background(), bytes.NewReader(layertest.Tar(entries)), dir)
		return err
	}
	var err error
	switch {
	case mode == layertest.OneLayer:
		err = unpack("layer", append(append([]layertest.Entry{}, lower...), archive...))
	case lower != nil:
		if err := unpack("lower", lower); err != nil {
			t.Fatalf("unpacking the lower layer: %v", err)
		}
		fallthrough
	default:
		err = unpack("layer", archive)
	}
	if err != nil {
		return "", err
	}
	upper := filepath.Join(sandbox, "upper")
	must(t, os.Mkdir(upper, 0o755))
	return mountOverlay(t, upper, lowers...), nil
}

// verifyOutcome checks what extracting a case into root gave (err its
// error) against the outcome wanted.
func verifyOutcome(t *testing.T, want layertest.Outcome, root string, err error) {
	t.Helper()
	if want.Refused {
		if !errdefs.IsInvalidArgument(err) {
			t.Fatalf("err = %v, want INVALID_ARGUMENT (%s)", err, want.Why)
		}
		return
	}
	if err != nil {
		t.Fatalf("err = %v, want success", err)
	}
	got, err := layertest.ReadTree(root)
	must(t, err)
	for _, err := range got.Verify(want.Checks) {
		t.Error(err)
	}
}

// TestExtractBreakouts runs the breakout table against Extract, ADD's way:
// the archive extracted in place onto a root that holds the lower entries,
// ".wh." names plain files.
func TestExtractBreakouts(t *testing.T) {
	requireRoot(t)
	for _, c := range layertest.Cases() {
		t.Run(c.Name, func(t *testing.T) {
			sandbox := t.TempDir()
			h := layertest.NewHost(t, filepath.Join(sandbox, "host"))
			c := c.Expand(h.Dir)
			root := filepath.Join(sandbox, "root")
			must(t, os.Mkdir(root, 0o755))
			if c.Lower != nil {
				if _, err := Extract(context.Background(), bytes.NewReader(layertest.Tar(c.Lower)), root); err != nil {
					t.Fatalf("extracting the lower entries: %v", err)
				}
			}
			ok, err := Extract(context.Background(), bytes.NewReader(layertest.Tar(c.Archive)), root)
			h.Check(t)
			if !ok && err == nil {
				t.Fatal("Extract took the archive for a plain file")
			}
			verifyOutcome(t, c.Outcome(layertest.InPlace), root, err)
		})
	}
}

func TestUnpackInvalidWhiteouts(t *testing.T) {
	tc := tartest.TarContext{}.WithUIDGID(0, 0)
	for _, name := range []string{".wh..", ".wh...", "etc/.wh..", "etc/.wh...", "etc/.wh."} {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			write(t, filepath.Join(root, "etc/passwd"), "keep", 0o644)
			_, err := Unpack(context.Background(), bytes.NewReader(tarBytes(t, tc.File(name, nil, 0o644))), root)
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("Unpack of whiteout %q = %v, want INVALID_ARGUMENT", name, err)
			}
			if _, err := os.Stat(filepath.Join(root, "etc/passwd")); err != nil {
				t.Errorf("etc/passwd after the refused whiteout: %v", err)
			}
		})
	}
}

// A whiteout of a name its own layer holds cannot become an overlay
// whiteout (the name is taken): the layer is malformed, not the builder.
func TestUnpackWhiteoutOfItsOwnLayer(t *testing.T) {
	requireRoot(t)
	tc := tartest.TarContext{}.WithUIDGID(0, 0)
	_, err := Unpack(context.Background(), bytes.NewReader(tarBytes(t, tartest.TarAll(tc.File("x", []byte("x"), 0o644), tc.File(".wh.x", nil, 0o644)))), t.TempDir())
	if !errdefs.IsInvalidArgument(err) {
		t.Errorf("Unpack of x then .wh.x = %v, want INVALID_ARGUMENT", err)
	}
}

// An archive whose first entry has a long name (a PAX header ahead of it)
// is an archive: ADD extracts it, as Docker does.
func TestExtractLongFirstName(t *testing.T) {
	tc := tartest.TarContext{}.WithUIDGID(os.Getuid(), os.Getgid())
	name := "d/" + strings.Repeat("n", 150)
	dir := t.TempDir()
	ok, err := Extract(context.Background(), bytes.NewReader(tarBytes(t, tc.File(name, []byte("x"), 0o644))), dir)
	if !ok || err != nil {
		t.Fatalf("Extract = %v, %v; want an extracted archive", ok, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(b) != "x" {
		t.Errorf("reading %s: %q, %v", name, b, err)
	}
}

// An archive's errors go back to whoever sent it: they name paths in the
// root, never where the root is on the builder's host.
func TestExtractErrorsHideTheRootsHostPath(t *testing.T) {
	tc := tartest.TarContext{}.WithUIDGID(os.Getuid(), os.Getgid())
	dir := t.TempDir()
	archive := tarBytes(t, tartest.TarAll(tc.File("f", []byte("x"), 0o644), tc.Link("missing", "dst/h")))
	_, err := Extract(context.Background(), bytes.NewReader(archive), dir)
	if !errdefs.IsInvalidArgument(err) || strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "/dst/h") {
		t.Errorf("Extract of a hard link to a missing file = %v; want INVALID_ARGUMENT naming /dst/h, not %s", err, dir)
	}
}

// The spec's ordering example: an opaque marker listed after a file of the
// same layer hides the lower layers only.
func TestUnpackOpaqueAfterFiles(t *testing.T) {
	requireRoot(t)
	tc := tartest.TarContext{}.WithUIDGID(0, 0)
	layer := tarBytes(t, tartest.TarAll(
		tc.Dir("a", 0o755), tc.Dir("a/b", 0o755), tc.Dir("a/b/c", 0o755),
		tc.File("a/b/c/foo", []byte("foo"), 0o644),
		tc.File("a/.wh..wh..opq", nil, 0o644),
	))
	dir := filepath.Join(t.TempDir(), "layer")
	must(t, os.Mkdir(dir, 0o755))
	_, err := Unpack(context.Background(), bytes.NewReader(layer), dir)
	must(t, err)

	lower := t.TempDir()
	write(t, filepath.Join(lower, "a/b/c/bar"), "bar", 0o644)
	upper := filepath.Join(t.TempDir(), "upper")
	must(t, os.Mkdir(upper, 0o755))
	merged := mountOverlay(t, upper, dir, lower)
	if _, err := os.Stat(filepath.Join(merged, "a/b/c/foo")); err != nil {
		t.Errorf("foo of the same layer: %v, want it visible", err)
	}
	if _, err := os.Stat(filepath.Join(merged, "a/b/c/bar")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("bar of the lower layer: %v, want it hidden by the opaque directory", err)
	}
}

func TestUnpackCompressions(t *testing.T) {
	tc := tartest.TarContext{}.WithUIDGID(os.Getuid(), os.Getgid())
	raw := tarBytes(t, tartest.TarAll(tc.Dir("d", 0o755), tc.File("d/f", bytes.Repeat([]byte("data "), 100000), 0o644), tc.Symlink("d/f", "l")))
	var gz, zs bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(raw)
	zw.Close()
	ze, _ := zstd.NewWriter(&zs)
	ze.Write(raw)
	ze.Close()
	for name, blob := range map[string][]byte{"tar": raw, "gzip": gz.Bytes(), "zstd": zs.Bytes()} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			res, err := Unpack(context.Background(), bytes.NewReader(blob), dir, WithDiffID(digest.FromBytes(raw)))
			if err != nil {
				t.Fatalf("Unpack: %v", err)
			}
			if want := (Unpacked{DiffID: digest.FromBytes(raw), DiffSize: 500000 + 3}); res != want {
				t.Errorf("Unpack = %+v, want %+v", res, want)
			}
			b, err := os.ReadFile(filepath.Join(dir, "l"))
			if err != nil || len(b) != 500000 {
				t.Errorf("reading d/f through the link: %d bytes, %v", len(b), err)
			}
		})
	}
}

func TestUnpackDiffIDMismatch(t *testing.T) {
	tc := tartest.TarContext{}.WithUIDGID(os.Getuid(), os.Getgid())
	raw := tarBytes(t, tc.File("f", []byte("x"), 0o644))
	_, err := Unpack(context.Background(), bytes.NewReader(raw), t.TempDir(), WithDiffID(digest.FromString("other")))
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), digest.FromBytes(raw).String()) {
		t.Errorf("Unpack with a wrong diff ID = %v, want INVALID_ARGUMENT naming both", err)
	}
}

func TestUnpackBomb(t *testing.T) {
	// 64 MiB of zeros in one file compresses to about 64 KiB.
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	tw := tar.NewWriter(zw)
	must(t, tw.WriteHeader(&tar.Header{Name: "zeros", Typeflag: tar.TypeReg, Size: 64 << 20, Mode: 0o644}))
	zero := make([]byte, 1<<20)
	for range 64 {
		tw.Write(zero)
	}
	tw.Close()
	zw.Close()

	dir := t.TempDir()
	_, err := Unpack(context.Background(), bytes.NewReader(gz.Bytes()), dir, WithLimits(compression.Limits{MaxSize: 8 << 20}))
	if !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Errorf("Unpack of %d compressed bytes inflating to 64 MiB with an 8 MiB limit = %v, want RESOURCE_EXHAUSTED", gz.Len(), err)
	}
}

func TestUnpackMalformed(t *testing.T) {
	for name, blob := range map[string][]byte{
		"bad gzip":      append([]byte{0x1f, 0x8b, 8, 0}, bytes.Repeat([]byte{0xff}, 100)...),
		"truncated tar": tarBytes(t, tartest.TarContext{}.File("f", bytes.Repeat([]byte("x"), 4096), 0o644))[:1000],
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Unpack(context.Background(), bytes.NewReader(blob), t.TempDir())
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("Unpack = %v, want INVALID_ARGUMENT", err)
			}
		})
	}
}

// A PAX record beyond archive/tar's 1 MiB cap fails fast as bad input.
func TestUnpackHugePAXHeader(t *testing.T) {
	raw := withPAX(t, paxRecord("SCHILY.xattr.user.big", strings.Repeat("x", 2<<20)), "f", nil)
	_, err := Unpack(context.Background(), bytes.NewReader(raw), t.TempDir())
	if !errdefs.IsInvalidArgument(err) {
		t.Errorf("Unpack of a 2 MiB PAX header = %v, want INVALID_ARGUMENT", err)
	}
	t.Logf("Unpack: %v", err)
}

// A sparse file's holes are written out as zeros: 3.5 KiB of tar would
// make a file of any size, past every bound on the layer's bytes.
func TestUnpackRefusesSparseFiles(t *testing.T) {
	requireRoot(t)
	blob := sparseFile(t, 1<<30)
	sandbox(t, func(root string) error {
		_, err := Unpack(context.Background(), bytes.NewReader(blob), root)
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("Unpack of a 1 GiB sparse file = %v, want INVALID_ARGUMENT", err)
		}
		return err
	})
	sandbox(t, func(root string) error {
		_, err := Extract(context.Background(), bytes.NewReader(blob), root)
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("Extract of a 1 GiB sparse file = %v, want INVALID_ARGUMENT", err)
		}
		return err
	})
}

func TestUnpackTooManyEntries(t *testing.T) {
	var hdrs []tartest.WriterToTar
	tc := tartest.TarContext{}.WithUIDGID(os.Getuid(), os.Getgid())
	for i := range 101 {
		hdrs = append(hdrs, tc.File(fmt.Sprintf("f%d", i), nil, 0o644))
	}
	_, err := Unpack(context.Background(), bytes.NewReader(tarBytes(t, tartest.TarAll(hdrs...))), t.TempDir(), WithMaxEntries(100))
	if !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Errorf("Unpack of 101 entries with a limit of 100 = %v, want RESOURCE_EXHAUSTED", err)
	}
}
