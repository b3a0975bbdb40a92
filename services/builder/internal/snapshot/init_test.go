package snapshot

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/strata-build/strata/services/builder/internal/layer"
)

func TestInitLayer(t *testing.T) {
	s := newStore(t, Options{})
	base := newTarLayer(t, "etc/", "", "etc/hosts", "image's hosts", "etc/mtab", "image's mtab", "bin/", "", "bin/sh", "#!")
	a, err := s.Prepare(context.Background(), []Layer{base.Layer()}, WithInit())
	must(t, err)
	defer a.Release()
	root := a.RootFS()

	for _, d := range []string{"proc", "sys", "dev/pts", "dev/shm"} {
		if fi, err := os.Stat(filepath.Join(root, d)); err != nil || !fi.IsDir() {
			t.Errorf("/%s in a step with the init layer: %v, want a directory", d, err)
		}
	}
	for _, f := range []string{".dockerenv", "etc/hosts", "etc/resolv.conf", "etc/hostname", "dev/console"} {
		if got := readFile(t, filepath.Join(root, f)); got != "" {
			t.Errorf("/%s = %q, want an empty file", f, got)
		}
	}
	if target, err := os.Readlink(filepath.Join(root, "etc/mtab")); err != nil || target != "/proc/mounts" {
		t.Errorf("/etc/mtab -> %q (%v), want /proc/mounts", target, err)
	}
	if got := readFile(t, filepath.Join(root, "bin/sh")); got != "#!" {
		t.Errorf("/bin/sh of the image = %q", got)
	}

	// The init entries are below the step: its layer holds only its change.
	must(t, os.WriteFile(filepath.Join(root, "etc/app.conf"), []byte("x"), 0o644))
	var buf bytes.Buffer
	must(t, layer.Diff(context.Background(), a.UpperDir(), &buf))
	var names []string
	tr := tar.NewReader(&buf)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		must(t, err)
		names = append(names, hdr.Name)
	}
	if len(names) != 2 || names[0] != "etc/" || names[1] != "etc/app.conf" {
		t.Errorf("the step's layer holds %q, want only etc/ and etc/app.conf", names)
	}
}

// A base image whose /etc is a symlink out of the root must not make the
// init layer write on the host.
func TestInitLayerSymlinkedEtc(t *testing.T) {
	s := newStore(t, Options{})
	host := t.TempDir()
	must(t, os.WriteFile(filepath.Join(host, "hosts"), []byte("host file"), 0o644))
	base := newTarLayer(t, "etc", "->"+host)
	a, err := s.Prepare(context.Background(), []Layer{base.Layer()}, WithInit())
	must(t, err)
	defer a.Release()
	if got := readFile(t, filepath.Join(host, "hosts")); got != "host file" {
		t.Errorf("host file changed to %q", got)
	}
	entries, _ := os.ReadDir(host)
	if len(entries) != 1 {
		t.Errorf("host dir holds %d entries, want 1", len(entries))
	}
	if fi, err := os.Lstat(filepath.Join(a.RootFS(), "etc")); err != nil || !fi.IsDir() {
		t.Errorf("/etc in the step: %v, want a directory replacing the symlink", err)
	}
}

func TestInitLayerScratch(t *testing.T) {
	s := newStore(t, Options{})
	a, err := s.Prepare(context.Background(), nil, WithInit())
	must(t, err)
	defer a.Release()
	if _, err := os.Stat(filepath.Join(a.RootFS(), "proc")); err != nil {
		t.Errorf("/proc over scratch: %v", err)
	}
}
