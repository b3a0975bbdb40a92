package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/strata-build/strata/lib/harness"
)

// run runs a program and returns its standard output, failing the test
// with its output when it fails.
func run(t testing.TB, env []string, stdin []byte, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", filepath.Base(name), strings.Join(args, " "), err, out.String(), errOut.String())
	}
	return out.String()
}

// TestDockerCraneSkopeo is the one model at work with the peers people use:
// an image Strata built is pulled and run by Docker Engine; an image Docker
// builds on it is pushed back and Strata shows it as Docker does; crane and
// skopeo copy images, a multi-platform index and an artifact with a
// subject in and out.
func TestDockerCraneSkopeo(t *testing.T) {
	stack := harness.StartStack(t, harness.StackOptions{Registry: true})
	host := stack.RegistryAddr
	strata := func(stdin []byte, args ...string) string {
		t.Helper()
		return run(t, stack.Env(), stdin, filepath.Join(stack.Bin, "strata"), args...)
	}
	docker := func(args ...string) string {
		t.Helper()
		return run(t, []string{"DOCKER_BUILDKIT=0"}, nil, "docker", args...)
	}
	repo := fmt.Sprintf("interop%d", os.Getpid())
	t.Cleanup(func() {
		out, _ := exec.Command("docker", "images", "-q", "--filter", "reference="+host+"/*").Output()
		out2, _ := exec.Command("docker", "images", "-q", "--filter", "reference="+host+"/*/*").Output()
		if ids := strings.Fields(string(out) + string(out2)); len(ids) > 0 {
			_ = exec.Command("docker", append([]string{"rmi", "-f"}, ids...)...).Run()
		}
	})

	// Strata builds an image; Docker pulls and runs it.
	strata(harness.BusyboxRootfs(t), "import", "-", repo+"/busybox")
	ctx := t.TempDir()
	if err := os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte("FROM "+repo+"/busybox\nRUN echo hello from strata > /hello\nCMD [\"cat\", \"/hello\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	strata(nil, "build", "-q", "-t", repo+"/hello", ctx)
	docker("pull", host+"/"+repo+"/hello")
	if out := docker("run", "--rm", host+"/"+repo+"/hello"); out != "hello from strata\n" {
		t.Errorf("docker run of the image Strata built printed %q", out)
	}
	if s, d := strings.TrimSpace(strata(nil, "inspect", "--format", "{{.Id}}", repo+"/hello")), strings.TrimSpace(docker("inspect", "--format", "{{.Id}}", host+"/"+repo+"/hello")); s != d {
		t.Errorf("Docker pulled image %s, Strata built %s", d, s)
	}

	// Docker builds on it and pushes; Strata shows what Docker shows.
	dctx := t.TempDir()
	if err := os.WriteFile(filepath.Join(dctx, "Dockerfile"), []byte("FROM "+host+"/"+repo+"/hello\nRUN echo from docker > /docker && mkdir -p /d && echo x > /d/x\nLABEL via=docker\nENV MINE=1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mine := host + "/" + repo + "/mine"
	docker("build", "-q", "-t", mine, dctx)
	docker("push", mine)
	const histFormat = "{{.CreatedBy}}|{{.Size}}|{{.Comment}}"
	want := docker("history", "--no-trunc", "--format", histFormat, mine)
	if got := strata(nil, "history", "--no-trunc", "--format", histFormat, repo+"/mine"); got != want {
		t.Errorf("strata history of the pushed image:\n%s\nwant Docker's:\n%s", got, want)
	}
	const inspectFormat = "{{.Id}} {{.Size}} {{.Architecture}} {{.Os}} {{.Created}} {{json .Config}} {{json .RootFS}}"
	if got, want := strata(nil, "inspect", "--format", inspectFormat, repo+"/mine"), docker("inspect", "--format", inspectFormat, mine); got != want {
		t.Errorf("strata inspect of the pushed image:\n%s\nwant Docker's:\n%s", got, want)
	}
	if out := strata(nil, "images", "--format", "{{.Repository}}:{{.Tag}}", repo+"/mine"); out != repo+"/mine:latest\n" {
		t.Errorf("strata images lists the pushed image as %q", out)
	}

	// crane and skopeo copy in and out, between Strata and a distribution
	// registry.
	crane := harness.Tool(t, "crane")
	other := harness.StartRegistry(t)
	run(t, nil, nil, crane, "copy", "--insecure", mine, other+"/copied/mine")
	run(t, nil, nil, crane, "copy", "--insecure", other+"/copied/mine", host+"/"+repo+"/back")
	if a, b := strings.TrimSpace(run(t, nil, nil, crane, "digest", "--insecure", mine)), strings.TrimSpace(run(t, nil, nil, crane, "digest", "--insecure", host+"/"+repo+"/back")); a != b {
		t.Errorf("the image copied out and back has digest %s, not %s", b, a)
	}
	skopeo := harness.Tool(t, "skopeo")
	plain := []string{"--src-tls-verify=false", "--dest-tls-verify=false"}
	run(t, nil, nil, skopeo, append([]string{"copy"}, append(plain, "docker://"+mine, "docker://"+other+"/skopeo/mine")...)...)
	run(t, nil, nil, skopeo, append([]string{"copy"}, append(plain, "docker://"+other+"/skopeo/mine", "docker://"+host+"/"+repo+"/skopeo:1")...)...)
	if out := strata(nil, "inspect", "--format", "{{.Id}}", repo+"/skopeo:1"); strings.TrimSpace(out) != strings.TrimSpace(docker("inspect", "--format", "{{.Id}}", mine)) {
		t.Errorf("the image skopeo pushed is %s in Strata", out)
	}

	// A multi-platform index stays an index: crane copies it out and in
	// unchanged, and skopeo copies it (its Debian version rewrites the
	// index it copies, so the digest is not compared).
	run(t, nil, nil, crane, "mutate", "--insecure", "--set-platform", "linux/arm64", "-t", host+"/"+repo+"/mine:arm64", mine)
	run(t, nil, nil, crane, "index", "append", "--insecure", "-m", mine, "-m", host+"/"+repo+"/mine:arm64", "-t", host+"/"+repo+"/multi:1")
	run(t, nil, nil, crane, "copy", "--insecure", host+"/"+repo+"/multi:1", other+"/crane/multi:1")
	run(t, nil, nil, crane, "copy", "--insecure", other+"/crane/multi:1", host+"/"+repo+"/multi2:1")
	all := append([]string{"copy", "--all"}, plain...)
	run(t, nil, nil, skopeo, append(all, "docker://"+host+"/"+repo+"/multi:1", "docker://"+other+"/skopeo/multi:1")...)
	run(t, nil, nil, skopeo, append(all, "docker://"+other+"/skopeo/multi:1", "docker://"+host+"/"+repo+"/multi3:1")...)
	var idx3 ocispec.Index
	if err := json.Unmarshal([]byte(run(t, nil, nil, crane, "manifest", "--insecure", host+"/"+repo+"/multi3:1")), &idx3); err != nil || len(idx3.Manifests) != 2 {
		t.Errorf("the index skopeo copied back = %+v (%v), want an index of 2", idx3, err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal([]byte(run(t, nil, nil, crane, "manifest", "--insecure", host+"/"+repo+"/multi2:1")), &idx); err != nil || len(idx.Manifests) != 2 {
		t.Errorf("the index copied back = %+v (%v), want an index of 2", idx, err)
	}
	if a, b := run(t, nil, nil, crane, "digest", "--insecure", host+"/"+repo+"/multi:1"), run(t, nil, nil, crane, "digest", "--insecure", host+"/"+repo+"/multi2:1"); a != b {
		t.Errorf("the index copied out and back is %s, not %s", b, a)
	}
	if id := strings.TrimSpace(strata(nil, "inspect", "--format", "{{.Architecture}}", repo+"/multi2:1")); id != "amd64" {
		t.Errorf("strata inspect of the index's tag shows architecture %q, want its linux/amd64 image", id)
	}

	// An artifact with a subject, found by the referrers API after crane
	// copied it out and back in.
	c := client{t: t, base: "http://" + host}
	subject := strings.TrimSpace(run(t, nil, nil, crane, "digest", "--insecure", mine))
	sbom := []byte(`{"sbom":"for mine"}`)
	emptyD := c.pushBlob(repo+"/mine", []byte("{}"))
	sbomD := c.pushBlob(repo+"/mine", sbom)
	art := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: "application/vnd.example.sbom",
		Config:  ocispec.Descriptor{MediaType: ocispec.MediaTypeEmptyJSON, Digest: emptyD, Size: 2},
		Layers:  []ocispec.Descriptor{{MediaType: "application/json", Digest: sbomD, Size: int64(len(sbom))}},
		Subject: &ocispec.Descriptor{MediaType: "application/vnd.docker.distribution.manifest.v2+json", Digest: digest.Digest(subject), Size: 1}}
	art.SchemaVersion = 2
	ab, _ := json.Marshal(art)
	artD := digest.FromBytes(ab)
	resp := c.do(http.MethodPut, "/v2/"+repo+"/mine/manifests/"+artD.String(), bytes.NewReader(ab), map[string]string{"Content-Type": ocispec.MediaTypeImageManifest})
	c.want(resp, http.StatusCreated)
	if resp.Header.Get("OCI-Subject") != subject {
		t.Errorf("OCI-Subject = %q, want %s", resp.Header.Get("OCI-Subject"), subject)
	}
	run(t, nil, nil, crane, "copy", "--insecure", host+"/"+repo+"/mine@"+artD.String(), other+"/copied/mine:sbom")
	run(t, nil, nil, crane, "copy", "--insecure", other+"/copied/mine:sbom", host+"/"+repo+"/mine2:sbom")
	run(t, nil, nil, crane, "copy", "--insecure", mine, host+"/"+repo+"/mine2:latest")
	for _, r := range []string{repo + "/mine", repo + "/mine2"} {
		var refs ocispec.Index
		body := c.want(c.do(http.MethodGet, "/v2/"+r+"/referrers/"+subject+"?artifactType=application/vnd.example.sbom", nil, nil), http.StatusOK)
		if err := json.Unmarshal(body, &refs); err != nil || len(refs.Manifests) != 1 || refs.Manifests[0].Digest != artD {
			t.Errorf("referrers of %s in %s = %s, want the sbom %s", subject, r, body, artD)
		}
	}
}
