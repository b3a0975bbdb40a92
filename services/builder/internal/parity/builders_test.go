package parity

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/strata-build/strata/lib/harness"
)

// A builder is Docker's classic builder or Strata, driven through its CLI.
type builder interface {
	// build builds dir as tag with the case's options and returns its
	// progress output, and the build's error output when it fails.
	build(t testing.TB, dir string, c *Case, dockerfile, tag string) (out, errOut string)
	// snapshot reads the image tagged tag.
	snapshot(t testing.TB, tag string, base map[string]string) (*Golden, map[string]string)
	remove(tags ...string)
}

func buildArgs(c *Case, dockerfile, tag string) []string {
	args := []string{"build", "-t", tag}
	if dockerfile != "" {
		args = append(args, "-f", dockerfile)
	}
	for _, a := range c.BuildArgs {
		args = append(args, "--build-arg", a)
	}
	if c.Target != "" {
		args = append(args, "--target", c.Target)
	}
	return append(args, ".")
}

// docker is the machine's Docker Engine with the classic builder.
type docker struct{}

func (docker) run(t testing.TB, dir string, args ...string) (string, string, error) {
	cmd := exec.Command("docker", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0", "TZ=UTC")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("docker %v: %v", args, err)
	}
	return stdout.String(), stderr.String(), err
}

func (d docker) build(t testing.TB, dir string, c *Case, dockerfile, tag string) (string, string) {
	args := buildArgs(c, dockerfile, tag)
	args = append([]string{args[0], "--force-rm"}, args[1:]...)
	out, stderr, err := d.run(t, dir, args...)
	if err != nil {
		return out, strings.TrimSpace(stderr)
	}
	return out, ""
}

func (d docker) snapshot(t testing.TB, tag string, base map[string]string) (*Golden, map[string]string) {
	out, stderr, err := d.run(t, "", "save", tag)
	if err == nil {
		return snapshot(t, []byte(out), base)
	}
	if !strings.Contains(stderr, "empty export") {
		t.Fatalf("docker save %s: %s", tag, stderr)
	}
	// The Engine saves no image without layers (FROM scratch and metadata
	// only). Such an image is its config alone, which the Engine keeps in
	// its image store on this machine: read it there, byte for byte, as
	// image inspect would lose the difference between [] and null.
	info, stderr, err := d.run(t, "", "info", "-f", "{{.DockerRootDir}}\t{{.Driver}}")
	if err != nil {
		t.Fatalf("docker info: %s", stderr)
	}
	id, stderr, err := d.run(t, "", "image", "inspect", "-f", "{{.Id}}", tag)
	if err != nil {
		t.Fatalf("docker image inspect %s: %s", tag, stderr)
	}
	root, driver, _ := strings.Cut(strings.TrimSpace(info), "\t")
	config, err := os.ReadFile(filepath.Join(root, "image", driver, "imagedb", "content", "sha256", strings.TrimPrefix(strings.TrimSpace(id), "sha256:")))
	if err != nil {
		t.Fatalf("the config of %s, an image without layers, from the Engine's image store: %v", tag, err)
	}
	return configOnly(t, config), map[string]string{}
}

// remove removes images by tag or ID, one at a time and in the order
// given, so that a child goes before its parent.
func (d docker) remove(images ...string) {
	for _, img := range images {
		exec.Command("docker", "rmi", img).Run()
	}
}

func (d docker) version(t testing.TB) string {
	out, stderr, err := d.run(t, "", "version", "--format", "{{.Server.Version}}")
	if err != nil {
		t.Fatalf("docker version (the parity goldens need the Docker Engine): %s", stderr)
	}
	return strings.TrimSpace(out)
}

// importBase imports the busybox rootfs as baseTag.
func (d docker) importBase(t testing.TB, rootfs string) {
	if _, stderr, err := d.run(t, "", "import", rootfs, baseTag); err != nil {
		t.Fatalf("docker import: %s", stderr)
	}
}

// strata is Strata's services on loopback, driven with the strata CLI.
type strata struct {
	*harness.Stack
	home string
}

func startStrata(t testing.TB, rootfs string, builderEnv ...string) *strata {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("the builder needs root for overlay mounts and runc")
	}
	s := &strata{Stack: harness.StartStack(t, harness.StackOptions{BuilderEnv: builderEnv})}
	s.home = filepath.Join(s.Dir, "home")
	if _, stderr, err := s.run(t, "", "import", rootfs, baseTag); err != nil {
		t.Fatalf("strata import: %s", stderr)
	}
	return s
}

func (s *strata) run(t testing.TB, dir string, args ...string) (string, string, error) {
	cmd := exec.Command(filepath.Join(s.Bin, "strata"), args...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "TZ=UTC", "HOME="+s.home, "XDG_CACHE_HOME="+filepath.Join(s.home, ".cache")), s.Env()...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("strata %v: %v", args, err)
	}
	return stdout.String(), stderr.String(), err
}

func (s *strata) build(t testing.TB, dir string, c *Case, dockerfile, tag string) (string, string) {
	args := buildArgs(c, dockerfile, tag)
	for _, sec := range c.secretFlags(t) {
		args = slices.Insert(args, len(args)-1, "--secret", sec) // before the context
	}
	for _, a := range c.sshFlags(t) {
		args = slices.Insert(args, len(args)-1, "--ssh", a)
	}
	out, stderr, err := s.run(t, dir, args...)
	if err != nil {
		return out, strings.TrimSpace(stderr)
	}
	return out, ""
}

func (s *strata) snapshot(t testing.TB, tag string, base map[string]string) (*Golden, map[string]string) {
	p := filepath.Join(t.TempDir(), "image.tar")
	if _, stderr, err := s.run(t, "", "save", "-o", p, tag); err != nil {
		t.Fatalf("strata save %s: %s", tag, stderr)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return snapshot(t, b, base)
}

func (s *strata) remove(tags ...string) {}
