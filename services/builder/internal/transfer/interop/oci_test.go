package interop

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/lib/harness"

	"github.com/strata-build/strata/services/builder/internal/archive"
)

// skopeo and umoci read the OCI archive Strata saves.
func TestOCIArchiveReadBySkopeoAndUmoci(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id := e.importBusybox(t, busyboxRootfs(t), "busybox:latest", `CMD ["/bin/sh", "-c", "echo from oci"]`, "ENV A=1")
	img, err := e.images.Get(ctx, id.String())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tarball := filepath.Join(dir, "oci.tar")
	var buf bytes.Buffer
	if err := e.archive.Save(ctx, []string{"busybox:latest"}, archive.FormatOCI, &buf); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tarball, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	skopeo := harness.Tool(t, "skopeo")
	var inspect struct {
		Digest string
		Env    []string
	}
	if err := json.Unmarshal([]byte(run(t, nil, skopeo, "inspect", "oci-archive:"+tarball+":latest")), &inspect); err != nil {
		t.Fatal(err)
	}
	if inspect.Digest != img.ManifestDescriptor().Digest.String() || !cmp.Equal(inspect.Env, []string{"A=1"}) {
		t.Errorf("skopeo inspect = %+v, want digest %s and env A=1", inspect, img.ManifestDescriptor().Digest)
	}
	// Copying checks every blob against its digest.
	run(t, nil, skopeo, "copy", "oci-archive:"+tarball+":latest", "dir:"+filepath.Join(dir, "copied"))

	layout := filepath.Join(dir, "layout")
	if err := os.MkdirAll(layout, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, nil, "tar", "-xf", tarball, "-C", layout)
	bundle := filepath.Join(dir, "bundle")
	run(t, nil, harness.Tool(t, "umoci"), "unpack", "--image", layout+":latest", bundle)
	if fi, err := os.Stat(filepath.Join(bundle, "rootfs", "bin", "busybox")); err != nil || fi.Mode()&0o111 == 0 {
		t.Errorf("umoci's bundle lacks an executable bin/busybox: %v", err)
	}
	var spec struct {
		Process struct{ Args []string }
	}
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	if want := []string{"/bin/sh", "-c", "echo from oci"}; !cmp.Equal(spec.Process.Args, want) {
		t.Errorf("umoci's runtime spec runs %q, want %q", spec.Process.Args, want)
	}
}

// An image skopeo wrote as an OCI layout archive loads into Strata, as the
// image skopeo describes (skopeo rewrites Docker's config as an OCI config,
// so the ID is the digest of skopeo's config, not Docker's).
func TestSkopeoOCIArchiveLoads(t *testing.T) {
	e := newEnv(t)
	name, _ := dockerImage(t, busyboxRootfs(t))
	dir := t.TempDir()
	saved := filepath.Join(dir, "docker.tar")
	docker(t, "save", "-o", saved, name)
	oci := filepath.Join(dir, "skopeo-oci.tar")
	run(t, nil, harness.Tool(t, "skopeo"), "copy", "docker-archive:"+saved, "oci-archive:"+oci+":strata-test/skopeo:1")
	var manifest struct {
		Config struct{ Digest digest.Digest }
	}
	if err := json.Unmarshal([]byte(run(t, nil, harness.Tool(t, "skopeo"), "inspect", "--raw", "oci-archive:"+oci+":strata-test/skopeo:1")), &manifest); err != nil {
		t.Fatal(err)
	}
	id := manifest.Config.Digest
	f, err := os.Open(oci)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	loaded, err := e.archive.Load(context.Background(), f, nil)
	if err != nil {
		t.Fatalf("Load(skopeo's OCI archive): %v", err)
	}
	if diff := cmp.Diff([]archive.LoadedImage{{ImageID: id, Tags: []string{"strata-test/skopeo:1"}}}, loaded); diff != "" {
		t.Errorf("Load (-want +got):\n%s", diff)
	}
}
