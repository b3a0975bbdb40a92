package sandbox

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	units "github.com/docker/go-units"
	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/lib/errdefs"
)

// Disk: the filesystem holding the steps' upper directories (the snapshot
// store) is shared by every build, and XFS project quotas, which would
// bound a directory in the kernel, are not something a builder can count on
// (ext4, tmpfs). So the runner watches: while a step runs, it measures the
// step's upper directory and the filesystem's free space, and kills the step
// that goes past its own limit, or the largest step when the filesystem
// falls below its floor. A killed step's changes are discarded before Run
// returns, so the space is back before another step could want it.
const (
	// DefaultStepDisk is the most a step may write by default: room for a
	// toolchain, a node_modules or a large compile's objects (Docker sets
	// no limit; builds past a few GiB per RUN are rare), and small enough
	// that one step alone cannot fill a builder's disk of any usual size.
	// On a smaller disk the free-space floor still stops it.
	DefaultStepDisk = 10 << 30
	// maxDefaultMinFree caps the default free-space floor (5% of the
	// filesystem): past it, 5% of a large disk is room no build needs.
	maxDefaultMinFree = 1 << 30
	// diskPoll is how often a running step's disk use is checked; a walk of
	// the upper directory waits longer, five times what the last one took,
	// so that measuring a step of a million files costs a fifth of a core
	// at most. statfs, which the free-space floor reads, is checked at
	// every poll.
	diskPoll = 200 * time.Millisecond
	// admitWait is how long a step waits to start while the filesystem is
	// below its floor (a killed step's space coming back, a layer evicted).
	admitWait = 10 * time.Second
)

// DefaultMinFreeDisk is the free-space floor of a filesystem of size bytes
// when the runner's MinFreeDisk is 0: 5% of it, at most 1 GiB. That is
// enough for the builder's own writes (layer unpacks, context files, image
// configs) to finish while the step that used the most is stopped.
func DefaultMinFreeDisk(size int64) int64 {
	return min(size/20, maxDefaultMinFree)
}

// disks tracks the running steps' upper directories, for the free-space
// floor: which step to kill when the filesystem is low.
type disks struct {
	minFree int64 // --min-free-disk; 0 for DefaultMinFreeDisk
	wait    time.Duration

	mu    sync.Mutex
	steps map[string]*diskStep
}

// diskStep is a running step's disk use, as last measured.
type diskStep struct {
	id    string
	upper string
	// devs are the devices the step's files are on: the overlay's, and the
	// upper directory's filesystem's.
	devs [2]uint64
	used int64 // guarded by disks.mu
	// evicted is set (under disks.mu) once the step is killed for disk: no
	// other step is killed for the floor until this one's space is back.
	evicted bool
}

func (d *disks) add(id, rootfs, upper string) *diskStep {
	s := &diskStep{id: id, upper: upper}
	var st unix.Stat_t
	if unix.Stat(rootfs, &st) == nil {
		s.devs[0] = st.Dev
	}
	if unix.Stat(upper, &st) == nil {
		s.devs[1] = st.Dev
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.steps == nil {
		d.steps = map[string]*diskStep{}
	}
	d.steps[id] = s
	return s
}

func (d *disks) remove(s *diskStep) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.steps, s.id)
}

func (d *disks) setUsed(s *diskStep, n int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s.used = n
}

// evict reports whether s is the step to kill for the floor: the one that
// uses the most (by ID on a tie, so that steps agree), and only when no
// step picked before still holds its space. A step that wrote less than a
// hundredth of the floor is never picked: killing it would hardly help
// when something else (the layer cache, another process) took the space,
// and each running step would be killed in turn.
func (d *disks) evict(s *diskStep, floor int64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	var top *diskStep
	for _, o := range d.steps {
		if o.evicted {
			return false
		}
		if top == nil || o.used > top.used || o.used == top.used && o.id < top.id {
			top = o
		}
	}
	if top != s || s.used == 0 || s.used < floor/100 {
		return false
	}
	s.evicted = true
	return true
}

// floor returns the filesystem's free bytes (as an unprivileged writer sees
// them: root's reserve is a margin, not room) and the floor that applies.
func (d *disks) floor(dir string) (free, floor int64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, 0, err
	}
	free = int64(st.Bavail) * st.Bsize
	floor = d.minFree
	if floor == 0 {
		floor = DefaultMinFreeDisk(int64(st.Blocks) * st.Bsize)
	}
	return free, floor, nil
}

// admit waits, up to admitWait, for the filesystem holding upper to be
// above its floor, so that a step does not start only to hit ENOSPC.
func (d *disks) admit(done <-chan struct{}, upper string) error {
	deadline := time.Now().Add(d.wait)
	for {
		free, floor, err := d.floor(upper)
		if err != nil || free >= floor {
			return nil
		}
		if time.Now().After(deadline) {
			return diskLow(floor, free)
		}
		select {
		case <-done:
			return nil
		case <-time.After(diskPoll):
		}
	}
}

// diskWatch is the disk side of a running step's watch loop.
type diskWatch struct {
	d       *disks
	s       *diskStep
	limit   int64
	discard func() error
	// procs lists the step's processes.
	procs    func() []int
	nextWalk time.Time
	// hit is the step's error once it was found over a limit.
	hit error
}

