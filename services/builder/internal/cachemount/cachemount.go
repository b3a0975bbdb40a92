// Package cachemount holds the directories of RUN --mount=type=cache: one
// per cache id, on the builder's disk, kept across builds and builder
// restarts and never part of a layer, an image or a cache key. A step
// acquires its directory with the id's sharing mode (BuildKit's): shared
// steps use it at once, a locked step waits for the others using it, a
// private step gets a directory of its own when the id is in use. The
// store holds the directories to a size by evicting whole ids, least
// recently used first, that no step is using.
package cachemount

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/strata-build/strata/lib/errdefs"
)

// Sharing says how steps that use the same cache id at once share it.
type Sharing string

// BuildKit's sharing modes.
const (
	Shared  Sharing = "shared"
	Private Sharing = "private"
	Locked  Sharing = "locked"
)

// DefaultMaxBytes is the size the store is held to when New is given 0.
const DefaultMaxBytes = 10 << 30

// Spec is a cache mount a step asks for.
type Spec struct {
	ID      string
	Sharing Sharing
	// Mode, UID and GID are those of the directory when it is created;
	// an existing one keeps its own.
	Mode     fs.FileMode
	UID, GID int
	// Seed, if set, fills a directory when it is created (a cache mount's
	// from= and source=); Base names what it fills it with. The same id
	// with different bases are different directories, as in BuildKit.
	Seed func(dir string) error
	Base string
}

// key is the entry a spec uses.
func (sp Spec) key() string {
	if sp.Base == "" {
		return sp.ID
	}
	return sp.ID + "\x00" + sp.Base
}

// Store holds the cache directories under one directory:
// <dir>/<sha256 of id>/{id,data}, and <dir>/private/ for private
// directories, which last one step.
type Store struct {
	dir string
	max int64

	mu      sync.Mutex
	entries map[string]*entry // by id
}

// entry is one cache id's directory.
type entry struct {
	id    string
	dir   string
	users int
	// lock is held by a locked step for its whole run.
	lock chan struct{}
	// creating is held while the directory is made and seeded.
	creating sync.Mutex
	used     time.Time
	size     int64
}

// New opens (or creates) the store in dir, holding it to maxBytes
// (DefaultMaxBytes when 0). The ids found there are kept, with the time
// they were last used; private directories a crash left are removed.
func New(dir string, maxBytes int64) (*Store, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.RemoveAll(filepath.Join(dir, "private")); err != nil {
		return nil, err
	}
	s := &Store{dir: dir, max: maxBytes, entries: map[string]*entry{}}
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, de := range des {
		if !de.IsDir() {
			continue
		}
		edir := filepath.Join(dir, de.Name())
		idFile := filepath.Join(edir, "id")
		b, err := os.ReadFile(idFile)
		if err != nil || de.Name() != hashID(string(b)) {
			// Half-created or foreign: nothing of it can be used.
			os.RemoveAll(edir)
			continue
		}
		fi, err := os.Stat(idFile)
		if err != nil {
			return nil, err
		}
		e := &entry{id: string(b), dir: edir, lock: make(chan struct{}, 1), used: fi.ModTime()}
		e.size = dirSize(e.data())
		s.entries[e.id] = e
	}
	return s, nil
}

func hashID(id string) string {
	h := sha256.Sum256([]byte(id))
	return hex.EncodeToString(h[:])
}

func (e *entry) data() string { return filepath.Join(e.dir, "data") }

