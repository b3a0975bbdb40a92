package parity

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/strata-build/strata/lib/harness"
)

// buildkitCasesDir holds the cases of the features Strata takes from
// BuildKit's Dockerfile frontend (docker/dockerfile:1) rather than from
// Docker's classic builder: TestBuildKit builds them with buildkitd and
// with Strata and compares what they make.
const buildkitCasesDir = "testdata/buildkit"

// buildkit is buildkitd v0.34.2 (make tools) with its OCI worker (runc),
// driven with buildctl. Nothing reaches a registry: the base image is an
// OCI layout given as the named context of baseTag, and each build is
// exported as a docker-archive under out.
type buildkit struct {
	ctl, addr, out string
	layout, digest string
}

func startBuildKit(t testing.TB, rootfs string) *buildkit {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("buildkitd's OCI worker needs root")
	}
	// A short directory: the socket's path must fit in sun_path.
	dir, err := os.MkdirTemp("", "bk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	b := &buildkit{ctl: harness.Tool(t, "buildctl"), addr: "unix://" + filepath.Join(dir, "sock"), out: t.TempDir()}
	harness.Start(t, nil, harness.Tool(t, "buildkitd"), "--root", filepath.Join(dir, "root"), "--addr", b.addr,
		"--oci-worker=true", "--containerd-worker=false")
	harness.WaitFor(t, "buildkitd", time.Minute, func(ctx context.Context) error {
		return exec.CommandContext(ctx, b.ctl, "--addr", b.addr, "debug", "workers").Run()
	})
	b.layout, b.digest = ociLayout(t, rootfs)
	return b
}

// ociLayout writes the busybox rootfs tar as a one-layer image in an OCI
// image layout and returns the layout and its manifest's digest.
func ociLayout(t testing.TB, rootfs string) (string, string) {
	t.Helper()
	layer, err := os.ReadFile(rootfs)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		t.Fatal(err)
	}
	blob := func(b []byte) string {
		sum := sha256.Sum256(b)
		h := hex.EncodeToString(sum[:])
		if err := os.WriteFile(filepath.Join(dir, "blobs", "sha256", h), b, 0o644); err != nil {
			t.Fatal(err)
		}
		return "sha256:" + h
	}
	desc := func(mediaType string, b []byte) map[string]any {
		return map[string]any{"mediaType": mediaType, "digest": blob(b), "size": len(b)}
	}
	mustJSON := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	layerDesc := desc("application/vnd.oci.image.layer.v1.tar", layer)
	config := mustJSON(map[string]any{
		"architecture": "amd64", "os": "linux", "config": map[string]any{},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDesc["digest"].(string)}},
	})
	manifest := mustJSON(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": desc("application/vnd.oci.image.config.v1+json", config), "layers": []any{layerDesc},
	})
	manifestDesc := desc("application/vnd.oci.image.manifest.v1+json", manifest)
	index := mustJSON(map[string]any{"schemaVersion": 2, "manifests": []any{manifestDesc}})
	if err := os.WriteFile(filepath.Join(dir, "index.json"), index, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, manifestDesc["digest"].(string)
}

func (b *buildkit) build(t testing.TB, dir string, c *Case, dockerfile, tag string) (string, string) {
	if dockerfile == "" {
		dockerfile = "Dockerfile"
	}
	args := []string{"--addr", b.addr, "build", "--progress", "plain", "--frontend", "dockerfile.v0",
		"--local", "context=" + dir, "--local", "dockerfile=" + filepath.Join(dir, filepath.Dir(dockerfile)),
		"--opt", "filename=" + filepath.Base(dockerfile),
		// The frontend serves the Dockerfile itself, as Strata does, rather
		// than fetch the image a syntax directive names.
		"--opt", "cmdline=docker/dockerfile:1",
		"--oci-layout", "base=" + b.layout, "--opt", "context:" + baseTag + "=oci-layout://base@" + b.digest,
		"--output", "type=docker,name=" + tag + ",dest=" + filepath.Join(b.out, tag+".tar")}
	for _, a := range c.BuildArgs {
		args = append(args, "--opt", "build-arg:"+a)
	}
	if c.Target != "" {
		args = append(args, "--opt", "target="+c.Target)
	}
	for _, sec := range c.secretFlags(t) {
		args = append(args, "--secret", sec)
	}
	for _, a := range c.sshFlags(t) {
		args = append(args, "--ssh", a)
	}
	cmd := exec.Command(b.ctl, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatalf("buildctl: %v", err)
		}
		return out.String(), strings.TrimSpace(out.String())
	}
	return out.String(), ""
}

