package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-units"

	"github.com/strata-build/strata/cli/internal/testimage"
	"github.com/strata-build/strata/lib/harness"
)

// docker runs the Docker CLI, in UTC as strata runs in these tests.
func docker(t *testing.T, stdin []byte, args ...string) string {
	t.Helper()
	cmd := exec.Command("docker", args...)
	cmd.Env = append(os.Environ(), "TZ=UTC")
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("docker %v (the Docker Engine must run for parity tests): %v\n%s", args, err, stderr.String())
	}
	return string(b)
}

// seedArchive writes the test image as a docker-archive file.
func seedArchive(t *testing.T, tag string) (string, testimage.Image) {
	t.Helper()
	var buf bytes.Buffer
	img, err := testimage.Write(&buf, tag, "e2e")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "seed.tar")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, img
}

// The same image, loaded into Docker and into Strata, prints the same
// history, list and inspect fields.
func TestLoadedImageMatchesDocker(t *testing.T) {
	const repo = "strata-e2e-seed"
	tag := repo + ":golden"
	archive, img := seedArchive(t, tag)
	raw, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	docker(t, raw, "load")
	t.Cleanup(func() { _ = exec.Command("docker", "rmi", tag).Run() })

	s := startStack(t)
	if got, want := s.ok(t, "", "load", "-i", archive), "Loaded image: "+tag+"\n"; got != want {
		t.Fatalf("strata load = %q, want %q", got, want)
	}

	for _, flags := range [][]string{
		{"history"},
		{"history", "-H=false"},
		{"history", "--no-trunc"},
		{"history", "-q"},
		{"history", "--format", "json"},
		{"image", "ls"},
		{"image", "ls", "--digests"},
		{"image", "ls", "--no-trunc"},
		{"image", "ls", "-q"},
		{"image", "ls", "--format", "json"},
	} {
		arg := tag
		if flags[0] == "image" {
			arg = repo
		}
		args := append(append([]string(nil), flags...), arg)
		if got, want := s.ok(t, "", args...), docker(t, nil, args...); got != want {
			t.Errorf("strata %v:\n%s--- docker:\n%s", args, got, want)
		}
	}

	// Inspect: Docker's field names and the fields that describe the image.
	for _, format := range []string{
		"{{.Id}}", "{{json .RepoTags}}", "{{.Created}}", "{{.Size}}", "{{.Os}}/{{.Architecture}}",
		"{{json .Config}}", "{{json .RootFS}}", "{{.Parent}}|{{.Comment}}|{{json .RepoDigests}}",
	} {
		args := []string{"image", "inspect", "--format", format, tag}
		if got, want := s.ok(t, "", args...), docker(t, nil, args...); got != want {
			t.Errorf("strata %v = %q, docker = %q", args, got, want)
		}
	}
	if got := strings.TrimSpace(s.ok(t, "", "image", "inspect", "--format", "{{.Id}}", tag)); got != img.ID {
		t.Errorf("inspect Id = %s, want the config digest %s", got, img.ID)
	}
	if got, want := keys(t, s.ok(t, "", "image", "inspect", tag)), keys(t, docker(t, nil, "image", "inspect", tag)); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("inspect fields:\nstrata %v\ndocker %v", got, want)
	}
}

