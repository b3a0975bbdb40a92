package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/strata-build/strata/lib/harness"
)

// builderHost is what a builder with state directory dir holds on the host
// for its RUN steps.
type builderHost struct {
	containers []string // runc's containers
	mounts     int      // mounts under the state directory
	netns      []string // network namespaces' files
	bridge     bool     // its bridge exists
	rules      bool     // iptables names its bridge
}

func inspectBuilderHost(t *testing.T, stateDir string) builderHost {
	t.Helper()
	sandboxDir := filepath.Join(stateDir, "sandbox")
	var h builderHost
	out, err := exec.Command("runc", "--root", filepath.Join(sandboxDir, "runc"), "list", "-q").Output()
	if err != nil {
		t.Fatalf("runc list: %v", err)
	}
	h.containers = strings.Fields(string(out))
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	h.mounts = strings.Count(string(mounts), stateDir)
	entries, _ := os.ReadDir(filepath.Join(sandboxDir, "netns"))
	for _, e := range entries {
		h.netns = append(h.netns, e.Name())
	}
	// The runner's bridge name, as it derives it from its directory.
	sum := sha256.Sum256([]byte(sandboxDir))
	bridge := "strata" + hex.EncodeToString(sum[:4])
	_, err = net.InterfaceByName(bridge)
	h.bridge = err == nil
	rules, _ := exec.Command("iptables-save").Output()
	h.rules = strings.Contains(string(rules), bridge)
	return h
}

// A RUN step cannot connect to the services the builder is configured
// with (metadata, blob store) nor the S3 server under the blob store.
func TestRunCannotReachTheControlPlane(t *testing.T) {
	s := withBusybox(t)
	dir := t.TempDir()
	var run strings.Builder
	for name, addr := range map[string]string{"metadata": s.MetadataAddr, "blobstore": s.BlobstoreAddr, "s3": s.S3.Endpoint} {
		host, port, _ := net.SplitHostPort(addr)
		// The quotes keep the instruction, which the output repeats, from
		// reading as a result.
		fmt.Fprintf(&run, "(nc -w 2 %s %s </dev/null && echo REACH''ED %s || echo block''ed %s); ", host, port, name, name)
	}
	writeFiles(t, dir, map[string]string{"Dockerfile": "FROM busybox\nRUN " + run.String() + "\n"})
	out := s.ok(t, dir, "build", "--progress", "plain", "--no-cache", ".")
	for _, name := range []string{"metadata", "blobstore", "s3"} {
		if !strings.Contains(out, "blocked "+name) || strings.Contains(out, "REACHED "+name) {
			t.Errorf("RUN reached the %s, or did not try:\n%s", name, out)
		}
	}
}

// A builder killed in the middle of a RUN leaves its container, mounts and
// network; restarted, it removes them and builds; stopped, it leaves
// nothing on the host.
func TestBuilderKilledMidRunRestartsClean(t *testing.T) {
	s := withBusybox(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"Dockerfile": "FROM busybox\nRUN echo started; sleep 1000\n"})
	build := exec.Command(filepath.Join(s.Bin, "strata"), "build", "--progress", "plain", ".")
	build.Dir = dir
	build.Env = append(append(os.Environ(), "HOME="+s.home), s.Env()...)
	if err := build.Start(); err != nil {
		t.Fatal(err)
	}
	defer build.Process.Kill()
	harness.WaitFor(t, "a running RUN step", time.Minute, func(_ context.Context) error {
		if h := inspectBuilderHost(t, s.BuilderStateDir); len(h.containers) == 0 {
			return fmt.Errorf("no container yet")
		}
		return nil
	})
	before := inspectBuilderHost(t, s.BuilderStateDir)
	s.Builder.Stop() // SIGKILL
	build.Wait()
	if after := inspectBuilderHost(t, s.BuilderStateDir); len(after.containers) == 0 || after.mounts == 0 || !after.bridge {
		t.Logf("after SIGKILL: %+v (the test wants the crash to leave something to clean)", after)
	}

	s.RestartBuilder(t)
	h := inspectBuilderHost(t, s.BuilderStateDir)
	if len(h.containers) != 0 {
		t.Errorf("containers after the restart: %v", h.containers)
	}
	for _, ns := range before.netns {
		for _, now := range h.netns {
			if ns == now {
				t.Errorf("network namespace %s of the killed builder is still there", ns)
			}
		}
	}
	writeFiles(t, dir, map[string]string{"Dockerfile": "FROM busybox\nRUN echo after > /after\n"})
	s.ok(t, dir, "build", "-t", "after-restart", ".")

	s.Builder.Terminate()
	h = inspectBuilderHost(t, s.BuilderStateDir)
	if len(h.containers) != 0 || h.mounts != 0 || len(h.netns) != 0 || h.bridge || h.rules {
		t.Errorf("after a graceful stop the builder left %+v on the host", h)
	}
	tmp, _ := os.ReadDir(filepath.Join(s.BuilderStateDir, "sandbox", "bundles"))
	if len(tmp) != 0 {
		t.Errorf("%d run bundles left", len(tmp))
	}
}
