package build

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/strata-build/strata/services/builder/internal/image"
	"github.com/strata-build/strata/services/builder/internal/layer/layertest"
	"github.com/strata-build/strata/services/builder/internal/snapshot"
)

// imageTree lists what an image holds: its layers unpacked from their
// blobs by a snapshot store of their own (not the build's, which kept the
// steps' directories), seen through overlay.
func (e *env) imageTree(img *image.Image) layertest.Tree {
	t := e.t
	t.Helper()
	snaps, err := snapshot.New(filepath.Join(t.TempDir(), "snapshots"), snapshot.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := SnapshotStore(snaps, e.blobs).Mount(context.Background(), img.Layers(), MountOptions{})
	if err != nil {
		t.Fatalf("mounting the image: %v", err)
	}
	defer m.Release()
	tree, err := layertest.ReadTree(m.Root())
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

// A symlink of the base image that leads where nothing exists yet: COPY
// and WORKDIR through it make the directories it leads to, inside the
// root, as Docker does (they failed with the builder's own mkdir error).
func TestCopyThroughDanglingSymlink(t *testing.T) {
	e := newEnv(t)
	e.importBase("dangling:latest", append(busyboxLike(),
		tarFile{name: "app", link: "/srv/new/dir", mode: 0o777},
		tarFile{name: "up", link: "../../../../opt/deep", mode: 0o777}))
	res, _ := e.mustBuild("FROM dangling\nCOPY f /app/x\nCOPY f /up/y\nWORKDIR /up/w\n", e.context([]ctxFile{{path: "f", body: "f"}}))
	for _, err := range e.imageTree(e.image(res.ImageID)).Verify([]layertest.Check{
		layertest.IsSymlink("app", "/srv/new/dir"), layertest.IsFile("srv/new/dir/x", "f"),
		layertest.IsFile("opt/deep/y", "f"), layertest.IsDir("opt/deep/w"),
	}) {
		t.Error(err)
	}
}
