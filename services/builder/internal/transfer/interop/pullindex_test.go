package interop

import (
	"context"
	"net/http"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/harness"
	"github.com/strata-build/strata/services/builder/internal/transfer"
)

// withArch is img as an image of linux/arch (its layers unchanged).
func withArch(t *testing.T, img v1.Image, arch string) v1.Image {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	out, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func platformEntry(img v1.Image, arch string) mutate.IndexAddendum {
	return mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}}
}

func writeIndex(t *testing.T, ref string, idx v1.ImageIndex) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatal(err)
	}
}

// Pulling an index whole fetches a layer its platforms share once; an
// index in an index is refused; and a platform that cannot be fetched
// fails the pull with nothing recorded, neither the other platform's image
// nor the index.
func TestPullAllPlatformsEdges(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	reg := harness.StartRegistry(t)

	base, err := random.Image(4096, 1)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := base.Layers()
	if err != nil {
		t.Fatal(err)
	}
	layerSize, err := layers[0].Size()
	if err != nil {
		t.Fatal(err)
	}
	shared := mutate.AppendManifests(empty.Index, platformEntry(withArch(t, base, "amd64"), "amd64"), platformEntry(withArch(t, base, "arm64"), "arm64"))
	writeIndex(t, reg+"/shared:1", shared)
	res, err := e.svc.Pull(ctx, reg+"/shared:1", transfer.PullOptions{AllPlatforms: true}, nil)
	if err != nil {
		t.Fatalf("Pull --all-platforms: %v", err)
	}
	if len(res.Platforms) != 2 || res.BytesFetched != layerSize || res.ImageID != res.Platforms[0].ImageID {
		t.Errorf("Pull --all-platforms = %+v, want two platforms, the amd64 image named and the shared layer's %d bytes fetched once", res, layerSize)
	}
	if n := e.imageCount(t); n != 2 {
		t.Errorf("after pulling a two-platform index whole, %d images are recorded, want 2", n)
	}

	nested := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: shared})
	writeIndex(t, reg+"/nested:1", nested)
	if _, err := e.svc.Pull(ctx, reg+"/nested:1", transfer.PullOptions{AllPlatforms: true}, nil); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Pull --all-platforms of an index in an index: %v, want INVALID_ARGUMENT", err)
	}

	amd64, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	arm64, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	broken := mutate.AppendManifests(empty.Index, platformEntry(withArch(t, amd64, "amd64"), "amd64"), platformEntry(withArch(t, arm64, "arm64"), "arm64"))
	writeIndex(t, reg+"/broken:1", broken)
	armLayers, err := arm64.Layers()
	if err != nil {
		t.Fatal(err)
	}
	gone, err := armLayers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodDelete, "http://"+reg+"/v2/broken/blobs/"+gone.String(), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("deleting %s from the registry: %v %v", gone, err, resp)
	}
	resp.Body.Close()
	if _, err := e.svc.Pull(ctx, reg+"/broken:1", transfer.PullOptions{AllPlatforms: true}, nil); err == nil {
		t.Fatal("Pull --all-platforms of an index whose arm64 layer is gone succeeded")
	}
	if n := e.imageCount(t); n != 2 {
		t.Errorf("a failed pull --all-platforms left %d images, want the 2 of before", n)
	}
	if _, err := e.meta.GetManifest(ctx, &metadatav1.GetManifestRequest{Repository: reg + "/broken", Reference: "1"}); !errdefs.IsNotFound(err) {
		t.Errorf("GetManifest of the tag a failed pull would have set: %v, want NOT_FOUND", err)
	}
}
