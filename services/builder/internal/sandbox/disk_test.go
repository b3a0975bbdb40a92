package sandbox

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/snapshot"
)

// newDiskEnv is newEnvWith with the runner's and the snapshot store's state
// on a tmpfs of size MiB, as a builder whose state is on a small disk.
func newDiskEnv(t *testing.T, size int, opts Options) (*env, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (runc, overlay and tmpfs mounts)")
	}
	fs := filepath.Join(t.TempDir(), "fs")
	if err := os.Mkdir(fs, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", fs, "tmpfs", 0, "size="+strconv.Itoa(size)+"m"); err != nil {
		t.Skipf("mounting a tmpfs: %v", err)
	}
	// Registered first, so it runs last: after the steps are released
	// and the runner closed.
	t.Cleanup(func() {
		if err := unix.Unmount(fs, 0); err != nil {
			t.Errorf("unmounting the test's tmpfs: %v", err)
		}
	})
	opts.Runc = "/usr/sbin/runc"
	r, err := New(context.Background(), filepath.Join(fs, "sandbox"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.Close(context.Background())
		assertNothingLeft(t, r)
	})
	s, err := snapshot.New(filepath.Join(fs, "snapshots"), snapshot.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &env{runner: r, snaps: s}, fs
}

func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// runWatched runs script in a fresh step with its upper directory watched,
// and returns Run's error, how long it took and the step.
func (e *env) runWatched(t *testing.T, script string) (int, []line, *snapshot.Active, time.Duration, error) {
	t.Helper()
	return e.runWatchedWith(t, Limits{}, script)
}

func (e *env) runWatchedWith(t *testing.T, l Limits, script string) (int, []line, *snapshot.Active, time.Duration, error) {
	t.Helper()
	a := e.rootfs(t)
	code, lines, took, err := e.runIn(a, l, script)
	return code, lines, a, took, err
}

// runIn runs script in the step a; it may run in a goroutine of its own.
func (e *env) runIn(a *snapshot.Active, l Limits, script string) (int, []line, time.Duration, error) {
	var (
		mu    sync.Mutex
		lines []line
	)
	p := Process{RootFS: a.RootFS(), UpperDir: a.UpperDir(), Discard: a.Release, Limits: l, Args: []string{"/bin/sh", "-c", script},
		Output: func(s Stream, b []byte) {
			mu.Lock()
			defer mu.Unlock()
			lines = append(lines, line{s, string(b)})
		}}
	t0 := time.Now()
	code, err := e.runner.Run(context.Background(), p)
	mu.Lock()
	defer mu.Unlock()
	return code, lines, time.Since(t0), err
}

// assertDiskKilled checks that a step ended with a disk error naming want
// and no host path, within a couple of seconds, and that nothing of it is
// left: its upper directory is empty and the filesystem has its space back.
func assertDiskKilled(t *testing.T, fs string, a *snapshot.Active, took time.Duration, err error, freeBefore int64, want ...string) {
	t.Helper()
	if !errdefs.IsResourceExhausted(err) {
		t.Fatalf("Run error = %v, want RESOURCE_EXHAUSTED", err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("Run error %q does not say %q", err, w)
		}
	}
	if strings.Contains(err.Error(), fs) || strings.Contains(err.Error(), "/tmp") {
		t.Errorf("Run error %q names a host path", err)
	}
	if took > 5*time.Second {
		t.Errorf("the step ran %v before it was stopped", took)
	}
	if _, err := os.Stat(a.UpperDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the killed step's upper directory: %v, want it removed", err)
	}
	if free := freeBytes(t, fs); free < freeBefore-(1<<20) {
		t.Errorf("free space after the step = %d, want it back to about %d", free, freeBefore)
	}
	if _, err := os.Stat("/fill"); err == nil {
		t.Error("the step wrote /fill on the host")
	}
}

