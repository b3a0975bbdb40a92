// Package snapshot holds the builder's filesystem state: unpacked image layers
// kept by chain ID and reused across builds, and the overlay mounts that give
// each build step a writable root filesystem over them.
//
// A step goes Prepare → (run or copy into RootFS) → layer.WriteDiff(UpperDir)
// → Commit or Release. Commit turns the step's upper directory into the layer
// directory of the new chain by a rename: nothing is extracted again.
//
// On disk, under the store's root (mode 0700, a real filesystem such as ext4
// or xfs, never overlayfs):
//
//	layers/<chain hex>/diff       a layer's files, in overlay lower form
//	layers/<chain hex>/init       Docker's init layer over the chain, made
//	                              when a step first asks for it
//	layers/<chain hex>/meta.json  its chain ID, parent, diff ID and size
//	l/<short>                     a short symlink to a layer dir, so that
//	                              mount options stay under the page size
//	scratch-init/                 the init layer over no layer at all
//	active/<id>/{upper,work,merged}  one prepared step
//	tmp/                          unpacks and removals in progress
//
// The unpacked layers are a cache of what the blob store holds durably: the
// store evicts the least recently used ones beyond its size limit (never one
// a prepared step uses), and drops them all when the machine rebooted, since
// steps are mounted "volatile" (without syncs) for speed.
package snapshot

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/lib/compression"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/layer"
)

// Layer is one layer of an image, as Prepare needs it.
type Layer struct {
	// DiffID is the digest of the layer's uncompressed tar (the image
	// config's rootfs.diff_ids entry).
	DiffID digest.Digest
	// Open returns the layer blob (gzip, zstd or plain tar). It is called
	// only when the layer is not unpacked already.
	Open func(ctx context.Context) (io.ReadCloser, error)
}

// Options configure a Store.
type Options struct {
	// MaxBytes bounds the unpacked layers kept (by Docker's diff size);
	// the least recently used unused layers are evicted beyond it. Zero
	// means no limit.
	MaxBytes int64
	// Limits bound the decompression of one layer being unpacked
	// (RESOURCE_EXHAUSTED beyond them); zero fields take the compression
	// package's defaults.
	Limits compression.Limits
	// MaxLayerEntries bounds the number of tar entries of one layer being
	// unpacked (RESOURCE_EXHAUSTED beyond it). Zero means no limit.
	MaxLayerEntries int64
}

// Store is the builder's snapshot store. It is safe for concurrent use by
// several builds, and by several Store values in one process only if they
// have different roots.
type Store struct {
	root string
	opts Options

	mu        sync.Mutex
	layers    map[digest.Digest]*entry
	unpacking map[digest.Digest]chan struct{} // closed when the unpack ends
	initing   map[string]chan struct{}        // init layers being made, by chain
	total     int64
}

type entry struct {
	meta     meta
	refs     int // prepared steps using the layer
	lastUsed time.Time
}

// meta is what layers/<hex>/meta.json holds.
type meta struct {
	ChainID digest.Digest `json:"chain_id"`
	Parent  digest.Digest `json:"parent,omitempty"`
	DiffID  digest.Digest `json:"diff_id"`
	Size    int64         `json:"size"`
	Link    string        `json:"link"`
}

// Info describes an unpacked layer.
type Info struct {
	ChainID digest.Digest
	Parent  digest.Digest
	DiffID  digest.Digest
	// Size is Docker's diff size of the layer.
	Size int64
	// InUse counts the prepared steps mounting the layer.
	InUse int
}

const bootIDFile = "boot_id"

// New opens (creating it if needed) the store at root. It removes what a
// previous process left behind: mounts and directories of prepared steps,
// unfinished unpacks, and all layers when the machine rebooted since.
func New(root string, opts Options) (*Store, error) {
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	s := &Store{
		root:      root,
		opts:      opts,
		layers:    map[digest.Digest]*entry{},
		unpacking: map[digest.Digest]chan struct{}{},
		initing:   map[string]chan struct{}{},
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("creating snapshot store: %w", err)
	}
	// Other users must not reach the unpacked layers (setuid binaries,
	// devices): CVE-2021-41091.
	if err := os.Chmod(root, 0o700); err != nil {
		return nil, err
	}
	if err := s.cleanActive(); err != nil {
		return nil, err
	}
	if err := s.checkBoot(); err != nil {
		return nil, err
	}
	for _, d := range []string{"layers", "l", "active", "tmp", "empty"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
			return nil, err
		}
	}
	if err := os.Chmod(filepath.Join(root, "empty"), 0o755); err != nil {
		return nil, err
	}
	for _, d := range []string{"active", "tmp"} {
		if err := markTopDir(filepath.Join(root, d)); err != nil {
			return nil, fmt.Errorf("snapshot store %s: %w", d, err)
		}
	}
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