// keys returns the field names of the first object of an inspect array.
func keys(t *testing.T, inspect string) []string {
	t.Helper()
	var objects []map[string]json.RawMessage
	if err := json.Unmarshal([]byte(inspect), &objects); err != nil || len(objects) != 1 {
		t.Fatalf("inspect output is not a one-element array: %v\n%s", err, inspect)
	}
	var names []string
	for k := range objects[0] {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// The seed's session after the build: history, inspect, tag, ls; then the
// rest of an image's life: rmi, prune, save for Docker, system df.
func TestImageLifecycle(t *testing.T) {
	archive, img := seedArchive(t, "my-nginx:latest")
	s := startStack(t)
	s.ok(t, "", "image", "load", "-i", archive)

	s.ok(t, "", "image", "tag", "my-nginx", "davidainslie/nginx")
	ls := s.ok(t, "", "image", "ls")
	short := img.ID[len("sha256:") : len("sha256:")+12]
	age := units.HumanDuration(time.Since(testimage.Created)) + " ago" // "6 years ago"; one width for years 2 to 9
	wantLs := "REPOSITORY           TAG       IMAGE ID       CREATED       SIZE\n" +
		"davidainslie/nginx   latest    " + short + "   " + age + "   2.33kB\n" +
		"my-nginx             latest    " + short + "   " + age + "   2.33kB\n"
	if ls != wantLs {
		t.Errorf("strata image ls after tag:\n%s--- want\n%s", ls, wantLs)
	}
	if got := s.ok(t, "", "image", "history", "-q", "my-nginx"); !strings.HasPrefix(got, short+"\n<missing>\n") {
		t.Errorf("history -q = %q, want the image's ID then <missing> rows", got)
	}

	// save → docker load: Docker reads what Strata writes. A name of the
	// test's own keeps the team's images in Docker untouched.
	s.ok(t, "", "tag", "my-nginx", "strata-e2e-saved:1")
	saved := s.ok(t, "", "save", "strata-e2e-saved:1")
	t.Cleanup(func() { _ = exec.Command("docker", "rmi", "strata-e2e-saved:1").Run() })
	if got := docker(t, []byte(saved), "load"); got != "Loaded image: strata-e2e-saved:1\n" {
		t.Errorf("docker load of strata save = %q", got)
	}
	if got := docker(t, nil, "image", "inspect", "--format", "{{.Id}}", "strata-e2e-saved:1"); got != img.ID+"\n" {
		t.Errorf("Docker loaded %q from strata save, want %s", got, img.ID)
	}
	s.ok(t, "", "rmi", "strata-e2e-saved:1")

	if got, want := s.ok(t, "", "rmi", "davidainslie/nginx"), "Untagged: davidainslie/nginx:latest\n"; got != want {
		t.Errorf("rmi of one of two tags = %q, want %q", got, want)
	}
	r := s.strata(t, "", "rmi", "nosuch")
	if r.code != 1 || !strings.HasPrefix(r.stderr, "Error: ") || !strings.Contains(r.stderr, "nosuch") {
		t.Errorf("rmi nosuch: exit %d, stderr %q; want exit 1 naming the image", r.code, r.stderr)
	}
	if got := s.ok(t, "", "rmi", "my-nginx"); !strings.HasPrefix(got, "Untagged: my-nginx:latest\nDeleted: "+img.ID+"\n") {
		t.Errorf("rmi of the last tag = %q, want Untagged then Deleted %s", got, img.ID)
	}
	if got := s.ok(t, "", "images", "-q"); got != "" {
		t.Errorf("images after rmi = %q, want none", got)
	}
	if got := s.ok(t, "", "image", "prune", "-f"); got != "Total reclaimed space: 0B\n" {
		t.Errorf("prune of nothing = %q", got)
	}
	if got := s.ok(t, "", "system", "df"); !strings.HasPrefix(got, "TYPE          TOTAL     ACTIVE    SIZE      RECLAIMABLE\nImages        0 ") {
		t.Errorf("system df:\n%s", got)
	}
}

// import turns a rootfs tarball into a one-layer image, as `docker import`.
func TestImport(t *testing.T) {
	s := startStack(t)
	rootfs := filepath.Join(t.TempDir(), "rootfs.tar")
	mk := exec.Command("sh", filepath.Join(sharedDir(t), "bench", "make-rootfs.sh"), rootfs)
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("make-rootfs.sh: %v\n%s", err, out)
	}
	id := strings.TrimSpace(s.ok(t, "", "import", "--change", `CMD ["sh"]`, rootfs, "busybox:latest"))
	if !strings.HasPrefix(id, "sha256:") || len(id) != len("sha256:")+64 {
		t.Fatalf("import printed %q, want an image ID", id)
	}
	if got := s.ok(t, "", "history", "--format", "{{.CreatedBy}}|{{.Comment}}", "busybox"); got != "|Imported from -\n" {
		t.Errorf("history of an import = %q", got)
	}
	if got := s.ok(t, "", "inspect", "--format", "{{.Id}} {{.Config.Cmd}}", "busybox"); got != id+" [sh]\n" {
		t.Errorf("inspect of the import = %q", got)
	}
}

// sharedDir finds the team's shared/ folder beside the checkout.
func sharedDir(t *testing.T) string {
	t.Helper()
	for _, dir := range []string{"/work/shared", filepath.Join(filepath.Dir(harness.RepoRoot(t)), "shared")} {
		if _, err := os.Stat(filepath.Join(dir, "bench", "make-rootfs.sh")); err == nil {
			return dir
		}
	}
	t.Fatal("shared/bench/make-rootfs.sh not found beside the checkout")
	return ""
}
