package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/strata-build/strata/lib/harness"
)

// strata build, its connection to the builder cut in the middle of a RUN
// step, reattaches once the builder can be reached again and finishes the
// build as if nothing happened.
func TestStrataBuildReattachesAfterADisconnect(t *testing.T) {
	s := startStack(t)
	proxy := harness.StartToxiproxy(t).Proxy(t, "builder", s.BuilderAddr)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM busybox\nRUN echo before && sleep 4 && echo after\n"), 0o644)
	cmd := exec.Command(filepath.Join(s.Bin, "strata"), "build", "-t", "reattached:1", dir)
	cmd.Env = append(append(os.Environ(), "HOME="+t.TempDir()), s.Env()...)
	cmd.Env = append(cmd.Env, "STRATA_BUILDER_ADDR="+proxy.Listen)
	outPath := filepath.Join(t.TempDir(), "build.log")
	out, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	harness.WaitFor(t, "the RUN step", 60*time.Second, func(context.Context) error {
		if b, _ := os.ReadFile(outPath); !bytes.Contains(b, []byte("before")) {
			return os.ErrNotExist
		}
		return nil
	})
	if err := proxy.Disable(); err != nil { // cuts the connection
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the outage itself, not a wait for readiness
	if err := proxy.Enable(); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	log, _ := os.ReadFile(outPath)
	if err != nil || !strings.Contains(string(log), "after") || !strings.Contains(string(log), "Successfully tagged reattached:1") {
		t.Fatalf("strata build across a disconnect: %v\n%s", err, log)
	}
	if n := strings.Count(string(log), "Step 2/2"); n != 1 {
		t.Errorf("the reattached build printed step 2 %d times, want once:\n%s", n, log)
	}
}
