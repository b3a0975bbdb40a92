package e2e

import (
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/strata-build/strata/lib/harness"
)

// push sends an image to a real registry as `docker push` does, crane sees
// the same manifest, and pull brings it back under the same image ID; a
// second pull finds it up to date.
func TestPushAndPull(t *testing.T) {
	s := startStack(t)
	archive, _ := seedArchive(t, "strata-e2e-seed:push")
	s.ok(t, "", "load", "-i", archive)
	id := strings.TrimSpace(s.ok(t, "", "inspect", "--format", "{{.Id}}", "strata-e2e-seed:push"))

	reg := harness.StartRegistry(t)
	remote := reg + "/team/seed:1"
	s.ok(t, "", "tag", "strata-e2e-seed:push", remote)
	out := s.ok(t, "", "push", remote)
	if !strings.Contains(out, "The push refers to repository ["+reg+"/team/seed]") {
		t.Errorf("push output lacks Docker's first line:\n%s", out)
	}
	var pushed string
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, "1: digest: "); ok {
			pushed, _, _ = strings.Cut(rest, " ")
		}
	}
	if pushed == "" {
		t.Fatalf("push output lacks `1: digest: sha256:… size: N`:\n%s", out)
	}
	craneOut, err := exec.Command(harness.Tool(t, "crane"), "digest", "--insecure", remote).CombinedOutput()
	if err != nil {
		t.Fatalf("crane digest %s: %v\n%s", remote, err, craneOut)
	}
	if got := strings.TrimSpace(string(craneOut)); got != pushed {
		t.Errorf("the registry holds manifest %s, strata push printed %s", got, pushed)
	}

	s.ok(t, "", "rmi", "strata-e2e-seed:push", remote)
	if r := s.strata(t, "", "inspect", id); r.code == 0 {
		t.Fatalf("image %s still there after rmi of its tags", id)
	}
	out = s.ok(t, "", "pull", remote)
	for _, want := range []string{"1: Pulling from team/seed", "Digest: " + pushed, "Status: Downloaded newer image for " + remote, remote} {
		if !strings.Contains(out, want) {
			t.Errorf("pull output lacks %q:\n%s", want, out)
		}
	}
	if got := strings.TrimSpace(s.ok(t, "", "inspect", "--format", "{{.Id}}", remote)); got != id {
		t.Errorf("pulled image ID %s, want the pushed image's %s", got, id)
	}
	if got := s.ok(t, "", "images", "--digests", "--format", "{{.Repository}}@{{.Digest}}"); !strings.Contains(got, reg+"/team/seed@"+pushed) {
		t.Errorf("images --digests lacks %s@%s:\n%s", reg+"/team/seed", pushed, got)
	}
	if out := s.ok(t, "", "pull", remote); !strings.Contains(out, "Status: Image is up to date for "+remote) {
		t.Errorf("a second pull is not up to date:\n%s", out)
	}
}

// A registry that wants a password: push and pull fail without one, naming
// the refusal, and succeed with --creds, with the password on stdin, and
// with what `docker login` stored in $DOCKER_CONFIG.
func TestPushAndPullWithCredentials(t *testing.T) {
	s := startStack(t)
	archive, _ := seedArchive(t, "strata-e2e-seed:auth")
	s.ok(t, "", "load", "-i", archive)
	reg := harness.StartRegistryWithAuth(t, "ci", "s3cret")
	remote := reg + "/team/private:1"
	s.ok(t, "", "tag", "strata-e2e-seed:auth", remote)

	if r := s.strata(t, "", "push", remote); r.code != 1 || !strings.Contains(strings.ToLower(r.stderr), "unauthorized") {
		t.Errorf("push without credentials: exit %d, stderr %q; want exit 1, unauthorized", r.code, r.stderr)
	}
	if r := s.strata(t, "", "push", "--creds", "ci:wrong", remote); r.code != 1 || !strings.Contains(strings.ToLower(r.stderr), "unauthorized") {
		t.Errorf("push with a wrong password: exit %d, stderr %q; want exit 1, unauthorized", r.code, r.stderr)
	}
	s.ok(t, "", "push", "--creds", "ci:s3cret", remote)

	s.ok(t, "", "rmi", remote)
	if r := s.strata(t, "", "pull", remote); r.code != 1 || !strings.Contains(strings.ToLower(r.stderr), "unauthorized") {
		t.Errorf("pull without credentials: exit %d, stderr %q; want exit 1, unauthorized", r.code, r.stderr)
	}
	s.ok(t, "s3cret\n", "pull", "--creds", "ci", remote)

	s.ok(t, "", "rmi", remote)
	config := t.TempDir()
	login := `{"auths": {"` + reg + `": {"auth": "` + base64.StdEncoding.EncodeToString([]byte("ci:s3cret")) + `"}}}`
	if err := os.WriteFile(filepath.Join(config, "config.json"), []byte(login), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", config)
	if out := s.ok(t, "", "pull", remote); !strings.Contains(out, "Status: Downloaded newer image for "+remote) {
		t.Errorf("pull with the stored login:\n%s", out)
	}
}