func TestRunStepDiskLimit(t *testing.T) {
	e, fs := newDiskEnv(t, 128, Options{StepDisk: 16 << 20})
	e.rootfs(t) // busybox unpacked: the free space below is a step's
	for _, tc := range []struct{ name, script string }{
		// Past the limit, and still running: killed by the watch.
		{"still writing", `dd if=/dev/zero of=/fill bs=1M count=48 2>/dev/null; sleep 60`},
		// The review's command: fills the filesystem, fails, ends.
		{"dd to ENOSPC", `dd if=/dev/zero of=/fill bs=1M`},
		// Out of the upper directory's tree, still on the disk.
		{"held open after rm", `exec 3>/fill; rm /fill; dd if=/dev/zero bs=1M count=48 >&3 2>/dev/null; sleep 60`},
		// Done before a poll: measured once more when it ends.
		{"done at once", `dd if=/dev/zero of=/fill bs=1M count=20 2>/dev/null`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := freeBytes(t, fs)
			_, _, a, took, err := e.runWatched(t, tc.script)
			assertDiskKilled(t, fs, a, took, err, before, "disk limit 16MiB exceeded", "--step-disk")
		})
	}
	t.Run("--disk 4MiB", func(t *testing.T) {
		before := freeBytes(t, fs)
		_, _, a, took, err := e.runWatchedWith(t, Limits{Disk: 4 << 20}, `dd if=/dev/zero of=/fill bs=1M count=8 2>/dev/null; sleep 60`)
		assertDiskKilled(t, fs, a, took, err, before, "disk limit 4MiB exceeded", "build flag --disk", "--step-disk")
	})
	// Under the limit: the step runs and keeps its changes.
	code, _, a, _, err := e.runWatched(t, `dd if=/dev/zero of=/fine bs=1M count=8 2>/dev/null`)
	if err != nil || code != 0 {
		t.Fatalf("a step under the limit: Run = %d, %v", code, err)
	}
	if fi, err := os.Stat(filepath.Join(a.UpperDir(), "fine")); err != nil || fi.Size() != 8<<20 {
		t.Errorf("the step's file: %v, %v", fi, err)
	}
}

