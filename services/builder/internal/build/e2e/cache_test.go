package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/auth"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/grpcclient"
	"github.com/strata-build/strata/lib/harness"
)

// The shared cache cannot be poisoned: a write token may not store a cache
// record, and a forged one (a real key pointed at another image, as a
// compromised writer could leave) is ignored, logged and counted; the step
// runs and the build makes the right image.
func TestForgedCacheRecordIsIgnored(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("the builder needs root for overlay mounts and runc")
	}
	metrics := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	s := &stack{Stack: harness.StartStack(t, harness.StackOptions{Secure: true, BuilderEnv: []string{"STRATA_METRICS_ADDR=" + metrics}})}
	s.home = t.TempDir()
	s.ok(t, "", "import", rootfsTar(t), "busybox:latest")
	ours, theirs := t.TempDir(), t.TempDir()
	writeFiles(t, ours, map[string]string{"Dockerfile": "FROM busybox\nRUN echo good > /f\nRUN cat /f\n"})
	writeFiles(t, theirs, map[string]string{"Dockerfile": "FROM busybox\nRUN echo evil > /f\n"})
	s.ok(t, ours, "build", "-t", "ours", ".")
	evil := strings.TrimSpace(s.ok(t, theirs, "build", "-q", "-t", "theirs", "."))

	metadata := func(role auth.Role) metadatav1.ImageServiceClient {
		cfg := s.Client
		cfg.Token = s.Tokens[role]
		conn, err := grpcclient.Dial(s.MetadataAddr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return metadatav1.NewImageServiceClient(conn)
	}
	ctx := context.Background()
	list, err := metadata(auth.RoleRead).ListCacheRecords(ctx, &metadatav1.ListCacheRecordsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var key, good string
	for _, r := range list.GetRecords() {
		if strings.HasSuffix(r.GetDescription(), "echo good > /f") {
			key, good = r.GetKey(), r.GetImageId()
		}
	}
	if key == "" {
		t.Fatalf("no cache record of RUN echo good > /f among %v", list.GetRecords())
	}
	forged := &metadatav1.PutCacheRecordRequest{Record: &metadatav1.CacheRecord{Key: key, ImageId: evil, Description: "/bin/sh -c echo good > /f"}}
	for _, role := range []auth.Role{auth.RoleWrite, auth.RoleAdmin} {
		if _, err := metadata(role).PutCacheRecord(ctx, forged); errdefs.Code(err) != codes.PermissionDenied {
			t.Errorf("PutCacheRecord with a %s token: %v, want PERMISSION_DENIED", role, err)
		}
	}
	// A record stays once written (the first writer wins) unless the
	// writer names the one it replaces, as a forger can.
	forged.ReplacesImageId = good
	if r, err := metadata(auth.RoleService).PutCacheRecord(ctx, forged); err != nil || r.GetRecord().GetImageId() != evil {
		t.Fatalf("PutCacheRecord with the service token = %v, %v; want the forged record stored", r, err)
	}

	out := s.ok(t, ours, "build", "-t", "ours", ".")
	if strings.Contains(out, "Using cache") || !strings.Contains(out, "Step 3/3 : RUN cat /f\n ---> Running in ") || !strings.Contains(out, "\ngood\n") {
		t.Errorf("rebuild over a forged record: want every step run and the file the step writes printed:\n%s", out)
	}
	if strings.Contains(out, evil[:12]) {
		t.Errorf("rebuild used the forged image %s:\n%s", evil, out)
	}
	// The rebuild put the record right: the next build is all cache.
	if out := s.ok(t, ours, "build", "-t", "ours", "."); strings.Count(out, "Using cache") != 2 {
		t.Errorf("build after the rebuild: want both steps from the cache:\n%s", out)
	}
	history := s.ok(t, "", "history", "--no-trunc", "--format", "{{.CreatedBy}}", "ours")
	if want := "/bin/sh -c cat /f\n/bin/sh -c echo good > /f\n"; !strings.HasPrefix(history, want) {
		t.Errorf("history of ours:\n%s\nwant it to start with\n%s", history, want)
	}
	resp, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "\nstrata_build_cache_records_rejected_total 1\n") {
		t.Errorf("metrics lack strata_build_cache_records_rejected_total 1")
	}
	log, err := os.ReadFile(s.Builder.Log)
	if err != nil || !strings.Contains(string(log), `"msg":"cache record ignored: the step runs"`) || !strings.Contains(string(log), evil) {
		t.Errorf("the builder's log does not say the record of %s was ignored (%v)", evil, err)
	}
	// The step's record is right again.
	if again := s.ok(t, ours, "build", "-t", "ours", "."); strings.Count(again, "Using cache") != 2 {
		t.Errorf("the next build: want both steps from the cache:\n%s", again)
	}
}

// Two builds of one Dockerfile at once, on an empty cache: both miss and
// both record their images, and the cache records they leave form one
// chain (the first writer's), so the next build hits every step.
func TestConcurrentFirstBuildsLeaveOneCache(t *testing.T) {
	s := withBusybox(t)
	images, blobs := s.clients(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"Dockerfile": "FROM busybox\nRUN sleep 1; echo one > /one\nENV A=1\nRUN sleep 1; echo two > /two\nCOPY f /f\nRUN cat /one /two /f\n",
		"f":          "f\n",
	})
	var wg sync.WaitGroup
	outs := make([]string, 2)
	for i := range outs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := s.strata(t, dir, "build", "-t", fmt.Sprintf("race%d", i), ".")
			if r.code != 0 {
				t.Errorf("build %d: exit %d\n%s%s", i, r.code, r.stdout, r.stderr)
			}
			outs[i] = r.stdout
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for i, out := range outs {
		if strings.Contains(out, "Using cache") {
			t.Fatalf("build %d hit the cache, the builds did not race:\n%s", i, out)
		}
		checkBlobs(t, images, blobs, fmt.Sprintf("race%d", i))
	}
	out := s.ok(t, dir, "build", "-t", "after", ".")
	if n := strings.Count(out, "Using cache"); n != 5 {
		t.Errorf("build after the race: %d steps from the cache, want all 5:\n%s", n, out)
	}
	after := s.ok(t, "", "inspect", "--format", "{{.Id}}", "after")
	first := s.ok(t, "", "inspect", "--format", "{{.Id}}", "race0")
	second := s.ok(t, "", "inspect", "--format", "{{.Id}}", "race1")
	if after != first && after != second {
		t.Errorf("build after the race made %s, neither race0 (%s) nor race1 (%s)", after, first, second)
	}
}