// Acquire returns the directory of a cache mount and the function that
// gives it back, which the step calls once it ended. A locked spec waits
// until no other step uses the id, or ctx ends.
func (s *Store) Acquire(ctx context.Context, sp Spec) (dir string, release func(), err error) {
	if sp.ID == "" {
		return "", nil, errdefs.InvalidArgument("a cache mount needs an id")
	}
	s.mu.Lock()
	key := sp.key()
	e, ok := s.entries[key]
	if !ok {
		e = &entry{id: key, dir: filepath.Join(s.dir, hashID(key)), lock: make(chan struct{}, 1)}
		s.entries[key] = e
	}
	e.users++
	private := sp.Sharing == Private && e.users > 1
	s.mu.Unlock()
	done := func() {
		s.mu.Lock()
		e.users--
		e.used = time.Now()
		s.mu.Unlock()
	}

	if sp.Sharing == Locked {
		select {
		case e.lock <- struct{}{}:
		case <-ctx.Done():
			done()
			return "", nil, ctx.Err()
		}
	}
	unlock := func() {
		if sp.Sharing == Locked {
			<-e.lock
		}
	}
	if private {
		dir, err := s.privateDir(sp)
		if err != nil {
			unlock()
			done()
			return "", nil, err
		}
		return dir, func() { os.RemoveAll(filepath.Dir(dir)); done() }, nil
	}
	if err := s.create(e, sp); err != nil {
		unlock()
		done()
		return "", nil, err
	}
	var once sync.Once
	return e.data(), func() {
		once.Do(func() {
			unlock()
			size := dirSize(e.data())
			now := time.Now()
			os.Chtimes(filepath.Join(e.dir, "id"), now, now)
			s.mu.Lock()
			e.size = size
			s.mu.Unlock()
			done()
			s.evict()
		})
	}, nil
}

// create makes an id's directory if it is not there yet. The id file is
// written last: a directory without it is not an entry (see New).
//
// Only the entry is locked meanwhile: seeding may copy a tree, and other
// ids go on. Eviction leaves it alone, since the caller counts as a user.
func (s *Store) create(e *entry, sp Spec) error {
	e.creating.Lock()
	defer e.creating.Unlock()
	if _, err := os.Stat(filepath.Join(e.dir, "id")); err == nil {
		return nil
	}
	os.RemoveAll(e.dir)
	if err := os.MkdirAll(e.dir, 0o700); err != nil {
		return err
	}
	if err := mkdirOwned(e.data(), sp); err != nil {
		return err
	}
	if sp.Seed != nil {
		if err := sp.Seed(e.data()); err != nil {
			os.RemoveAll(e.dir)
			return err
		}
	}
	return os.WriteFile(filepath.Join(e.dir, "id"), []byte(e.id), 0o600)
}

// privateDir makes a directory for one private step, removed when it ends.
func (s *Store) privateDir(sp Spec) (string, error) {
	var b [8]byte
	rand.Read(b[:])
	parent := filepath.Join(s.dir, "private", hex.EncodeToString(b[:]))
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return "", err
	}
	dir := filepath.Join(parent, "data")
	if err := mkdirOwned(dir, sp); err != nil {
		os.RemoveAll(parent)
		return "", err
	}
	if sp.Seed != nil {
		if err := sp.Seed(dir); err != nil {
			os.RemoveAll(parent)
			return "", err
		}
	}
	return dir, nil
}

