// Package buildctx holds build contexts on the builder's side: the
// builder's half of the Build RPC's context-sync protocol (Receiver: build
// slots, the file list or a tree remembered by its digest, the contents
// streaming in while the build runs, .dockerignore, the Dockerfile), the
// store of context file contents by digest that every build shares (so a
// file sent once is never sent again), and the tree of one build's context,
// made from the file list the client sends, that COPY and ADD resolve
// sources in. The client's half is github.com/strata-build/strata/client/buildcontext.
package buildctx

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/gob"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/lib/errdefs"
)

// packLimit is the largest content kept in a pack; larger ones get a file
// of their own. Creating a file costs about a millisecond on the disks
// builders run on, so a context of thousands of small files is appended to
// one pack per transfer instead.
const packLimit = 1 << 20

// Store keeps file contents by sha256 digest in a directory, shared by all
// builds: small contents in packs (one per transfer, with an index file),
// large ones in files of their own. An in-memory index answers which
// contents it holds without touching the disk. It is bounded: Trim removes
// the least recently used packs and files that no running build holds.
type Store struct {
	dir string
	max int64

	mu    sync.Mutex
	index map[digest.Digest]location
	units map[string]*unit // packs and files, by name
	// holds are the contents each running build holds, by hold: a build
	// of a large context holds thousands, so holding is one map entry, and
	// Trim, which runs only past the bound, gathers them.
	holds    map[uint64][]digest.Digest
	nextHold uint64
	nextID   int64

	memoMu sync.Mutex
	memo   map[[sha256.Size]byte]string // see Memo; by the key's SHA-256
}

// maxMemo bounds the values Memo keeps: a few contexts' worth of files.
// Keys are kept as their SHA-256 and values of at most maxMemoValue bytes
// (a tarsum is 71), so the memo holds at most about 10 MiB whatever the
// names in a context.
const (
	maxMemo      = 1 << 16
	maxMemoValue = 128
)

// location is where a content is.
type location struct {
	unit   string // "p-<id>" for a pack, "f-<hex>" for a file of its own
	offset int64
	size   int64
}

// unit is a pack or a file, the granularity of eviction.
type unit struct {
	path     string
	size     int64
	lastUsed time.Time
	digests  []digest.Digest
}

// packEntry is one record of a pack's index file.
type packEntry struct {
	Digest digest.Digest
	Offset int64
	Size   int64
}

// NewStore opens (creating) a store in dir that keeps at most maxBytes.
// Packs whose transfer never finished (no index file) are removed.
func NewStore(dir string, maxBytes int64) (*Store, error) {
	for _, d := range []string{"tmp", "packs", "files"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("context store: %w", err)
		}
	}
	s := &Store{dir: dir, max: maxBytes, index: map[digest.Digest]location{}, units: map[string]*unit{}, holds: map[uint64][]digest.Digest{}}
	if err := os.RemoveAll(filepath.Join(dir, "tmp")); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		return nil, err
	}
	if err := s.load(); err != nil {
		return nil, fmt.Errorf("context store: %w", err)
	}
	return s, nil
}

func (s *Store) load() error {
	packs, err := os.ReadDir(filepath.Join(s.dir, "packs"))
	if err != nil {
		return err
	}
	for _, e := range packs {
		name := e.Name()
		if !strings.HasSuffix(name, ".pack") {
			continue
		}
		id := strings.TrimSuffix(name, ".pack")
		p := filepath.Join(s.dir, "packs", name)
		entries, err := readIndex(strings.TrimSuffix(p, ".pack") + ".idx")
		if err != nil {
			os.Remove(p)
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		u := &unit{path: p, size: info.Size(), lastUsed: info.ModTime()}
		for _, pe := range entries {
			s.index[pe.Digest] = location{unit: "p-" + id, offset: pe.Offset, size: pe.Size}
			u.digests = append(u.digests, pe.Digest)
		}
		s.units["p-"+id] = u
	}
	return filepath.WalkDir(filepath.Join(s.dir, "files"), func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		d := digest.NewDigestFromEncoded(digest.SHA256, e.Name())
		if d.Validate() != nil {
			return nil
		}
		info, err := e.Info()
		if err != nil {
			return nil
		}
		s.index[d] = location{unit: "f-" + e.Name(), size: info.Size()}
		s.units["f-"+e.Name()] = &unit{path: p, size: info.Size(), lastUsed: info.ModTime(), digests: []digest.Digest{d}}
		return nil
	})
}

