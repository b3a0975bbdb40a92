package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/auth"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/grpcclient"
	"github.com/strata-build/strata/lib/harness"
)

// counterBuild is a build whose RUN step counts its runs in the cache
// mount "counter", writes 100 kB beside the count and prints it; round
// changes the step's parent, so that the step runs every time.
func counterBuild(round int) string {
	return fmt.Sprintf("FROM busybox\nENV ROUND=%d\n", round) +
		`RUN --mount=type=cache,id=counter,target=/c sh -c 'n=$(cat /c/n 2>/dev/null || echo 0); echo $((n+1)) > /c/n; head -c 100000 /dev/zero > /c/blob; echo "count=$((n+1))"'` + "\n"
}

// Cache mounts over the RPCs of a builder with auth: a build fills one,
// ListCacheMounts shows it after a restart (a read token may list), PruneCacheMounts
// (admin only) removes it but not one a running step uses, and the next
// build starts from an empty directory.
func TestCacheMountsListAndPrune(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("the builder needs root for overlay mounts and runc")
	}
	s := &stack{harness.StartStack(t, harness.StackOptions{Secure: true})}
	tar := filepath.Join(t.TempDir(), "rootfs.tar")
	if err := os.WriteFile(tar, harness.BusyboxRootfs(t), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(s.Bin, "strata"), "import", tar, "busybox:latest")
	cmd.Env = append(append(os.Environ(), "HOME="+t.TempDir()), s.Env()...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("strata import: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	counted := func(round int, want string) {
		t.Helper()
		b := s.startBuild(t, ctx, counterBuild(round))
		if err := b.rest(); err != nil {
			t.Fatalf("build %d: %v", round, err)
		}
		for _, ev := range b.events {
			if output(ev, "count=") {
				if !output(ev, want) {
					t.Errorf("build %d printed %q, want %s", round, ev.GetOutput().GetData(), want)
				}
				return
			}
		}
		t.Fatalf("build %d printed no count", round)
	}
	counted(1, "count=1")
	counted(2, "count=2")
	// The cache mount and what it holds survive a restart.
	s.Builder.Terminate()
	s.RestartBuilder(t)

	admin := s.builds(t)
	readCfg := s.Client
	readCfg.Token = s.Tokens[auth.RoleRead]
	readConn, err := grpcclient.Dial(s.BuilderAddr, readCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer readConn.Close()
	reader := builderv1.NewBuildServiceClient(readConn)

	list, err := reader.ListCacheMounts(ctx, &builderv1.ListCacheMountsRequest{})
	if err != nil {
		t.Fatalf("ListCacheMounts with a read token: %v", err)
	}
	if ms := list.GetCacheMounts(); len(ms) != 1 || ms[0].GetId() != "counter" || ms[0].GetSize() < 100_000 || ms[0].GetInUse() || ms[0].GetLastUsed() == nil {
		t.Fatalf("ListCacheMounts = %v, want counter idle with its 100 kB", ms)
	} else if list.GetTotalSize() != ms[0].GetSize() {
		t.Errorf("total_size %d, want counter's %d", list.GetTotalSize(), ms[0].GetSize())
	}
	counterSize := list.GetCacheMounts()[0].GetSize()

	// Pruning takes from every build what it relies on: admin only.
	_, err = reader.PruneCacheMounts(ctx, &builderv1.PruneCacheMountsRequest{})
	var e *errdefs.Error
	if !errors.Is(err, errdefs.ErrPermissionDenied) || !errors.As(err, &e) || e.Reason() != "ROLE_REQUIRED" {
		t.Fatalf("PruneCacheMounts with a read token = %v, want PERMISSION_DENIED (ROLE_REQUIRED)", err)
	}

	// A step holds "busy" while the prune runs.
	busyCtx, stopBusy := context.WithCancel(ctx)
	defer stopBusy()
	busy := s.startBuild(t, busyCtx, "FROM busybox\nRUN --mount=type=cache,id=busy,target=/c sh -c 'echo x > /c/f; echo started; sleep 60'\n")
	busy.until(t, "the busy step started", func(ev *builderv1.BuildEvent) bool { return output(ev, "started") })
	list, err = admin.ListCacheMounts(ctx, &builderv1.ListCacheMountsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	inUse := map[string]bool{}
	for _, m := range list.GetCacheMounts() {
		inUse[m.GetId()] = m.GetInUse()
	}
	if len(inUse) != 2 || !inUse["busy"] || inUse["counter"] {
		t.Fatalf("ListCacheMounts during the busy step: in use %v, want busy in use and counter idle", inUse)
	}

	pruned, err := admin.PruneCacheMounts(ctx, &builderv1.PruneCacheMountsRequest{})
	if err != nil {
		t.Fatalf("PruneCacheMounts: %v", err)
	}
	if rm := pruned.GetRemoved(); len(rm) != 1 || rm[0].GetId() != "counter" || rm[0].GetSize() != counterSize || pruned.GetSpaceReclaimed() != counterSize {
		t.Fatalf("PruneCacheMounts = %v, want counter removed with its %d bytes reclaimed", pruned, counterSize)
	}
	list, err = admin.ListCacheMounts(ctx, &builderv1.ListCacheMountsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if ms := list.GetCacheMounts(); len(ms) != 1 || ms[0].GetId() != "busy" || !ms[0].GetInUse() {
		t.Errorf("after the prune ListCacheMounts = %v, want busy alone, in use", ms)
	}
	if _, err := admin.CancelBuild(ctx, &builderv1.CancelBuildRequest{BuildId: busy.id}); err != nil {
		t.Fatal(err)
	}
	if err := busy.rest(); err == nil {
		t.Fatal("the canceled busy build succeeded")
	}

	// The next build sees an empty cache.
	counted(3, "count=1")

	// Filters: counter was just used, so an hour's until keeps it; its id
	// removes it.
	pruned, err = admin.PruneCacheMounts(ctx, &builderv1.PruneCacheMountsRequest{UnusedFor: durationpb.New(time.Hour)})
	if err != nil || len(pruned.GetRemoved()) != 0 {
		t.Errorf("PruneCacheMounts(unused_for 1h) = %v, %v; want nothing removed", pruned, err)
	}
	pruned, err = admin.PruneCacheMounts(ctx, &builderv1.PruneCacheMountsRequest{Ids: []string{"counter"}})
	if err != nil || len(pruned.GetRemoved()) != 1 || !strings.EqualFold(pruned.GetRemoved()[0].GetId(), "counter") {
		t.Errorf("PruneCacheMounts(id counter) = %v, %v; want counter removed", pruned, err)
	}

	// Two builds use a private id at once (they meet over a shared one):
	// each gets a directory, both are kept and listed, across a restart,
	// and a prune of the id removes both.
	var private []*build
	for _, who := range []string{"a", "b"} {
		private = append(private, s.startBuild(t, ctx, "FROM busybox\nRUN --mount=type=cache,id=meet,target=/m --mount=type=cache,id=pv,target=/c,sharing=private sh -c '"+
			"echo "+who+" >> /m/started; i=0; while [ $(grep -c . /m/started) -lt 2 ] && [ $i -lt 30 ]; do sleep 0.1; i=$((i+1)); done; echo "+who+" > /c/who'\n"))
	}
	for _, b := range private {
		if err := b.rest(); err != nil {
			t.Fatalf("a build on the private id: %v", err)
		}
	}
	privateRows := func(cl builderv1.BuildServiceClient) int {
		t.Helper()
		list, err := cl.ListCacheMounts(ctx, &builderv1.ListCacheMountsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, m := range list.GetCacheMounts() {
			if m.GetId() == "pv" && m.GetSize() == 2 {
				n++
			}
		}
		return n
	}
	if n := privateRows(admin); n != 2 {
		t.Errorf("ListCacheMounts lists pv %d times, want twice: a directory for each build", n)
	}
	s.Builder.Terminate()
	s.RestartBuilder(t)
	admin = s.builds(t)
	if n := privateRows(admin); n != 2 {
		t.Errorf("after a restart ListCacheMounts lists pv %d times, want twice", n)
	}
	pruned, err = admin.PruneCacheMounts(ctx, &builderv1.PruneCacheMountsRequest{Ids: []string{"pv"}})
	if err != nil || len(pruned.GetRemoved()) != 2 || pruned.GetSpaceReclaimed() != 4 {
		t.Errorf("PruneCacheMounts(id pv) = %v, %v; want both directories removed", pruned, err)
	}
	if n := privateRows(admin); n != 0 {
		t.Errorf("after the prune ListCacheMounts lists pv %d times", n)
	}
}