func TestRunDiskFloorKillsTheLargestStep(t *testing.T) {
	e, fs := newDiskEnv(t, 96, Options{MinFreeDisk: 24 << 20})
	e.rootfs(t)
	before := freeBytes(t, fs)

	type result struct {
		code  int
		lines []line
		err   error
	}
	// The other step writes once the test tells it (by creating /go in its
	// root): after the filler filled the disk and was stopped.
	oa := e.rootfs(t)
	other := make(chan result, 1)
	go func() {
		var r result
		r.code, r.lines, _, r.err = e.runIn(oa, Limits{}, `while [ ! -e /go ]; do sleep 0.1; done; dd if=/dev/zero of=/small bs=1M count=4 2>/dev/null && echo ok`)
		other <- r
	}()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		e.runner.disks.mu.Lock()
		n := len(e.runner.disks.steps)
		e.runner.disks.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the other step did not start")
		}
	}
	_, _, a, took, err := e.runWatched(t, `dd if=/dev/zero of=/fill bs=1M; sleep 60`)
	assertDiskKilled(t, fs, a, took, err, before, "free disk space fell below 24MiB", "--min-free-disk")

	if err := os.WriteFile(filepath.Join(oa.RootFS(), "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r := <-other
	if r.err != nil || r.code != 0 || stdout(r.lines) != "ok\n" {
		t.Fatalf("the other step: Run = %d, %v, %v; want it to finish", r.code, r.err, r.lines)
	}
	if fi, err := os.Stat(filepath.Join(oa.UpperDir(), "small")); err != nil || fi.Size() != 4<<20 {
		t.Errorf("the other step's file: %v, %v", fi, err)
	}
}

func TestRunWaitsForFreeDisk(t *testing.T) {
	e, fs := newDiskEnv(t, 64, Options{MinFreeDisk: 16 << 20})
	e.rootfs(t)
	e.runner.disks.wait = time.Second
	// Something else of the builder's (a layer, a context) takes the space.
	other := filepath.Join(fs, "other")
	if err := os.WriteFile(other, make([]byte, freeBytes(t, fs)-8<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	code, lines, _, took, err := e.runWatched(t, `echo ran`)
	if !errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), "--min-free-disk") || strings.Contains(err.Error(), fs) {
		t.Fatalf("Run below the floor = %d, %v, %v; want RESOURCE_EXHAUSTED naming --min-free-disk and no path", code, err, lines)
	}
	if took < time.Second {
		t.Errorf("Run failed after %v, want it to wait a second for space", took)
	}

	// Space coming back while the step waits lets it run.
	e.runner.disks.wait = 10 * time.Second
	go func() {
		time.Sleep(500 * time.Millisecond)
		os.Remove(other)
	}()
	code, lines, _, _, err = e.runWatched(t, `echo ran`)
	if err != nil || code != 0 || stdout(lines) != "ran\n" {
		t.Fatalf("Run once space is back = %d, %v, %v", code, err, lines)
	}
}

func TestDirUsage(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "a", "b")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sub, "f"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(sub, "f"), filepath.Join(dir, "hardlink")); err != nil {
		t.Fatal(err)
	}
	// Not followed: the host's root would count otherwise.
	if err := os.Symlink("/", filepath.Join(dir, "root")); err != nil {
		t.Fatal(err)
	}
	sparse, err := os.Create(filepath.Join(dir, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	sparse.Truncate(1 << 30)
	sparse.Close()
	got, err := dirUsage(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got < 1<<20 || got > 1<<20+64<<10 {
		t.Errorf("dirUsage = %d, want about 1 MiB (the file once, nothing of the sparse file or the symlink's target)", got)
	}
}

func TestDisksEvictTheLargestOnce(t *testing.T) {
	const floor = 100 << 20
	var d disks
	small, large, idle := d.add("a", "", ""), d.add("b", "", ""), d.add("c", "", "")
	d.setUsed(small, 10<<20)
	d.setUsed(large, 50<<20)
	if d.evict(small, floor) || d.evict(idle, floor) {
		t.Error("a step that is not the largest was picked")
	}
	if !d.evict(large, floor) {
		t.Fatal("the largest step was not picked")
	}
	if d.evict(small, floor) {
		t.Error("a second step was picked while the first still held its space")
	}
	d.remove(large)
	if !d.evict(small, floor) {
		t.Error("the next largest was not picked once the first was gone")
	}
	d.remove(small)
	d.setUsed(idle, floor/200)
	if d.evict(idle, floor) {
		t.Error("a step that wrote less than a hundredth of the floor was picked")
	}
}

// A step that filled the disk between two measurements, going past its
// own limit on the way, is told of its limit (the flag it can act on), not
// blamed for the builder's floor.
func TestDiskWatchNamesTheStepLimitBeforeTheFloor(t *testing.T) {
	fs := t.TempDir()
	if err := unix.Mount("tmpfs", fs, "tmpfs", 0, "size=64m"); err != nil {
		t.Skipf("mounting a tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(fs, 0) })
	if err := os.WriteFile(filepath.Join(fs, "fill"), make([]byte, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	d := disks{minFree: 64 << 20} // the filesystem is below its floor
	w := diskWatch{d: &d, s: d.add("a", fs, fs), limit: 2 << 20}
	d.setUsed(w.s, 1<<20) // what the last walk saw
	now := time.Now()
	w.nextWalk = now.Add(time.Hour) // the next is not due
	if !w.check(now) {
		t.Fatal("check did not kill the step")
	}
	if want := stepDiskExceeded(w.limit); w.hit == nil || w.hit.Error() != want.Error() {
		t.Errorf("the step was killed with %v, want %v", w.hit, want)
	}
}