// Root returns the store's directory.
func (s *Store) Root() string { return s.root }

// cleanActive unmounts and removes the prepared steps and unpacks a previous
// process left.
func (s *Store) cleanActive() error {
	mounts, err := mountsUnder(filepath.Join(s.root, "active"))
	if err != nil {
		return err
	}
	for _, m := range mounts {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unmounting leftover %s: %w", m, err)
		}
	}
	for _, d := range []string{"active", "tmp"} {
		if err := os.RemoveAll(filepath.Join(s.root, d)); err != nil {
			return fmt.Errorf("removing leftover %s: %w", d, err)
		}
	}
	return nil
}

// checkBoot drops every unpacked layer when the machine rebooted since the
// store last ran: volatile overlay upper directories become layers without
// being synced, so after a crash they may be incomplete.
func (s *Store) checkBoot() error {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return fmt.Errorf("reading boot ID: %w", err)
	}
	boot := strings.TrimSpace(string(b))
	path := filepath.Join(s.root, bootIDFile)
	prev, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if string(prev) == boot {
		return nil
	}
	for _, d := range []string{"layers", "l", "scratch-init"} {
		if err := os.RemoveAll(filepath.Join(s.root, d)); err != nil {
			return err
		}
	}
	if err := syncDir(s.root); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(boot), 0o600)
}

// load reads the layers' metadata and recreates their short links.
func (s *Store) load() error {
	if err := os.RemoveAll(filepath.Join(s.root, "l")); err != nil {
		return err
	}
	if err := os.Mkdir(filepath.Join(s.root, "l"), 0o700); err != nil {
		return err
	}
	dirs, err := os.ReadDir(filepath.Join(s.root, "layers"))
	if err != nil {
		return err
	}
	for _, d := range dirs {
		dir := filepath.Join(s.root, "layers", d.Name())
		b, err := os.ReadFile(filepath.Join(dir, "meta.json"))
		var m meta
		if err == nil {
			err = json.Unmarshal(b, &m)
		}
		if err != nil || m.ChainID.Encoded() != d.Name() {
			// Not a layer this store committed completely: drop it.
			if err := os.RemoveAll(dir); err != nil {
				return err
			}
			continue
		}
		if err := os.Symlink(filepath.Join("..", "layers", d.Name()), s.linkPath(m.Link)); err != nil {
			return err
		}
		fi, _ := os.Stat(filepath.Join(dir, "meta.json"))
		s.layers[m.ChainID] = &entry{meta: m, lastUsed: fi.ModTime()}
		s.total += m.Size
	}
	return nil
}

// ChainID returns the chain ID of the layer with diffID on top of the chain
// parent ("" for none), as image-spec's identity.ChainID.
func ChainID(parent, diffID digest.Digest) digest.Digest {
	if parent == "" {
		return diffID
	}
	return identity.ChainID([]digest.Digest{parent, diffID})
}

// Stat describes the unpacked layer with the chain ID, or returns an error
// matching errdefs.ErrNotFound.
func (s *Store) Stat(chainID digest.Digest) (Info, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.layers[chainID]
	if !ok {
		return Info{}, errdefs.NotFound("layer %s is not unpacked", chainID)
	}
	return e.info(), nil
}

// List describes every unpacked layer.
func (s *Store) List() []Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Info, 0, len(s.layers))
	for _, e := range s.layers {
		out = append(out, e.info())
	}
	slices.SortFunc(out, func(a, b Info) int { return strings.Compare(a.ChainID.String(), b.ChainID.String()) })
	return out
}

// Usage returns the total size of the unpacked layers.
func (s *Store) Usage() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

func (e *entry) info() Info {
	return Info{ChainID: e.meta.ChainID, Parent: e.meta.Parent, DiffID: e.meta.DiffID, Size: e.meta.Size, InUse: e.refs}
}

func (s *Store) layerDir(chainID digest.Digest) string {
	return filepath.Join(s.root, "layers", chainID.Encoded())
}

func (s *Store) linkPath(link string) string { return filepath.Join(s.root, "l", link) }

