// Package cachemount holds the directories of RUN --mount=type=cache, on
// the builder's disk, kept across builds and builder restarts and never
// part of a layer, an image or a cache key.
//
// As in BuildKit's cache mount manager, an id has one or more instances,
// each a directory, and a step acquires one with its sharing mode: shared
// steps use the instance other shared steps use at once, or else a free
// one; a private step takes a free instance, or a new one when every
// instance is in use; a locked step takes a free instance, or waits for
// one. Every instance is kept for later steps of any sharing (the one most
// recently used first), so the instances a private step made while the
// id was in use are reused, not thrown away. The store holds the
// instances to a size by evicting those no step is using, least recently
// used first.
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
	"strconv"
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
	// with different bases are different caches, as in BuildKit.
	Seed func(dir string) error
	Base string
}

// key is the cache a spec uses.
func (sp Spec) key() string {
	if sp.Base == "" {
		return sp.ID
	}
	return sp.ID + "\x00" + sp.Base
}

// Store holds the cache directories under one directory: an id's first
// instance in <dir>/<sha256 of key>/{id,data}, the others in
// <dir>/<sha256 of key>-<n>/{id,data}, and <dir>/trash/ for directories
// being removed.
type Store struct {
	dir string
	max int64

	mu     sync.Mutex
	caches map[string]*cache // by key
	// freed is closed, and replaced, each time a step gives an instance
	// back: locked steps waiting for one look again.
	freed chan struct{}
}

// cache is one key's instances.
type cache struct {
	key       string
	instances []*instance
	// shared is the instance shared steps use now, if any.
	shared *instance
}

// instance is one directory of a cache.
type instance struct {
	key string
	n   int
	dir string
	// users are the steps using it: one unless they share it.
	users int
	// creating is held while the directory is made and seeded.
	creating sync.Mutex
	used     time.Time
	size     int64
}

// New opens (or creates) the store in dir, holding it to maxBytes
// (DefaultMaxBytes when 0). The instances found there are kept, with the
// time they were last used; what a crash left half made or half removed
// goes.
func New(dir string, maxBytes int64) (*Store, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.RemoveAll(filepath.Join(dir, "trash")); err != nil {
		return nil, err
	}
	s := &Store{dir: dir, max: maxBytes, caches: map[string]*cache{}, freed: make(chan struct{})}
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, de := range des {
		if !de.IsDir() {
			continue
		}
		idir := filepath.Join(dir, de.Name())
		idFile := filepath.Join(idir, "id")
		b, err := os.ReadFile(idFile)
		hash, n, ok := instanceName(de.Name())
		if err != nil || !ok || hash != hashID(string(b)) {
			// Half-created or foreign: nothing of it can be used.
			os.RemoveAll(idir)
			continue
		}
		fi, err := os.Stat(idFile)
		if err != nil {
			return nil, err
		}
		i := &instance{key: string(b), n: n, dir: idir, used: fi.ModTime()}
		i.size = dirSize(i.data())
		s.cache(i.key).instances = append(s.cache(i.key).instances, i)
	}
	return s, nil
}

func hashID(id string) string {
	h := sha256.Sum256([]byte(id))
	return hex.EncodeToString(h[:])
}

// instanceName reads a directory's name: a key's hash, and "-n" for
// any instance but the first.
func instanceName(name string) (hash string, n int, ok bool) {
	hash, num, found := strings.Cut(name, "-")
	if !found {
		return hash, 0, true
	}
	n, err := strconv.Atoi(num)
	return hash, n, err == nil && n > 0 && strconv.Itoa(n) == num
}

func (i *instance) data() string { return filepath.Join(i.dir, "data") }

// cache returns key's cache, added when there is none. The caller holds
// s.mu.
func (s *Store) cache(key string) *cache {
	c, ok := s.caches[key]
	if !ok {
		c = &cache{key: key}
		s.caches[key] = c
	}
	return c
}

// free returns the most recently used instance no step uses; nil when
// each is in use.
func (c *cache) free() *instance {
	var best *instance
	for _, i := range c.instances {
		if i.users == 0 && (best == nil || i.used.After(best.used)) {
			best = i
		}
	}
	return best
}

