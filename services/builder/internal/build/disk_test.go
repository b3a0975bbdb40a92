package build

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/lib/errdefs"
	planexec "github.com/strata-build/strata/services/builder/internal/exec"
	"github.com/strata-build/strata/services/builder/internal/sandbox"
	"github.com/strata-build/strata/services/builder/internal/snapshot"
)

// A RUN step that fills the builder's disk (its state on a small tmpfs, as
// in the security review) fails RESOURCE_EXHAUSTED naming the flag and no
// host path, and leaves the space as it found it.
func TestBuildRunPastTheDiskLimit(t *testing.T) {
	e := newEnv(t)
	fs := t.TempDir()
	if err := unix.Mount("tmpfs", fs, "tmpfs", 0, "size=128m"); err != nil {
		t.Skipf("mounting a tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(fs, 0); err != nil {
			t.Errorf("unmounting the test's tmpfs: %v", err)
		}
	})
	snaps, err := snapshot.New(filepath.Join(fs, "snapshots"), snapshot.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e.snaps, e.b.Snapshots = snaps, planexec.SnapshotStore(snaps, e.blobs)
	r, err := sandbox.New(context.Background(), filepath.Join(fs, "sandbox"), sandbox.Options{StepDisk: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(context.Background()) })
	e.b.Sandbox = planexec.RuncSandbox(r)
	e.importBase("busybox:latest", busybox(t))
	e.mustBuild("FROM busybox\nRUN echo warm > /warm\n", nil) // the base unpacked
	free := func() int64 {
		var st unix.Statfs_t
		if err := unix.Statfs(fs, &st); err != nil {
			t.Fatal(err)
		}
		return int64(st.Bavail) * st.Bsize
	}
	before := free()

	t0 := time.Now()
	_, _, err = e.build("FROM busybox\nRUN dd if=/dev/zero of=/fill bs=1M; sleep 60\n", nil)
	if !errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), "disk limit 16MiB exceeded (build flag --disk, builder flag --step-disk)") {
		t.Fatalf("Build = %v, want RESOURCE_EXHAUSTED naming the limit and --step-disk", err)
	}
	t.Logf("Build error: %v", err)
	if strings.Contains(err.Error(), fs) {
		t.Errorf("Build error %q names the builder's state directory", err)
	}
	if d := time.Since(t0); d > 10*time.Second {
		t.Errorf("the build took %v to fail", d)
	}
	if got := free(); got < before-(1<<20) {
		t.Errorf("free space after the build = %d, want it back to about %d", got, before)
	}
	if entries, _ := os.ReadDir(filepath.Join(fs, "snapshots", "active")); len(entries) != 0 {
		t.Errorf("%d step directories left behind", len(entries))
	}
	// The builder goes on.
	e.mustBuild("FROM busybox\nRUN echo next > /next\n", nil)
}
