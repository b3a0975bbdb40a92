// Package buildctx holds build contexts on the builder's side: the store of
// context file contents by digest that every build shares (so a file sent
// once is never sent again), and the tree of one build's context, made from
// the file list the client sends, that COPY and ADD resolve sources in.
package buildctx

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/lib/errdefs"
)

// Store keeps file contents by sha256 digest in a directory, shared by all
// builds. It is bounded: when it holds more than its limit, Trim removes the
// least recently used contents that no running build holds.
type Store struct {
	dir string
	max int64

	mu    sync.Mutex
	holds map[digest.Digest]int
}

// NewStore opens (creating) a store in dir that keeps at most maxBytes.
func NewStore(dir string, maxBytes int64) (*Store, error) {
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("context store: %w", err)
	}
	return &Store{dir: dir, max: maxBytes, holds: map[digest.Digest]int{}}, nil
}

// Path returns where the content of d is (or would be) kept. d must be a
// valid sha256 digest.
func (s *Store) Path(d digest.Digest) string {
	return filepath.Join(s.dir, d.Encoded()[:2], d.Encoded())
}

// Missing returns the digests of ds the store does not hold, marking the
// others used now so Trim keeps them.
func (s *Store) Missing(ds []digest.Digest) []digest.Digest {
	var out []digest.Digest
	now := time.Now()
	for _, d := range ds {
		p := s.Path(d)
		if err := os.Chtimes(p, time.Time{}, now); err != nil {
			out = append(out, d)
		}
	}
	return out
}

// Hold keeps the contents of ds from being trimmed until the returned
// function is called; a build holds its context's files while it runs.
func (s *Store) Hold(ds []digest.Digest) (release func()) {
	s.mu.Lock()
	for _, d := range ds {
		s.holds[d]++
	}
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		for _, d := range ds {
			if s.holds[d]--; s.holds[d] <= 0 {
				delete(s.holds, d)
			}
		}
		s.mu.Unlock()
	}
}

// Writer receives one content in order; Commit checks it against the
// digest it was opened for and makes it visible.
type Writer struct {
	s    *Store
	d    digest.Digest
	f    *os.File
	h    hashWriter
	size int64
}

type hashWriter interface {
	io.Writer
	Sum([]byte) []byte
}

// NewWriter starts receiving the content of d.
func (s *Store) NewWriter(d digest.Digest) (*Writer, error) {
	if err := ValidDigest(d); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "in-")
	if err != nil {
		return nil, fmt.Errorf("context store: %w", err)
	}
	return &Writer{s: s, d: d, f: f, h: sha256.New()}, nil
}

// Offset is how many bytes the writer has.
func (w *Writer) Offset() int64 { return w.size }

func (w *Writer) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.h.Write(p[:n])
	w.size += int64(n)
	return n, err
}

// Commit verifies the content and moves it into place.
func (w *Writer) Commit() error {
	defer w.Close()
	got := digest.NewDigestFromBytes(digest.SHA256, w.h.Sum(nil))
	if got != w.d {
		return errdefs.InvalidArgument("context file content does not match its digest: got %s, want %s", got, w.d)
	}
	if err := w.f.Close(); err != nil {
		return err
	}
	p := w.s.Path(w.d)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	return os.Rename(w.f.Name(), p)
}

// Close drops an uncommitted content.
func (w *Writer) Close() error {
	w.f.Close()
	if err := os.Remove(w.f.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// Trim removes the least recently used contents not held by a build until
// the store is within its limit. It returns the bytes removed.
func (s *Store) Trim(ctx context.Context) (int64, error) {
	type item struct {
		d     digest.Digest
		path  string
		size  int64
		atime time.Time
	}
	var items []item
	var total int64
	err := filepath.WalkDir(s.dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			if e != nil && e.IsDir() && e.Name() == "tmp" {
				return filepath.SkipDir
			}
			return err
		}
		info, err := e.Info()
		if err != nil {
			return nil
		}
		d := digest.NewDigestFromEncoded(digest.SHA256, e.Name())
		items = append(items, item{d: d, path: p, size: info.Size(), atime: info.ModTime()})
		total += info.Size()
		return ctx.Err()
	})
	if err != nil || total <= s.max {
		return 0, err
	}
	sort.Slice(items, func(i, j int) bool { return items[i].atime.Before(items[j].atime) })
	var freed int64
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, it := range items {
		if total-freed <= s.max {
			break
		}
		if s.holds[it.d] > 0 {
			continue
		}
		if os.Remove(it.path) == nil {
			freed += it.size
		}
	}
	return freed, nil
}

// ValidDigest checks that d is a well-formed sha256 digest, so that it can
// name a file.
func ValidDigest(d digest.Digest) error {
	if d.Algorithm() != digest.SHA256 {
		return errdefs.InvalidArgument("context digest %q: want sha256:<64 hex digits>", shortString(string(d)))
	}
	if err := d.Validate(); err != nil {
		return errdefs.InvalidArgument("context digest %q: %v", shortString(string(d)), err)
	}
	return nil
}

func shortString(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// TempFile receives a content whose digest is not known in advance (an ADD
// download).
type TempFile struct {
	w *Writer
}

// NewTempFile starts receiving a content of unknown digest.
func (s *Store) NewTempFile() (*TempFile, error) {
	f, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "dl-")
	if err != nil {
		return nil, fmt.Errorf("context store: %w", err)
	}
	return &TempFile{w: &Writer{s: s, f: f, h: sha256.New()}}, nil
}

func (t *TempFile) Write(p []byte) (int, error) { return t.w.Write(p) }

// Commit stores the content under its digest and returns it.
func (t *TempFile) Commit() (digest.Digest, error) {
	t.w.d = digest.NewDigestFromBytes(digest.SHA256, t.w.h.Sum(nil))
	return t.w.d, t.w.Commit()
}

// Close drops an uncommitted content.
func (t *TempFile) Close() error { return t.w.Close() }

// Open opens the content of d.
func (s *Store) Open(d digest.Digest) (*os.File, error) {
	f, err := os.Open(s.Path(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errdefs.NotFound("context content %s is not in the store", d)
	}
	return f, err
}