// check measures the step when it is due and reports whether it must be
// killed, setting hit.
func (w *diskWatch) check(now time.Time) bool {
	if w.s == nil {
		return false
	}
	walked := !now.Before(w.nextWalk)
	if walked && w.overLimit(now) {
		return true
	}
	free, floor, err := w.d.floor(w.s.upper)
	if err == nil && free < floor && w.d.evict(w.s, floor) {
		// A step that filled the disk since its last walk may be past its
		// own limit too: it is told that, the limit it can act on, rather
		// than the builder's floor.
		if walked || !w.overLimit(now) {
			w.hit = diskFloorReached(floor)
		}
		return true
	}
	return false
}

// overLimit measures the step and reports whether it wrote more than its
// limit, setting hit.
func (w *diskWatch) overLimit(now time.Time) bool {
	used, err := dirUsage(w.s.upper)
	if w.procs != nil {
		used += heldDeleted(w.procs(), w.s.devs)
	}
	took := time.Since(now)
	w.nextWalk = time.Now().Add(max(diskPoll, 5*took))
	if err != nil {
		return false
	}
	w.d.setUsed(w.s, used)
	if used <= w.limit {
		return false
	}
	w.d.mu.Lock()
	w.s.evicted = true
	w.d.mu.Unlock()
	w.hit = stepDiskExceeded(w.limit)
	return true
}

// dirUsage returns the bytes the files under dir take on disk (allocated
// blocks, so a sparse file counts what it holds; a hard-linked file once).
// The running step may change the tree under it: every directory is opened
// relative to its parent's descriptor with O_NOFOLLOW, so a symlink swapped
// in never leads the walk out, and the walk stays on dir's filesystem.
func dirUsage(dir string) (int64, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return 0, err
	}
	u := usage{dev: st.Dev, links: map[[2]uint64]bool{}}
	u.total = st.Blocks * 512
	u.walk(fd)
	return u.total, nil
}

type usage struct {
	dev   uint64
	links map[[2]uint64]bool
	total int64
}

// walk adds up the entries of the directory fd, which it closes. Entries
// that vanish meanwhile are skipped.
func (u *usage) walk(fd int) {
	f := os.NewFile(uintptr(fd), "")
	defer f.Close()
	for {
		names, err := f.Readdirnames(1024)
		for _, name := range names {
			var st unix.Stat_t
			if unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil || st.Dev != u.dev {
				continue
			}
			if st.Nlink > 1 && st.Mode&unix.S_IFMT != unix.S_IFDIR {
				key := [2]uint64{st.Dev, st.Ino}
				if u.links[key] {
					continue
				}
				u.links[key] = true
			}
			u.total += st.Blocks * 512
			if st.Mode&unix.S_IFMT == unix.S_IFDIR {
				sub, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
				if err == nil {
					u.walk(sub)
				}
			}
		}
		if err != nil {
			// io.EOF, or a directory removed under the walk.
			return
		}
	}
}

// heldDeleted returns the bytes of the files the processes hold open after
// removing them (`exec 3>/f; rm /f; dd >&3`): gone from the upper
// directory's tree, still on its disk. Only regular files on the step's
// devices count (not a memfd, not a pipe).
func heldDeleted(pids []int, devs [2]uint64) int64 {
	var total int64
	seen := map[[2]uint64]bool{}
	for _, pid := range pids {
		dir := "/proc/" + strconv.Itoa(pid) + "/fd"
		f, err := os.Open(dir)
		if err != nil {
			continue
		}
		fds, _ := f.Readdirnames(-1)
		f.Close()
		for _, fd := range fds {
			link := dir + "/" + fd
			target, err := os.Readlink(link)
			if err != nil || !strings.HasSuffix(target, " (deleted)") {
				continue
			}
			// stat of the fd's magic link is the open file's.
			var st unix.Stat_t
			if unix.Stat(link, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Dev != devs[0] && st.Dev != devs[1] {
				continue
			}
			key := [2]uint64{st.Dev, st.Ino}
			if !seen[key] {
				seen[key] = true
				total += st.Blocks * 512
			}
		}
	}
	return total
}

// stepDiskExceeded is the error of a step that wrote more than its limit.
func stepDiskExceeded(limit int64) error {
	return errdefs.ResourceExhausted("RUN step killed: disk limit %s exceeded (build flag --disk, builder flag --step-disk)",
		units.BytesSize(float64(limit))).WithReason("RUN_DISK_LIMIT")
}

// diskFloorReached is the error of the step killed because the builder's
// disk fell below its floor while it wrote the most.
func diskFloorReached(floor int64) error {
	return errdefs.ResourceExhausted("RUN step killed: the builder's free disk space fell below %s while this step used the most of it (builder flag --min-free-disk)",
		units.BytesSize(float64(floor))).WithReason("BUILDER_DISK_LOW")
}

// diskLow is the error of a step that could not start for lack of space.
func diskLow(floor, free int64) error {
	return errdefs.ResourceExhausted("RUN step not started: the builder has %s of free disk space, below its floor of %s (builder flag --min-free-disk); try again later",
		units.BytesSize(float64(max(free, 0))), units.BytesSize(float64(floor))).WithReason("BUILDER_DISK_LOW")
}
