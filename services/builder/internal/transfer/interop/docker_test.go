package interop

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/services/builder/internal/archive"
	"github.com/strata-build/strata/services/builder/internal/transfer"
)

// dockerImage builds, with the machine's Docker Engine, an image on a
// busybox base made by `docker import`, and returns its name and ID; the
// images are removed when the test ends.
func dockerImage(t *testing.T, rootfs string) (name string, id digest.Digest) {
	t.Helper()
	tag := uniqueTag(t)
	base := "strata-interop-base:" + tag
	name = "strata-interop-app:" + tag
	docker(t, "import", rootfs, base)
	t.Cleanup(func() { _ = runQuiet("docker", "rmi", "-f", name, base) })
	dir := t.TempDir()
	df := "FROM " + base + "\nENV GREETING=hello\nRUN echo \"$GREETING from a RUN step\" > /hello.txt && mkdir -p /data\nWORKDIR /data\nCMD [\"cat\", \"/hello.txt\"]\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, nil, "env", "DOCKER_BUILDKIT=0", dockerCLI(t), "build", "-q", "-t", name, dir)
	id = digest.Digest(strings.TrimSpace(docker(t, "image", "inspect", "--format", "{{.Id}}", name)))
	return name, id
}

// Docker → Strata → Docker: an image `docker save` wrote loads into Strata
// with its ID and tag; Strata's save loads back into Docker, and the
// container prints what the original printed.
func TestDockerSaveLoadRun(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	name, id := dockerImage(t, busyboxRootfs(t))
	want := docker(t, "run", "--rm", name)
	if want != "hello from a RUN step\n" {
		t.Fatalf("the original prints %q", want)
	}

	tarball := filepath.Join(t.TempDir(), "docker-save.tar")
	docker(t, "save", "-o", tarball, name)
	f, err := os.Open(tarball)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var updates []transfer.Update
	loaded, err := e.archive.Load(ctx, f, func(u transfer.Update) { updates = append(updates, u) })
	if err != nil {
		t.Fatalf("Load(docker save output): %v", err)
	}
	if diff := cmp.Diff([]archive.LoadedImage{{ImageID: id, Tags: []string{name}}}, loaded); diff != "" {
		t.Fatalf("Load (-want +got):\n%s", diff)
	}
	img, err := e.images.Get(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	// Docker counts the same size for the image.
	if dockerSize := strings.TrimSpace(docker(t, "image", "inspect", "--format", "{{.Size}}", name)); dockerSize != itoa(img.Record.GetSize()) {
		t.Errorf("size = %d, Docker says %s", img.Record.GetSize(), dockerSize)
	}
	if len(updates) == 0 {
		t.Errorf("Load reported no progress")
	}

	var saved bytes.Buffer
	if err := e.archive.Save(ctx, []string{name}, archive.FormatDocker, &saved); err != nil {
		t.Fatalf("Save: %v", err)
	}
	docker(t, "rmi", name)
	run(t, bytes.NewReader(saved.Bytes()), dockerCLI(t), "load")
	if got := strings.TrimSpace(docker(t, "image", "inspect", "--format", "{{.Id}}", name)); got != id.String() {
		t.Errorf("after docker load of Strata's archive, %s is %s, want %s", name, got, id)
	}
	if got := docker(t, "run", "--rm", name); got != want {
		t.Errorf("the container from Strata's archive prints %q, the original %q", got, want)
	}
}

// An image imported into Strata, saved, loads into Docker and runs.
func TestStrataImportRunsInDocker(t *testing.T) {
	e := newEnv(t)
	name := "strata-interop-imported:" + uniqueTag(t)
	e.importBusybox(t, busyboxRootfs(t), name, `CMD ["/bin/sh", "-c", "echo imported by strata"]`)
	var saved bytes.Buffer
	if err := e.archive.Save(context.Background(), []string{name}, archive.FormatDocker, &saved); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = runQuiet("docker", "rmi", "-f", name) })
	run(t, bytes.NewReader(saved.Bytes()), dockerCLI(t), "load")
	if got := docker(t, "run", "--rm", name); got != "imported by strata\n" {
		t.Errorf("docker run %s prints %q", name, got)
	}
}

// One `docker save` archive with several images and tags loads whole.
func TestDockerSaveSeveralImages(t *testing.T) {
	e := newEnv(t)
	rootfs := busyboxRootfs(t)
	app, appID := dockerImage(t, rootfs)
	other := "strata-interop-other:" + uniqueTag(t)
	docker(t, "tag", app, other)
	base := strings.Replace(app, "strata-interop-app", "strata-interop-base", 1)
	baseID := digest.Digest(strings.TrimSpace(docker(t, "image", "inspect", "--format", "{{.Id}}", base)))
	t.Cleanup(func() { _ = runQuiet("docker", "rmi", other) })
	tarball := filepath.Join(t.TempDir(), "several.tar")
	docker(t, "save", "-o", tarball, app, other, base)
	f, err := os.Open(tarball)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	loaded, err := e.archive.Load(context.Background(), f, nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	got := map[digest.Digest][]string{}
	for _, l := range loaded {
		got[l.ImageID] = append(got[l.ImageID], l.Tags...)
	}
	for _, tags := range got {
		sort.Strings(tags)
	}
	want := map[digest.Digest][]string{appID: {app, other}, baseID: {base}}
	for _, tags := range want {
		sort.Strings(tags)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Load (-want +got):\n%s", diff)
	}
	for id := range want {
		if _, err := e.images.Get(context.Background(), id.String()); err != nil {
			t.Errorf("image %s: %v", id, err)
		}
	}
}
