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

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/compression"
)

func tarBytes(t testing.TB, w tartest.WriterToTar) []byte {
	t.Helper()
	b, err := io.ReadAll(tartest.TarFromWriterTo(w))
	must(t, err)
	return b
}

// breakout is a layer that tries to write, link or chmod outside the
// directory it is unpacked into, given the host directory beside it.
type breakout struct {
	name  string
	layer func(host string) tartest.WriterToTar
	check func(t *testing.T, root, host string) // nil: only "host untouched"
}

// breakouts are containerd's TestBreakouts cases.
func breakouts() []breakout {
	tc := tartest.TarContext{}.WithUIDGID(0, 0)
	return []breakout{
		{
			name:  "dot-dot name",
			layer: func(string) tartest.WriterToTar { return tc.File("../../host/pwn", []byte("x"), 0o644) },
			check: inRoot("host/pwn"),
		},
		{
			name:  "absolute name",
			layer: func(string) tartest.WriterToTar { return tc.File("/etc/passwd", []byte("layer"), 0o644) },
			check: inRoot("etc/passwd"),
		},
		{
			name:  "dot-dot inside the name",
			layer: func(string) tartest.WriterToTar { return tc.File("./a/../../b", []byte("x"), 0o644) },
			check: inRoot("b"),
		},
		{
			name:  "windows separators",
			layer: func(string) tartest.WriterToTar { return tc.File(`..\..\x`, []byte("x"), 0o644) },
			check: inRoot(`..\..\x`),
		},
		{
			name: "symlink to an absolute host path, then a file through it",
			layer: func(host string) tartest.WriterToTar {
				return tartest.TarAll(tc.Symlink(host, "escape"), tc.File("escape/pwn", []byte("x"), 0o644))
			},
		},
		{
			name: "relative symlink up and out, then a file through it",
			layer: func(string) tartest.WriterToTar {
				return tartest.TarAll(tc.Dir("d", 0o755), tc.Symlink("../../../host", "d/up"), tc.File("d/up/pwn", []byte("x"), 0o644))
			},
		},
		{
			name: "symlink up and out, then truncating a host file through it",
			layer: func(string) tartest.WriterToTar {
				return tartest.TarAll(tc.Symlink("/dummy/../../host/etc", "localetc"), tc.File("localetc/passwd", nil, 0o644))
			},
		},
		{
			name: "hard link to an absolute host path",
			layer: func(host string) tartest.WriterToTar {
				return tc.Link(filepath.Join(host, "secret"), "stolen")
			},
		},
		{
			name:  "hard link to a relative path out of the root",
			layer: func(string) tartest.WriterToTar { return tc.Link("../../../../host/secret", "stolen") },
		},
		{
			name: "hard link through a symlink pointing out",
			layer: func(host string) tartest.WriterToTar {
				return tartest.TarAll(tc.Symlink(host, "h"), tc.Link("h/secret", "stolen"))
			},
		},
		{
			// containerd's HardlinkSymlinkChmod (CVE-2021-32760).
			name: "hard link of a symlink to a host file, then chmod 0777",
			layer: func(host string) tartest.WriterToTar {
				return tartest.TarAll(
					tc.Symlink(filepath.Join(host, "secret"), "ep"),
					tc.Link("ep", "sketchylink"),
					tc.File("sketchylink", []byte("overwritten"), 0o777),
				)
			},
		},
		{
			name: "symlink named ..",
			layer: func(host string) tartest.WriterToTar {
				return tartest.TarAll(tc.Symlink(host, ".."), tc.File("../pwn", []byte("x"), 0o644))
			},
		},
		{
			name: "directory replaced by a symlink, then written through",
			layer: func(host string) tartest.WriterToTar {
				return tartest.TarAll(tc.Dir("etc", 0o755), tc.Symlink(filepath.Join(host, "etc"), "etc"), tc.File("etc/passwd", []byte("pwned"), 0o644))
			},
		},
		{
			name: "whiteout through a symlink pointing out",
			layer: func(host string) tartest.WriterToTar {
				return tartest.TarAll(tc.Symlink(filepath.Join(host, "etc"), "localetc"), tc.File("localetc/.wh.passwd", nil, 0o644))
			},
		},
	}
}

// TestUnpackBreakouts ports containerd's TestBreakouts idea to Unpack: each
// layer tries to write, link or chmod outside the directory it is unpacked
// into. The host side (a sibling directory with a 0400 secret and an
// etc/passwd) must be exactly as before, and the entries land inside the
// root, or the unpack fails.
func TestUnpackBreakouts(t *testing.T) {
	requireRoot(t)
	for _, bt := range breakouts() {
		t.Run(bt.name, func(t *testing.T) {
			sandbox := t.TempDir()
			host, root := filepath.Join(sandbox, "host"), filepath.Join(sandbox, "root")
			write(t, filepath.Join(host, "secret"), "secret", 0o400)
			write(t, filepath.Join(host, "etc/passwd"), "root:x:0:0:host", 0o644)
			must(t, os.Mkdir(root, 0o755))
			before := tree(t, host)

			_, err := Unpack(context.Background(), bytes.NewReader(tarBytes(t, bt.layer(host))), root)

			if d := diffTrees(before, tree(t, host)); len(d) > 0 {
				t.Fatalf("Unpack (err %v) changed the host:\n%s", err, strings.Join(d, "\n"))
			}
			if err == nil && bt.check != nil {
				bt.check(t, root, host)
			}
			if err != nil {
				t.Logf("Unpack refused the layer: %v", err)
			}
		})
	}
}

func inRoot(name string) func(t *testing.T, root, host string) {
	return func(t *testing.T, root, _ string) {
		t.Helper()
		if _, err := os.Lstat(filepath.Join(root, name)); err != nil {
			t.Errorf("the entry did not land inside the root at %s: %v", name, err)
		}
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