func readIndex(p string) ([]packEntry, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var entries []packEntry
	return entries, gob.NewDecoder(f).Decode(&entries)
}

// Missing returns the digests of ds the store does not hold, marking the
// others used now so Trim keeps them.
func (s *Store) Missing(ds []digest.Digest) []digest.Digest {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []digest.Digest
	now := time.Now()
	touched := map[string]bool{}
	for _, d := range ds {
		loc, ok := s.index[d]
		if !ok {
			out = append(out, d)
			continue
		}
		if !touched[loc.unit] {
			touched[loc.unit] = true
			if u := s.units[loc.unit]; u != nil {
				// Persist the use coarsely, so a restart keeps the order.
				if now.Sub(u.lastUsed) > time.Minute {
					os.Chtimes(u.path, time.Time{}, now)
				}
				u.lastUsed = now
			}
		}
	}
	return out
}

// Hold keeps the contents of ds from being trimmed until the returned
// function is called; a build holds its context's files while it runs.
func (s *Store) Hold(ds []digest.Digest) (release func()) {
	s.mu.Lock()
	id := s.nextHold
	s.nextHold++
	s.holds[id] = ds
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(s.holds, id)
		s.mu.Unlock()
	}
}

// Memo returns the value compute returns for key, computing it once for
// every build: a value derived from contents (Docker's tarsum of a file
// for COPY's history, which a build whose context changed one file would
// otherwise read all the others again for). key must name all the value
// depends on, contents by their digest. Errors are not kept, nor values
// longer than maxMemoValue; beyond maxMemo values, some are forgotten.
func (s *Store) Memo(key string, compute func() (string, error)) (string, error) {
	k := sha256.Sum256([]byte(key))
	s.memoMu.Lock()
	v, ok := s.memo[k]
	s.memoMu.Unlock()
	if ok {
		return v, nil
	}
	v, err := compute()
	if err != nil || len(v) > maxMemoValue {
		return v, err
	}
	s.memoMu.Lock()
	defer s.memoMu.Unlock()
	if s.memo == nil {
		s.memo = map[[sha256.Size]byte]string{}
	}
	if len(s.memo) >= maxMemo {
		for k := range s.memo { // map order: an arbitrary half goes
			if len(s.memo) < maxMemo/2 {
				break
			}
			delete(s.memo, k)
		}
	}
	s.memo[k] = v
	return v, nil
}

// Size returns the size of the content of d (NOT_FOUND when the store
// does not hold it).
func (s *Store) Size(d digest.Digest) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	loc, ok := s.index[d]
	if !ok {
		return 0, errdefs.NotFound("context content %s is not in the store", d)
	}
	return loc.size, nil
}

// Open opens the content of d.
func (s *Store) Open(d digest.Digest) (io.ReadCloser, error) {
	s.mu.Lock()
	loc, ok := s.index[d]
	var u *unit
	if ok {
		u = s.units[loc.unit]
	}
	s.mu.Unlock()
	if !ok || u == nil {
		return nil, errdefs.NotFound("context content %s is not in the store", d)
	}
	f, err := os.Open(u.path)
	if err != nil {
		return nil, fmt.Errorf("context content %s: %w", d, err)
	}
	if strings.HasPrefix(loc.unit, "f-") {
		return f, nil
	}
	return sectionCloser{io.NewSectionReader(f, loc.offset, loc.size), f}, nil
}

type sectionCloser struct {
	*io.SectionReader
	f *os.File
}

func (s sectionCloser) Close() error { return s.f.Close() }

// Batch receives the contents of one transfer: small ones are appended to
// one pack, large ones become files. Contents are readable as soon as they
// are committed; Close makes the pack survive a restart.
type Batch struct {
	s       *Store
	id      string
	pack    *os.File
	offset  int64
	entries []packEntry
}

// NewBatch starts a transfer.
func (s *Store) NewBatch() *Batch {
	s.mu.Lock()
	s.nextID++
	id := fmt.Sprintf("%d-%d", time.Now().UnixNano(), s.nextID)
	s.mu.Unlock()
	return &Batch{s: s, id: id}
}

