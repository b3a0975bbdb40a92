package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// initEntries is what Docker's init layer holds (moby daemon/initlayer):
// a directory, an empty file (mode 0755, as Docker creates them), or a
// symlink to the given target.
var initEntries = []struct{ path, kind string }{
	{"/dev/pts", "dir"},
	{"/dev/shm", "dir"},
	{"/proc", "dir"},
	{"/sys", "dir"},
	{"/.dockerenv", "file"},
	{"/etc/resolv.conf", "file"},
	{"/etc/hosts", "file"},
	{"/etc/hostname", "file"},
	{"/dev/console", "file"},
	{"/etc/mtab", "/proc/mounts"},
}

// ensureInit returns the init layer directory over the chain (bottom first,
// already pinned), making it the first time a step asks for it.
func (s *Store) ensureInit(ctx context.Context, chain []digest.Digest) (string, error) {
	key, dir := "scratch", filepath.Join(s.root, "scratch-init")
	if len(chain) > 0 {
		top := chain[len(chain)-1]
		key, dir = top.String(), filepath.Join(s.layerDir(top), "init")
	}
	for {
		if _, err := os.Lstat(dir); err == nil {
			return dir, nil
		}
		s.mu.Lock()
		wait, busy := s.initing[key]
		if !busy {
			done := make(chan struct{})
			s.initing[key] = done
			s.mu.Unlock()
			err := s.makeInit(chain, dir)
			s.mu.Lock()
			delete(s.initing, key)
			close(done)
			s.mu.Unlock()
			if err != nil {
				return "", fmt.Errorf("making the init layer: %w", err)
			}
			return dir, nil
		}
		s.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

// makeInit mounts the chain with a fresh upper directory, creates the init
// entries in the merged view as Docker does (so the upper directory records
// only what the image lacks, and replaces files and symlinks the image has at
// those paths), and moves the upper directory to dir.
func (s *Store) makeInit(chain []digest.Digest, dir string) error {
	staging, err := os.MkdirTemp(filepath.Join(s.root, "tmp"), "init-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(staging)
	a := &Active{store: s, id: "init", dir: staging, chain: chain}
	for _, d := range []string{a.RootFS(), filepath.Join(staging, "work")} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return err
		}
	}
	if err := os.Mkdir(a.UpperDir(), 0o755); err != nil {
		return err
	}
	if err := a.mount(); err != nil {
		return err
	}
	err = writeInit(a.RootFS())
	if uerr := a.unmountLocked(); err == nil {
		err = uerr
	}
	if err != nil {
		return err
	}
	return os.Rename(a.UpperDir(), dir)
}

// writeInit creates the init entries under root, resolving every path inside
// it (the image's content is untrusted: a symlinked /etc must not lead out).
func writeInit(rootDir string) error {
	root, err := os.OpenRoot(rootDir)
	if err != nil {
		return err
	}
	defer root.Close()
	for _, e := range initEntries {
		rel := e.path[1:]
		// Docker unlinks whatever non-directory stands on the path, so that
		// the entry is always its own (and never a symlink's target).
		for _, p := range prefixes(rel) {
			fi, err := root.Lstat(p)
			if err == nil && !fi.IsDir() {
				if err := root.Remove(p); err != nil {
					return err
				}
			}
		}
		if _, err := root.Lstat(rel); err == nil {
			continue
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := root.MkdirAll(path.Dir(rel), 0o755); err != nil {
			return err
		}
		switch e.kind {
		case "dir":
			if err := root.Mkdir(rel, 0o755); err != nil {
				return err
			}
		case "file":
			f, err := root.OpenFile(rel, os.O_CREATE|os.O_WRONLY|unix.O_NOFOLLOW, 0o755)
			if err != nil {
				return err
			}
			err = f.Chmod(0o755)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		default:
			if err := root.Symlink(e.kind, rel); err != nil {
				return err
			}
		}
	}
	return nil
}

// prefixes returns "a", "a/b", "a/b/c" for "a/b/c".
func prefixes(rel string) []string {
	var out []string
	for p := rel; p != "." && p != "/" && p != ""; p = path.Dir(p) {
		out = append([]string{p}, out...)
	}
	return out
}
