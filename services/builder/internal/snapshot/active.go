package snapshot

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/lib/errdefs"
)

// Active is a prepared step: a writable root filesystem, an overlay of a
// fresh upper directory over the layers of its parent chain. It is used by
// one build step at a time and ends with Commit or Release.
type Active struct {
	store  *Store
	id     string
	dir    string
	parent digest.Digest   // chain ID of the top parent layer; "" for scratch
	chain  []digest.Digest // pinned chain IDs, bottom first
	init   string          // the init layer directory, if any

	mu      sync.Mutex
	mounted bool
	done    bool
}

// ID names the prepared step (unique in the store).
func (a *Active) ID() string { return a.id }

// Parent returns the chain ID the step starts from ("" for scratch).
func (a *Active) Parent() digest.Digest { return a.parent }

// RootFS is the mounted root filesystem: the sandbox's rootfs for RUN, the
// destination of COPY and ADD (open it with os.OpenRoot so that paths resolve
// inside it).
func (a *Active) RootFS() string { return filepath.Join(a.dir, "merged") }

// UpperDir holds the step's changes in overlay form; layer.Diff turns it
// into the step's layer once nothing writes to RootFS any more.
func (a *Active) UpperDir() string { return filepath.Join(a.dir, "upper") }

// PrepareOpt configures Prepare.
type PrepareOpt func(*prepareOptions)

type prepareOptions struct {
	init bool
}

// WithInit puts Docker's init layer between the image's layers and the
// step's upper directory: the mount points and files a container needs
// (/proc, /sys, /dev/pts, /dev/shm, /etc/hosts, /etc/resolv.conf,
// /etc/hostname, /dev/console, /.dockerenv, /etc/mtab -> /proc/mounts)
// exist there, so that the sandbox's mounts never show up in the step's
// layer, as in Docker's RUN layers. RUN steps want it.
func WithInit() PrepareOpt {
	return func(o *prepareOptions) { o.init = true }
}

// Prepare mounts a writable root filesystem over the given layers (bottom
// first, as an image config lists its diff IDs; none for scratch). Layers not
// unpacked yet are fetched through their Open and unpacked first, so a build
// always gets its chain, even after eviction. The layers stay pinned (never
// evicted) until Commit or Release.
func (s *Store) Prepare(ctx context.Context, layers []Layer, opts ...PrepareOpt) (_ *Active, retErr error) {
	var o prepareOptions
	for _, opt := range opts {
		opt(&o)
	}
	chain := make([]digest.Digest, 0, len(layers))
	var parent digest.Digest
	defer func() {
		if retErr != nil {
			s.unpin(chain)
		}
	}()
	for _, l := range layers {
		if err := l.DiffID.Validate(); err != nil {
			return nil, errdefs.InvalidArgument("layer diff ID %q: %v", l.DiffID, err)
		}
		id := ChainID(parent, l.DiffID)
		if err := s.ensure(ctx, parent, id, l); err != nil {
			return nil, err
		}
		chain = append(chain, id)
		parent = id
	}

	var initDir string
	if o.init {
		var err error
		if initDir, err = s.ensureInit(ctx, chain); err != nil {
			return nil, err
		}
	}

	id, err := shortID()
	if err != nil {
		return nil, err
	}
	a := &Active{store: s, id: strings.ToLower(id), parent: parent, chain: chain, init: initDir}
	a.dir = filepath.Join(s.root, "active", a.id)
	for _, d := range []string{a.dir, filepath.Join(a.dir, "work"), a.RootFS()} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return nil, err
		}
	}
	// The upper directory's attributes are those of the root directory the
	// step sees.
	if err := os.Mkdir(a.UpperDir(), 0o755); err != nil {
		return nil, err
	}
	if err := a.mount(); err != nil {
		os.RemoveAll(a.dir)
		return nil, err
	}
	return a, nil
}

// overlayOptions are the options of every step's overlay. redirect_dir,
// index and metacopy stay off so that the upper directory is a plain OCI
// changeset (as Docker's overlay2 has it); volatile skips the syncs of the
// upper directory, which is scratch until committed (see checkBoot).
var overlayOptions = []string{"redirect_dir=off", "index=off", "metacopy=off", "volatile"}

// lowerDirs returns the step's lower directories, top layer first, named
// through their short links in l/.
func (a *Active) lowerDirs() ([]string, error) {
	lowers := make([]string, 0, len(a.chain))
	a.store.mu.Lock()
	defer a.store.mu.Unlock()
	for i := len(a.chain) - 1; i >= 0; i-- {
		e, ok := a.store.layers[a.chain[i]]
		if !ok {
			return nil, errdefs.Internal("pinned layer %s is gone", a.chain[i])
		}
		lowers = append(lowers, filepath.Join(a.store.linkPath(e.meta.Link), "diff"))
	}
	if a.init != "" {
		lowers = append([]string{a.init}, lowers...)
	}
	if len(lowers) == 0 {
		// overlay needs a lower directory; scratch is an empty one.
		lowers = append(lowers, filepath.Join(a.store.root, "empty"))
	}
	return lowers, nil
}