// add adds an instance, not made yet (see create), with the lowest number
// no instance has.
func (s *Store) add(c *cache) *instance {
	n := 0
	for slices.ContainsFunc(c.instances, func(i *instance) bool { return i.n == n }) {
		n++
	}
	name := hashID(c.key)
	if n > 0 {
		name += "-" + strconv.Itoa(n)
	}
	i := &instance{key: c.key, n: n, dir: filepath.Join(s.dir, name)}
	c.instances = append(c.instances, i)
	return i
}

// Acquire returns the directory of a cache mount and the function that
// gives it back, which the step calls once it ended. A locked spec waits
// until an instance of the id is free, or ctx ends.
func (s *Store) Acquire(ctx context.Context, sp Spec) (dir string, release func(), err error) {
	if sp.ID == "" {
		return "", nil, errdefs.InvalidArgument("a cache mount needs an id")
	}
	s.mu.Lock()
	c := s.cache(sp.key())
	var i *instance
	for i == nil {
		switch sp.Sharing {
		case Private:
			if i = c.free(); i == nil {
				i = s.add(c)
			}
		case Locked:
			if i = c.free(); i == nil && len(c.instances) == 0 {
				i = s.add(c)
			}
			if i == nil {
				freed := s.freed
				s.mu.Unlock()
				select {
				case <-freed:
				case <-ctx.Done():
					return "", nil, ctx.Err()
				}
				s.mu.Lock()
				// An eviction may have dropped the cache meanwhile.
				c = s.cache(sp.key())
			}
		default:
			if i = c.shared; i == nil {
				if i = c.free(); i == nil {
					i = s.add(c)
				}
				c.shared = i
			}
		}
	}
	i.users++
	s.mu.Unlock()

	var once sync.Once
	release = func() {
		once.Do(func() {
			size := dirSize(i.data())
			now := time.Now()
			os.Chtimes(filepath.Join(i.dir, "id"), now, now)
			s.mu.Lock()
			i.users--
			i.used = now
			i.size = size
			if i.users == 0 && c.shared == i {
				c.shared = nil
			}
			close(s.freed)
			s.freed = make(chan struct{})
			s.mu.Unlock()
			s.evict()
		})
	}
	if err := s.create(i, sp); err != nil {
		release()
		return "", nil, err
	}
	return i.data(), release, nil
}

