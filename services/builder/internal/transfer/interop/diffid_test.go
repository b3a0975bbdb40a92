package interop

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/harness"
	"github.com/strata-build/strata/services/builder/internal/transfer"
)

// A registry serving an image whose config lies about a layer's diff ID
// (rootfs.diff_ids names other content than the layer holds) gets the pull
// refused, naming that layer, with nothing recorded: no image exists that a
// build could start FROM or a save could write out. It is so whether the
// layer's bytes come from the registry or are in the blob store already
// from an honest image sharing the layer.
func TestPullRefusesLyingDiffID(t *testing.T) {
	ctx := context.Background()
	reg := harness.StartRegistry(t)
	honest, err := random.Image(4096, 2)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := honest.Layers()
	if err != nil {
		t.Fatal(err)
	}
	lied, err := layers[1].Digest()
	if err != nil {
		t.Fatal(err)
	}
	cf, err := honest.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	// The first layer's diff ID for the second's: content that exists, in
	// another place.
	cf.RootFS.DiffIDs[1] = cf.RootFS.DiffIDs[0]
	lying, err := mutate.ConfigFile(honest, cf)
	if err != nil {
		t.Fatal(err)
	}
	writeImage(t, reg+"/diffid/honest:1", honest)
	writeImage(t, reg+"/diffid/lying:1", lying)

	refused := func(t *testing.T, e *env) {
		t.Helper()
		_, err := e.svc.Pull(ctx, reg+"/diffid/lying:1", transfer.PullOptions{}, nil)
		var de *errdefs.Error
		if !errdefs.IsInvalidArgument(err) || !errors.As(err, &de) || de.Reason() != "DIFF_ID_MISMATCH" ||
			!strings.Contains(err.Error(), "layer "+lied.String()) {
			t.Fatalf("Pull(lying config) = %v, want INVALID_ARGUMENT DIFF_ID_MISMATCH naming layer %s", err, lied)
		}
		if _, err := e.images.Get(ctx, reg+"/diffid/lying:1"); !errdefs.IsNotFound(err) {
			t.Errorf("after the refused pull, the image lookup = %v, want NOT_FOUND", err)
		}
	}
	t.Run("layer from the registry", func(t *testing.T) {
		e := newEnv(t)
		refused(t, e)
		if n := e.imageCount(t); n != 0 {
			t.Errorf("%d images recorded, want none", n)
		}
	})
	t.Run("layer stored already", func(t *testing.T) {
		e := newEnv(t)
		if _, err := e.svc.Pull(ctx, reg+"/diffid/honest:1", transfer.PullOptions{}, nil); err != nil {
			t.Fatal(err)
		}
		refused(t, e)
		if n := e.imageCount(t); n != 1 {
			t.Errorf("%d images recorded, want only the honest one", n)
		}
	})
}

// writeImage pushes img to ref with go-containerregistry, as it is.
func writeImage(t *testing.T, ref string, img v1.Image) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
}