// mount mounts the step's overlay. It hands each lower directory to the
// kernel separately ("lowerdir+", Linux 6.8+), which has no limit on the
// chain's depth but overlay's own (500); older kernels take all options in
// one page, which the short links in l/ stretch to about a hundred layers.
func (a *Active) mount() error {
	lowers, err := a.lowerDirs()
	if err != nil {
		return err
	}
	err = mountNew(a.RootFS(), lowers, a.UpperDir(), filepath.Join(a.dir, "work"))
	if errors.Is(err, errNoNewMountAPI) {
		err = mountLegacy(a.RootFS(), lowers, a.UpperDir(), filepath.Join(a.dir, "work"))
	}
	if err != nil {
		return fmt.Errorf("mounting overlay for step %s over %d layers: %w", a.id, len(a.chain), err)
	}
	a.mounted = true
	return nil
}

var errNoNewMountAPI = errors.New("the kernel does not take overlay lower directories one by one")

func mountNew(target string, lowers []string, upper, work string) error {
	fd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return errNoNewMountAPI
	}
	defer unix.Close(fd)
	for i, l := range lowers {
		if err := unix.FsconfigSetString(fd, "lowerdir+", l); err != nil {
			if i == 0 && errors.Is(err, unix.EINVAL) {
				return errNoNewMountAPI
			}
			return fmt.Errorf("lower directory %s: %w", l, err)
		}
	}
	if err := unix.FsconfigSetString(fd, "upperdir", upper); err != nil {
		return fmt.Errorf("upper directory: %w", err)
	}
	if err := unix.FsconfigSetString(fd, "workdir", work); err != nil {
		return fmt.Errorf("work directory: %w", err)
	}
	for _, o := range overlayOptions {
		k, v, ok := strings.Cut(o, "=")
		if ok {
			err = unix.FsconfigSetString(fd, k, v)
		} else {
			err = unix.FsconfigSetFlag(fd, k)
		}
		if err != nil {
			return fmt.Errorf("overlay option %s: %w", o, err)
		}
	}
	if err := unix.FsconfigCreate(fd); err != nil {
		return fmt.Errorf("creating overlay: %w", err)
	}
	mfd, err := unix.Fsmount(fd, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("fsmount: %w", err)
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount to %s: %w", target, err)
	}
	return nil
}

func mountLegacy(target string, lowers []string, upper, work string) error {
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s,%s",
		strings.Join(lowers, ":"), upper, work, strings.Join(overlayOptions, ","))
	if len(opts) >= os.Getpagesize() {
		return errdefs.ResourceExhausted("%d layers are too many for one overlay mount on this kernel (options of %d bytes, the limit is %d)",
			len(lowers), len(opts), os.Getpagesize()-1)
	}
	return unix.Mount("overlay", target, "overlay", 0, opts)
}

// Unmount unmounts the root filesystem, leaving the upper directory as it
// is. Commit and Release unmount too; calling it first is only needed to
// make sure nothing writes to the step any more.
func (a *Active) Unmount() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.unmountLocked()
}

func (a *Active) unmountLocked() error {
	if !a.mounted {
		return nil
	}
	if err := unix.Unmount(a.RootFS(), 0); err != nil {
		if !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("unmounting step %s: %w", a.id, err)
		}
		// A process that outlived its sandbox still holds it: detach, the
		// kernel drops it when the last user goes.
		if err := unix.Unmount(a.RootFS(), unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmounting step %s: %w", a.id, err)
		}
	}
	a.mounted = false
	return nil
}

// Commit makes the step's changes the layer with diff ID diffID on top of
// its parent chain, and returns the new chain ID. The upper directory becomes
// the layer directory by a rename; the step is over afterwards (as after
// Release). diffID and size are those layer.WriteDiff returned for UpperDir.
func (a *Active) Commit(ctx context.Context, diffID digest.Digest, size int64) (digest.Digest, error) {
	if err := diffID.Validate(); err != nil {
		return "", errdefs.InvalidArgument("diff ID %q: %v", diffID, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.done {
		return "", errdefs.FailedPrecondition("step %s is already committed or released", a.id)
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if err := a.unmountLocked(); err != nil {
		return "", err
	}
	chainID := ChainID(a.parent, diffID)
	staging := filepath.Join(a.dir, "layer")
	if err := os.Mkdir(staging, 0o700); err != nil {
		return "", err
	}
	if err := os.Rename(a.UpperDir(), filepath.Join(staging, "diff")); err != nil {
		return "", err
	}
	if err := a.store.publish(staging, meta{ChainID: chainID, Parent: a.parent, DiffID: diffID, Size: size}, false); err != nil {
		return "", err
	}
	a.finishLocked()
	return chainID, nil
}

// Release ends the step without keeping its changes: it unmounts the root
// filesystem and removes the upper directory. It is safe to call after
// Commit (it does nothing then), so `defer a.Release()` is the usual form.
func (a *Active) Release() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.done {
		return nil
	}
	if err := a.unmountLocked(); err != nil {
		return err
	}
	a.finishLocked()
	return nil
}

func (a *Active) finishLocked() {
	a.done = true
	// Move the directory out of active/ first, so that a removal error
	// leaves nothing a restart would mistake for a live step.
	trash := filepath.Join(a.store.root, "tmp", "active-"+a.id)
	if err := os.Rename(a.dir, trash); err == nil {
		os.RemoveAll(trash)
	} else {
		os.RemoveAll(a.dir)
	}
	a.store.unpin(a.chain)
}

// mountsUnder lists the mount points below dir, deepest first.
func mountsUnder(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountPath(fields[4])
		if strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	// Deeper mounts first.
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, sc.Err()
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