// create makes an instance's directory if it is not there yet. The id
// file is written last: a directory without it is not an instance (see
// New).
//
// Only the instance is locked meanwhile: seeding may copy a tree, and
// other ids go on. Eviction leaves it alone, since the caller counts as a
// user.
func (s *Store) create(i *instance, sp Spec) error {
	i.creating.Lock()
	defer i.creating.Unlock()
	if _, err := os.Stat(filepath.Join(i.dir, "id")); err == nil {
		return nil
	}
	os.RemoveAll(i.dir)
	if err := os.MkdirAll(i.dir, 0o700); err != nil {
		return err
	}
	if err := mkdirOwned(i.data(), sp); err != nil {
		return err
	}
	if sp.Seed != nil {
		if err := sp.Seed(i.data()); err != nil {
			os.RemoveAll(i.dir)
			return err
		}
	}
	return os.WriteFile(filepath.Join(i.dir, "id"), []byte(i.key), 0o600)
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

// instances lists every instance. The caller holds s.mu.
func (s *Store) instances() []*instance {
	var out []*instance
	for _, c := range s.caches {
		out = append(out, c.instances...)
	}
	return out
}

// drop takes an instance out of its cache, and the cache out of the
// store once it has none. The caller holds s.mu.
func (s *Store) drop(i *instance) {
	c := s.caches[i.key]
	c.instances = slices.DeleteFunc(c.instances, func(x *instance) bool { return x == i })
	if len(c.instances) == 0 {
		delete(s.caches, i.key)
	}
}

// evict removes the least recently used instances no step uses until the
// store is within its size.
func (s *Store) evict() {
	s.mu.Lock()
	defer s.mu.Unlock()
	var total int64
	var idle []*instance
	for _, i := range s.instances() {
		total += i.size
		if i.users == 0 {
			idle = append(idle, i)
		}
	}
	slices.SortFunc(idle, func(a, b *instance) int { return a.used.Compare(b.used) })
	for _, i := range idle {
		if total <= s.max {
			break
		}
		total -= i.size
		s.drop(i)
		// Under the lock, so that no step makes the instance again
		// meanwhile; the id file first: a directory half removed is no
		// instance.
		os.Remove(filepath.Join(i.dir, "id"))
		os.RemoveAll(i.dir)
	}
}

// Usage is one instance of a cache id: an id that steps used with
// sharing=private while it was in use has several.
type Usage struct {
	ID string
	// Source is what filled the directory when it was made (a cache
	// mount's from= and source=: "stage KEY PATH" or "image ID PATH");
	// empty for a directory that started empty. The same id with
	// different sources are different caches.
	Source   string
	Size     int64
	LastUsed time.Time
	InUse    bool
}

func (i *instance) usage() Usage {
	id, source, _ := strings.Cut(i.key, "\x00")
	return Usage{ID: id, Source: source, Size: i.size, LastUsed: i.used, InUse: i.users > 0}
}

// made reports whether the instance's directory was made (see create).
func (i *instance) made() bool {
	_, err := os.Stat(filepath.Join(i.dir, "id"))
	return !errors.Is(err, fs.ErrNotExist)
}

// Usage lists the instances held, most recently used first.
func (s *Store) Usage() []Usage {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Usage
	for _, i := range s.instances() {
		if i.made() {
			out = append(out, i.usage())
		}
	}
	slices.SortFunc(out, func(a, b Usage) int { return b.LastUsed.Compare(a.LastUsed) })
	return out
}

// PruneOptions choose the instances Prune removes. The zero value removes
// every one no step uses.
type PruneOptions struct {
	// IDs, when set, limits the prune to these cache ids (every source and
	// instance of each).
	IDs []string
	// UnusedFor, when positive, limits it to the instances last used at
	// least this long ago.
	UnusedFor time.Duration
	// KeepBytes, when positive, stops it once the store holds at most
	// this many bytes, removing the least recently used instances first.
	KeepBytes int64
}

// Prune removes the instances opts chooses that no step uses, least
// recently used first, and returns them (with their size as they were).
// An instance a step uses is never removed: it is counted in the store's
// size but left alone.
func (s *Store) Prune(opts PruneOptions) []Usage {
	s.mu.Lock()
	var total int64
	var idle []*instance
	for _, i := range s.instances() {
		total += i.size
		if i.users > 0 || !i.made() {
			continue
		}
		id, _, _ := strings.Cut(i.key, "\x00")
		if len(opts.IDs) > 0 && !slices.Contains(opts.IDs, id) {
			continue
		}
		if opts.UnusedFor > 0 && time.Since(i.used) < opts.UnusedFor {
			continue
		}
		idle = append(idle, i)
	}
	slices.SortFunc(idle, func(a, b *instance) int { return a.used.Compare(b.used) })
	var removed []Usage
	var trash []string
	for _, i := range idle {
		if opts.KeepBytes > 0 && total <= opts.KeepBytes {
			break
		}
		total -= i.size
		s.drop(i)
		removed = append(removed, i.usage())
		// As in evict, under the lock and the id file first; the rest
		// moves to the trash directory (which New empties) so that
		// removing a large tree does not hold the store.
		os.Remove(filepath.Join(i.dir, "id"))
		if t, err := s.trashDir(); err == nil && os.Rename(i.dir, t) == nil {
			trash = append(trash, t)
		} else {
			os.RemoveAll(i.dir)
		}
	}
	s.mu.Unlock()
	for _, t := range trash {
		os.RemoveAll(t)
	}
	return removed
}

// trashDir is a new name under the trash directory for a directory to
// remove.
func (s *Store) trashDir() (string, error) {
	var b [8]byte
	rand.Read(b[:])
	parent := filepath.Join(s.dir, "trash")
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return "", err
	}
	return filepath.Join(parent, hex.EncodeToString(b[:])), nil
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