// Writer receives one content in order; Commit checks it against the
// digest it was opened for and makes it visible.
type Writer struct {
	b    *Batch
	d    digest.Digest
	want int64 // the declared size; SizeUnknown
	h    hash.Hash
	buf  bytes.Buffer
	tmp  *os.File
	size int64
}

// SizeUnknown is the size of a content whose size is not declared.
const SizeUnknown = -1

// NewWriter starts receiving the content of d, of the size given (or
// SizeUnknown): more bytes than that fail the write, fewer the commit.
func (b *Batch) NewWriter(d digest.Digest, size int64) (*Writer, error) {
	if err := ValidDigest(d); err != nil {
		return nil, err
	}
	return &Writer{b: b, d: d, want: size, h: sha256.New()}, nil
}

// Offset is how many bytes the writer has.
func (w *Writer) Offset() int64 { return w.size }

func (w *Writer) Write(p []byte) (int, error) {
	if w.want != SizeUnknown && w.size+int64(len(p)) > w.want {
		return 0, errdefs.InvalidArgument("context file content %s: more bytes than the %d its entry declares", w.d, w.want)
	}
	w.h.Write(p)
	w.size += int64(len(p))
	if w.tmp == nil && w.size <= packLimit {
		return w.buf.Write(p)
	}
	if w.tmp == nil {
		f, err := os.CreateTemp(filepath.Join(w.b.s.dir, "tmp"), "in-")
		if err != nil {
			return 0, fmt.Errorf("context store: %w", err)
		}
		w.tmp = f
		if _, err := w.tmp.Write(w.buf.Bytes()); err != nil {
			return 0, err
		}
		w.buf = bytes.Buffer{}
	}
	return w.tmp.Write(p)
}

// Commit verifies the content and stores it.
func (w *Writer) Commit() error {
	if w.want != SizeUnknown && w.size != w.want {
		w.Close()
		return errdefs.InvalidArgument("context file content %s: %d bytes, not the %d its entry declares", w.d, w.size, w.want)
	}
	got := digest.NewDigestFromBytes(digest.SHA256, w.h.Sum(nil))
	if got != w.d {
		w.Close()
		return errdefs.InvalidArgument("context file content does not match its digest: got %s, want %s", got, w.d)
	}
	if w.tmp != nil {
		return w.b.s.commitFile(w)
	}
	return w.b.append(w.d, w.buf.Bytes())
}

// Close drops an uncommitted content.
func (w *Writer) Close() error {
	if w.tmp != nil {
		w.tmp.Close()
		os.Remove(w.tmp.Name())
		w.tmp = nil
	}
	return nil
}

func (s *Store) commitFile(w *Writer) error {
	defer w.Close()
	if err := w.tmp.Close(); err != nil {
		return err
	}
	name := w.d.Encoded()
	p := filepath.Join(s.dir, "files", name)
	if err := os.Rename(w.tmp.Name(), p); err != nil {
		return err
	}
	w.tmp = nil
	s.mu.Lock()
	defer s.mu.Unlock()
	s.index[w.d] = location{unit: "f-" + name, size: w.size}
	s.units["f-"+name] = &unit{path: p, size: w.size, lastUsed: time.Now(), digests: []digest.Digest{w.d}}
	return nil
}

func (b *Batch) append(d digest.Digest, data []byte) error {
	s := b.s
	if b.pack == nil {
		f, err := os.OpenFile(filepath.Join(s.dir, "packs", b.id+".pack"), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("context store: %w", err)
		}
		b.pack = f
		s.mu.Lock()
		s.units["p-"+b.id] = &unit{path: f.Name(), lastUsed: time.Now()}
		s.mu.Unlock()
	}
	if _, err := b.pack.WriteAt(data, b.offset); err != nil {
		return fmt.Errorf("context store: %w", err)
	}
	loc := location{unit: "p-" + b.id, offset: b.offset, size: int64(len(data))}
	b.entries = append(b.entries, packEntry{Digest: d, Offset: b.offset, Size: int64(len(data))})
	b.offset += int64(len(data))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.index[d] = loc
	u := s.units["p-"+b.id]
	u.size = b.offset
	u.digests = append(u.digests, d)
	return nil
}