// ensure makes the layer with chain ID chainID (diffID on top of parent)
// present, unpacking it when needed, and pins it (refs+1).
func (s *Store) ensure(ctx context.Context, parent, chainID digest.Digest, l Layer) error {
	for {
		s.mu.Lock()
		if e, ok := s.layers[chainID]; ok {
			e.refs++
			e.lastUsed = time.Now()
			s.mu.Unlock()
			return nil
		}
		wait, busy := s.unpacking[chainID]
		if !busy {
			done := make(chan struct{})
			s.unpacking[chainID] = done
			s.mu.Unlock()
			err := s.unpack(ctx, parent, chainID, l)
			s.mu.Lock()
			delete(s.unpacking, chainID)
			close(done)
			s.mu.Unlock()
			return err
		}
		s.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// unpack fetches and unpacks one layer into a private directory, verifies
// its diff ID, and publishes it by rename, pinned.
func (s *Store) unpack(ctx context.Context, parent, chainID digest.Digest, l Layer) error {
	if l.Open == nil {
		return errdefs.NotFound("layer %s is not unpacked and has no blob to unpack it from", chainID)
	}
	staging, err := os.MkdirTemp(filepath.Join(s.root, "tmp"), "unpack-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(staging)
	diff := filepath.Join(staging, "diff")
	if err := os.Mkdir(diff, 0o755); err != nil {
		return err
	}
	rc, err := l.Open(ctx)
	if err != nil {
		return fmt.Errorf("opening layer %s: %w", l.DiffID, err)
	}
	defer rc.Close()
	opts := []layer.UnpackOpt{layer.WithDiffID(l.DiffID), layer.WithLimits(s.opts.Limits)}
	if s.opts.MaxLayerEntries > 0 {
		opts = append(opts, layer.WithMaxEntries(s.opts.MaxLayerEntries))
	}
	res, err := layer.Unpack(ctx, rc, diff, opts...)
	if err != nil {
		return fmt.Errorf("unpacking layer %s: %w", l.DiffID, err)
	}
	return s.publish(staging, meta{ChainID: chainID, Parent: parent, DiffID: l.DiffID, Size: res.DiffSize}, true)
}

// Add keeps, as the layer over the chain parent ("" for none), the files
// fill writes into an empty private directory in overlay lower form, and
// returns it pinned. fill returns the layer's diff ID and size: the caller
// made the layer (a COPY written from the build context) and vouches that
// the files are its tar unpacked, so nothing is hashed here, where Prepare
// unpacking its tar would write and hash it once more. A layer unpacked
// already under the resulting chain ID is kept as it is.
func (s *Store) Add(ctx context.Context, parent digest.Digest, fill func(ctx context.Context, dir string) (digest.Digest, int64, error)) (*Ref, Info, error) {
	staging, err := os.MkdirTemp(filepath.Join(s.root, "tmp"), "add-")
	if err != nil {
		return nil, Info{}, err
	}
	defer os.RemoveAll(staging)
	diff := filepath.Join(staging, "diff")
	if err := os.Mkdir(diff, 0o755); err != nil {
		return nil, Info{}, err
	}
	diffID, size, err := fill(ctx, diff)
	if err != nil {
		return nil, Info{}, err
	}
	if err := diffID.Validate(); err != nil {
		return nil, Info{}, errdefs.InvalidArgument("layer diff ID %q: %v", diffID, err)
	}
	m := meta{ChainID: ChainID(parent, diffID), Parent: parent, DiffID: diffID, Size: size}
	if err := s.publish(staging, m, true); err != nil {
		return nil, Info{}, err
	}
	return &Ref{s: s, chain: m.ChainID}, Info{ChainID: m.ChainID, Parent: parent, DiffID: diffID, Size: size}, nil
}

// publish makes the staged layer directory (holding diff/) the layer of
// m.ChainID and registers it, pinned (refs+1) when pin is set, so that no
// eviction takes it before the caller mounts it. If another build
// published the same chain meanwhile, the staged copy is dropped (both
// hold the same content) and that layer is the one pinned.
func (s *Store) publish(staging string, m meta, pin bool) error {
	link, err := shortID()
	if err != nil {
		return err
	}
	m.Link = link
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(staging, "meta.json"), b, 0o600); err != nil {
		return err
	}
	if err := os.Symlink(filepath.Join("..", "layers", m.ChainID.Encoded()), s.linkPath(link)); err != nil {
		return err
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.layers[m.ChainID]; ok {
		os.Remove(s.linkPath(link))
		if pin {
			e.refs++
			e.lastUsed = time.Now()
		}
		return nil
	}
	if err := os.Rename(staging, s.layerDir(m.ChainID)); err != nil {
		os.Remove(s.linkPath(link))
		return fmt.Errorf("publishing layer %s: %w", m.ChainID, err)
	}
	e := &entry{meta: m, lastUsed: time.Now()}
	if pin {
		e.refs = 1
	}
	s.layers[m.ChainID] = e
	s.total += m.Size
	return nil
}

// unpin releases one reference on each chain ID and evicts beyond the limit.
func (s *Store) unpin(chain []digest.Digest) {
	s.mu.Lock()
	now := time.Now()
	for _, c := range chain {
		if e, ok := s.layers[c]; ok && e.refs > 0 {
			e.refs--
			e.lastUsed = now
		}
	}
	victims := s.evictLocked()
	s.mu.Unlock()
	s.remove(victims)
}

// evictLocked picks the least recently used unpinned layers to remove until
// the total is within the limit, unregisters them and moves their directories
// under tmp/ (so nothing can mount them), returning those directories.
func (s *Store) evictLocked() []string {
	if s.opts.MaxBytes <= 0 || s.total <= s.opts.MaxBytes {
		return nil
	}
	var idle []*entry
	for _, e := range s.layers {
		if e.refs == 0 {
			idle = append(idle, e)
		}
	}
	slices.SortFunc(idle, func(a, b *entry) int { return a.lastUsed.Compare(b.lastUsed) })
	var dirs []string
	for _, e := range idle {
		if s.total <= s.opts.MaxBytes {
			break
		}
		dst := s.trashPath("evict-" + e.meta.ChainID.Encoded())
		if err := os.Rename(s.layerDir(e.meta.ChainID), dst); err != nil {
			continue
		}
		os.Remove(s.linkPath(e.meta.Link))
		delete(s.layers, e.meta.ChainID)
		s.total -= e.meta.Size
		dirs = append(dirs, dst)
	}
	return dirs
}

func (s *Store) remove(dirs []string) {
	for _, d := range dirs {
		os.RemoveAll(d)
	}
}

// Remove deletes an unpacked layer no prepared step uses
// (FAILED_PRECONDITION when one does, NOT_FOUND when it is absent).
func (s *Store) Remove(chainID digest.Digest) error {
	s.mu.Lock()
	e, ok := s.layers[chainID]
	if !ok {
		s.mu.Unlock()
		return errdefs.NotFound("layer %s is not unpacked", chainID)
	}
	if e.refs > 0 {
		s.mu.Unlock()
		return errdefs.FailedPrecondition("layer %s is in use by %d prepared steps", chainID, e.refs)
	}
	dst := s.trashPath("remove-" + chainID.Encoded())
	err := os.Rename(s.layerDir(chainID), dst)
	if err == nil {
		os.Remove(s.linkPath(e.meta.Link))
		delete(s.layers, chainID)
		s.total -= e.meta.Size
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return os.RemoveAll(dst)
}

// trashPath names a fresh place under tmp/ to move a directory to before
// removing it (the same layer may be removed again while an earlier removal
// still runs).
func (s *Store) trashPath(prefix string) string {
	id, err := shortID()
	if err != nil {
		id = fmt.Sprint(time.Now().UnixNano())
	}
	return filepath.Join(s.root, "tmp", prefix+"-"+id)
}

func shortID() (string, error) {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b), nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// Ref pins an unpacked layer so that it is not evicted while its directory
// is read (to upload it in the background, for instance).
type Ref struct {
	s     *Store
	chain digest.Digest
	once  sync.Once
}

// Dir is the layer's directory, in the form layer.Diff reads (overlay
// whiteouts and opaque directories). It must not be written to.
func (r *Ref) Dir() string { return filepath.Join(r.s.layerDir(r.chain), "diff") }

// Release unpins the layer; calling it again does nothing.
func (r *Ref) Release() { r.once.Do(func() { r.s.unpin([]digest.Digest{r.chain}) }) }

// Acquire pins the unpacked layer with the chain ID (NOT_FOUND when absent).
func (s *Store) Acquire(chainID digest.Digest) (*Ref, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.layers[chainID]
	if !ok {
		return nil, errdefs.NotFound("layer %s is not unpacked", chainID)
	}
	e.refs++
	e.lastUsed = time.Now()
	return &Ref{s: s, chain: chainID}, nil
}
