package e2e

import (
	"strings"
	"testing"

	"github.com/strata-build/strata/lib/harness"
)

// FROM an image that is not held locally pulls it from its registry; one
// that no registry has is a clear error naming the reference.
func TestFromPullsWhatIsNotLocal(t *testing.T) {
	s := withBusybox(t)
	reg := harness.StartRegistry(t)
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