// Close ends the transfer, writing the pack's index so the pack survives a
// restart.
func (b *Batch) Close() error {
	if b.pack == nil {
		return nil
	}
	defer b.pack.Close()
	tmp, err := os.CreateTemp(filepath.Join(b.s.dir, "tmp"), "idx-")
	if err != nil {
		return err
	}
	if err := gob.NewEncoder(tmp).Encode(b.entries); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	tmp.Close()
	return os.Rename(tmp.Name(), filepath.Join(b.s.dir, "packs", b.id+".idx"))
}

// NewWriter starts receiving one content outside a transfer.
func (s *Store) NewWriter(d digest.Digest, size int64) (*Writer, error) {
	return s.NewBatch().NewWriter(d, size)
}

// Trim removes the least recently used packs and files not held by a
// build until the store is within its limit. It returns the bytes removed.
func (s *Store) Trim(ctx context.Context) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var total int64
	names := make([]string, 0, len(s.units))
	for name, u := range s.units {
		total += u.size
		names = append(names, name)
	}
	if total <= s.max {
		return 0, nil
	}
	sort.Slice(names, func(i, j int) bool { return s.units[names[i]].lastUsed.Before(s.units[names[j]].lastUsed) })
	held := map[digest.Digest]bool{}
	for _, ds := range s.holds {
		for _, d := range ds {
			held[d] = true
		}
	}
	var freed int64
	for _, name := range names {
		if total-freed <= s.max || ctx.Err() != nil {
			break
		}
		u := s.units[name]
		if slices.ContainsFunc(u.digests, func(d digest.Digest) bool { return held[d] }) {
			continue
		}
		if err := os.Remove(u.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if strings.HasPrefix(name, "p-") {
			os.Remove(strings.TrimSuffix(u.path, ".pack") + ".idx")
		}
		for _, d := range u.digests {
			if s.index[d].unit == name {
				delete(s.index, d)
			}
		}
		delete(s.units, name)
		freed += u.size
	}
	return freed, ctx.Err()
}

// ValidDigest checks that d is a well-formed sha256 digest, so that it can
// name a file.
func ValidDigest(d digest.Digest) error {
	// Validate first: Algorithm panics on a digest without a colon.
	if err := d.Validate(); err != nil {
		return errdefs.InvalidArgument("context digest %q: %v", shortString(string(d)), err)
	}
	if d.Algorithm() != digest.SHA256 {
		return errdefs.InvalidArgument("context digest %q: want sha256:<64 hex digits>", shortString(string(d)))
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
// download); it always becomes a file of its own.
type TempFile struct {
	s *Store
	f *os.File
	h hash.Hash
	n int64
}

// MkdirTemp makes a directory for a fetch's scratch files (a Git
// checkout's repository) beside the store's partial contents, so what the
// builder leaves there when it dies is removed when it starts again.
func (s *Store) MkdirTemp(pattern string) (string, error) {
	d, err := os.MkdirTemp(filepath.Join(s.dir, "tmp"), pattern)
	if err != nil {
		return "", fmt.Errorf("context store: %w", err)
	}
	return d, nil
}

// NewTempFile starts receiving a content of unknown digest.
func (s *Store) NewTempFile() (*TempFile, error) {
	f, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "dl-")
	if err != nil {
		return nil, fmt.Errorf("context store: %w", err)
	}
	return &TempFile{s: s, f: f, h: sha256.New()}, nil
}

func (t *TempFile) Write(p []byte) (int, error) {
	n, err := t.f.Write(p)
	t.h.Write(p[:n])
	t.n += int64(n)
	return n, err
}

// Commit stores the content under its digest and returns it.
func (t *TempFile) Commit() (digest.Digest, error) {
	d := digest.NewDigestFromBytes(digest.SHA256, t.h.Sum(nil))
	w := &Writer{b: t.s.NewBatch(), d: d, tmp: t.f, size: t.n}
	t.f = nil
	return d, t.s.commitFile(w)
}

// Close drops an uncommitted content.
func (t *TempFile) Close() error {
	if t.f != nil {
		t.f.Close()
		os.Remove(t.f.Name())
	}
	return nil
}
