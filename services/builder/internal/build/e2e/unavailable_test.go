package e2e

import (
	"strings"
	"testing"
)

// A build whose blob store goes away fails saying so: the blob store, its
// address, and that the build failed — not gRPC's transport text, and not
// the CLI's hint about reaching the builder, which it did reach.
func TestBuildWithoutItsBlobStoreNamesIt(t *testing.T) {
	s := withBusybox(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"Dockerfile": "FROM busybox\nRUN echo data > /data\n"})
	s.Blobstore.Stop()
	r := s.strata(t, dir, "build", "-t", "orphan", ".")
	want := "the blob store at " + s.BlobstoreAddr + " cannot be reached: connection refused"
	if r.code == 0 || !strings.HasPrefix(r.stderr, "Error: build failed: ") || !strings.Contains(r.stderr, want) {
		t.Fatalf("exit %d, stderr %q; want \"Error: build failed: …\" containing %q", r.code, r.stderr, want)
	}
	if strings.Contains(r.stderr, "is the service running") {
		t.Errorf("stderr %q has the hint for an unreachable builder", r.stderr)
	}
}