func (b *buildkit) snapshot(t testing.TB, tag string, base map[string]string) (*Golden, map[string]string) {
	archive, err := os.ReadFile(filepath.Join(b.out, tag+".tar"))
	if err != nil {
		t.Fatal(err)
	}
	return snapshot(t, archive, base)
}

func (b *buildkit) remove(tags ...string) {
	for _, tag := range tags {
		os.Remove(filepath.Join(b.out, tag+".tar"))
	}
}

// TestBuildKit builds every case of testdata/buildkit with BuildKit and
// with Strata: both must pass the case's checks (or fail as it says), and
// make the same root filesystem and config (setConfig). History is not
// compared: Strata writes the classic builder's, by design.
func TestBuildKit(t *testing.T) {
	if *writeGolden {
		t.Skip("writing the goldens")
	}
	cases := loadCasesIn(t, buildkitCasesDir)
	if len(cases) == 0 {
		t.Fatalf("no cases under %s", buildkitCasesDir)
	}
	rootfs, base := baseRootfs(t)
	bk := startBuildKit(t, rootfs)
	// ADD of a Git URL fetches from a repository on loopback.
	s := startStrata(t, rootfs, "STRATA_ALLOW_PRIVATE_URLS=true")
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			if c.Repo != "" {
				c = c.withRepo(t)
			}
			want, got := run(t, bk, c, base), run(t, s, c, base)
			if err := dockerAgrees(c, want); err != nil {
				t.Fatalf("the case does not hold on BuildKit: %v", err)
			}
			if err := dockerAgrees(c, got); err != nil {
				t.Errorf("the case does not hold on Strata: %v", err)
			}
			diff := cmp.Diff(setConfig(want.golden), setConfig(got.golden)) + cmp.Diff(want.golden.Files, got.golden.Files)
			switch {
			case c.Known != "" && diff == "":
				t.Errorf("no longer differs from BuildKit: take \"known: %s\" out of the case", c.Known)
			case c.Known != "":
				t.Logf("a known difference (%s), config and root filesystem (-buildkit +strata):\n%s", c.Known, diff)
			case diff != "":
				t.Errorf("config and root filesystem (-buildkit +strata):\n%s", diff)
			}
		})
	}
}

// withRepo serves the case's repository (Case.Repo) with git's own
// http-backend, as a forge serves one, and returns the case with its URL
// as the REPO build argument. buildkitd fetches it with git, Strata with
// go-git.
func (c *Case) withRepo(t *testing.T) *Case {
	t.Helper()
	gitBin, err := exec.LookPath("git")
	if err != nil {
		t.Skip("git is not installed: buildkitd needs it to fetch a Git source, and the test to serve one")
	}
	dir := t.TempDir()
	c.writeContext(t, dir)
	work := filepath.Join(dir, c.Repo)
	gitRun := func(dir string, args ...string) {
		cmd := exec.Command(gitBin, append([]string{"-c", "user.name=t", "-c", "user.email=t@example.com"}, args...)...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	srv := filepath.Join(t.TempDir(), "srv")
	gitRun(work, "init", "-q", "-b", "main")
	gitRun(work, "add", "-A")
	gitRun(work, "commit", "-q", "-m", "case "+c.Name)
	gitRun(work, "tag", "-a", "-m", "v1", "v1")
	gitRun(dir, "clone", "-q", "--bare", work, filepath.Join(srv, "repo.git"))
	hs := httptest.NewServer(&cgi.Handler{Path: gitBin, Args: []string{"http-backend"},
		Env: []string{"GIT_PROJECT_ROOT=" + srv, "GIT_HTTP_EXPORT_ALL=1"}})
	t.Cleanup(hs.Close)
	cc := *c
	cc.BuildArgs = append(slices.Clone(c.BuildArgs), "REPO="+hs.URL+"/repo.git")
	return &cc
}

// setConfig is the config fields of g that are set: the classic builder,
// and so Strata, writes an unset User or WorkingDir as "", BuildKit leaves
// it out.
func setConfig(g *Golden) map[string]string {
	out := map[string]string{}
	for k, v := range g.Config {
		if v != `""` {
			out[k] = v
		}
	}
	return out
}

// The BuildKit cases are written like the Docker ones.
func TestBuildKitCasesParse(t *testing.T) {
	for _, c := range loadCasesIn(t, buildkitCasesDir) {
		if len(c.Checks) == 0 && c.Fail == nil {
			t.Errorf("%s: no check and no fail: the case would assert only that both build", c.Name)
		}
		if _, ok := c.Files["Dockerfile"]; !ok && c.File == "" {
			t.Errorf("%s: no Dockerfile", c.Name)
		}
	}
}
