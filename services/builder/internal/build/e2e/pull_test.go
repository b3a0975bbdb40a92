package e2e

import (
	"os"
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

// A builder that allows no private registry refuses FROM, pull and push to
// one on loopback, naming the address and the flags that allow it.
func TestLoopbackRegistryNeedsAllowing(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("the builder needs root for overlay mounts and runc")
	}
	s := &stack{Stack: harness.StartStack(t, harness.StackOptions{BuilderEnv: []string{"STRATA_ALLOW_REGISTRIES="}})}
	s.home = t.TempDir()
	s.ok(t, "", "import", rootfsTar(t), "busybox:latest")
	reg := harness.StartRegistry(t)
	remote := reg + "/team/busybox:1"
	s.ok(t, "", "tag", "busybox:latest", remote)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"Dockerfile": "FROM " + reg + "/team/other:1\n"})
	for _, args := range [][]string{{"push", remote}, {"pull", remote}, {"build", dir}} {
		r := s.strata(t, "", args...)
		if r.code != 1 || !strings.Contains(r.stderr, "127.0.0.1") || !strings.Contains(r.stderr, "--allow-private-registries") {
			t.Errorf("strata %v: exit %d, %q; want a refusal naming the address and the flag", args, r.code, r.stderr)
		}
	}
}