func mkdirOwned(dir string, sp Spec) error {
	mode := sp.Mode
	if mode == 0 {
		mode = 0o755
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	if err := os.Chown(dir, sp.UID, sp.GID); err != nil {
		return err
	}
	// Chmod, not Mkdir's mode: the umask does not apply, setuid and sticky
	// bits do.
	return os.Chmod(dir, goMode(mode))
}

// goMode turns Unix permission bits into fs.FileMode's.
func goMode(m fs.FileMode) fs.FileMode {
	out := m & fs.ModePerm
	if m&0o4000 != 0 {
		out |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		out |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		out |= fs.ModeSticky
	}
	return out
}

// evict removes the least recently used ids no step uses until the store
// is within its size.
func (s *Store) evict() {
	s.mu.Lock()
	var total int64
	var idle []*entry
	for _, e := range s.entries {
		total += e.size
		if e.users == 0 {
			idle = append(idle, e)
		}
	}
	slices.SortFunc(idle, func(a, b *entry) int { return a.used.Compare(b.used) })
	defer s.mu.Unlock()
	for _, e := range idle {
		if total <= s.max {
			break
		}
		total -= e.size
		delete(s.entries, e.id)
		// Under the lock, so that no step creates the id again meanwhile;
		// the id file first: a directory half removed is no entry.
		os.Remove(filepath.Join(e.dir, "id"))
		os.RemoveAll(e.dir)
	}
}

// Usage is one cache id's directory.
type Usage struct {
	ID string
	// Source is what filled the directory when it was made (a cache
	// mount's from= and source=: "stage KEY PATH" or "image ID PATH");
	// empty for a directory that started empty. The same id with
	// different sources are different directories.
	Source   string
	Size     int64
	LastUsed time.Time
	InUse    bool
}

func (e *entry) usage() Usage {
	id, source, _ := strings.Cut(e.id, "\x00")
	return Usage{ID: id, Source: source, Size: e.size, LastUsed: e.used, InUse: e.users > 0}
}

// Usage lists the cache ids held, most recently used first.
func (s *Store) Usage() []Usage {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Usage
	for _, e := range s.entries {
		if _, err := os.Stat(filepath.Join(e.dir, "id")); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		out = append(out, e.usage())
	}
	slices.SortFunc(out, func(a, b Usage) int { return b.LastUsed.Compare(a.LastUsed) })
	return out
}

// PruneOptions choose the cache ids Prune removes. The zero value removes
// every id no step uses.
type PruneOptions struct {
	// IDs, when set, limits the prune to these cache ids (every source of
	// each).
	IDs []string
	// UnusedFor, when positive, limits it to the ids last used at least
	// this long ago.
	UnusedFor time.Duration
	// KeepBytes, when positive, stops it once the store holds at most
	// this many bytes, removing the least recently used ids first.
	KeepBytes int64
}

// Prune removes the cache ids opts chooses that no step uses, least
// recently used first, and returns them (with their size as they were).
// An id a step uses is never removed: it is counted in the store's size
// but left alone.
func (s *Store) Prune(opts PruneOptions) []Usage {
	s.mu.Lock()
	var total int64
	var idle []*entry
	for _, e := range s.entries {
		total += e.size
		if e.users > 0 {
			continue
		}
		if _, err := os.Stat(filepath.Join(e.dir, "id")); err != nil {
			continue // never made (see create)
		}
		id, _, _ := strings.Cut(e.id, "\x00")
		if len(opts.IDs) > 0 && !slices.Contains(opts.IDs, id) {
			continue
		}
		if opts.UnusedFor > 0 && time.Since(e.used) < opts.UnusedFor {
			continue
		}
		idle = append(idle, e)
	}
	slices.SortFunc(idle, func(a, b *entry) int { return a.used.Compare(b.used) })
	var removed []Usage
	var trash []string
	for _, e := range idle {
		if opts.KeepBytes > 0 && total <= opts.KeepBytes {
			break
		}
		total -= e.size
		delete(s.entries, e.id)
		removed = append(removed, e.usage())
		// As in evict, under the lock and the id file first; the rest
		// moves to the private directory (which New empties) so that
		// removing a large tree does not hold the store.
		os.Remove(filepath.Join(e.dir, "id"))
		if t, err := s.trashDir(); err == nil && os.Rename(e.dir, t) == nil {
			trash = append(trash, t)
		} else {
			os.RemoveAll(e.dir)
		}
	}
	s.mu.Unlock()
	for _, t := range trash {
		os.RemoveAll(t)
	}
	return removed
}

// trashDir is a new name under the private directory for a directory to
// remove.
func (s *Store) trashDir() (string, error) {
	var b [8]byte
	rand.Read(b[:])
	parent := filepath.Join(s.dir, "private")
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return "", err
	}
	return filepath.Join(parent, "pruned-"+hex.EncodeToString(b[:])), nil
}

// dirSize is the bytes of the files under dir (directories not counted).
func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			n += fi.Size()
		}
		return nil
	})
	return n
}
