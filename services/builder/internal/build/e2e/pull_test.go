package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/strata-build/strata/lib/harness"
)

// startRegistry runs the distribution registry (v3) on loopback and returns
// its "localhost:PORT".
func startRegistry(t *testing.T) string {
	t.Helper()
	port := harness.FreePort(t)
	dir := t.TempDir()
	cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%d\n", filepath.Join(dir, "data"), port)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	harness.Start(t, nil, harness.Tool(t, "registry"), "serve", cfgPath)
	addr := fmt.Sprintf("localhost:%d", port)
	harness.WaitFor(t, "registry", 30*time.Second, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v2/", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /v2/: %s", resp.Status)
		}
		return nil
	})
	return addr
}

// FROM an image that is not held locally pulls it from its registry; one
// that no registry has is a clear error naming the reference.
func TestFromPullsWhatIsNotLocal(t *testing.T) {
	s := withBusybox(t)
	reg := startRegistry(t)
	remote := reg + "/team/busybox:1"
	s.ok(t, "", "tag", "busybox:latest", remote)
	s.ok(t, "", "push", remote)
	s.ok(t, "", "rmi", remote)

	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"Dockerfile": "FROM " + remote + "\nRUN echo pulled > /p\n"})
	out := s.ok(t, dir, "build", "-t", "from-remote", ".")
	if !strings.Contains(out, "Successfully tagged from-remote:latest") {
		t.Fatalf("build from a pulled base:\n%s", out)
	}
	if img := readArchive(t, s.save(t, "from-remote")); img.files["/p"] == "" {
		t.Error("/p is not in the image built on the pulled base")
	}

	writeFiles(t, dir, map[string]string{"Dockerfile": "FROM " + reg + "/team/nothing:1\n"})
	r := s.strata(t, dir, "build", ".")
	if r.code == 0 || !strings.Contains(r.stderr, "Dockerfile:1: FROM "+reg+"/team/nothing:1") {
		t.Errorf("FROM an image no registry has: exit %d, %q", r.code, r.stderr)
	}
}
