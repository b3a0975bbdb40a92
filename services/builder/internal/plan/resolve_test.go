package plan

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/strata-build/strata/services/builder/internal/dockerfile"
	"github.com/strata-build/strata/services/builder/internal/image"
)

// gatedImages resolves its images only once every one of them is being
// resolved, or wait has passed: resolving them one after another fails.
type gatedImages struct {
	images baseImages
	wait   time.Duration

	mu    sync.Mutex
	asked []string
	all   chan struct{}
}

func (g *gatedImages) Resolve(ctx context.Context, ref string) (*image.Image, error) {
	g.mu.Lock()
	if !slices.Contains(g.asked, ref) {
		if g.asked = append(g.asked, ref); len(g.asked) == len(g.images) {
			close(g.all)
		}
	}
	g.mu.Unlock()
	select {
	case <-g.all:
	case <-time.After(g.wait):
		return nil, fmt.Errorf("image %s was resolved alone", ref)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.images.Resolve(ctx, ref)
}

// The images a build names (FROM, COPY --from, RUN --mount from=) are
// resolved, and pulled when not held, at the same time rather than each
// when planning reaches it, at most Input.Parallel at a time; the plan is
// the one resolving them in turn makes.
func TestImagesAreResolvedAtOnce(t *testing.T) {
	const src = `ARG SRC=srcb
FROM busybox AS build
RUN --mount=from=tools,target=/t true
FROM scratch
COPY --from=build /bin /bin
COPY --from=srca /a /a
COPY --from=${SRC} /b /b
`
	df, err := dockerfile.Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	images := baseImages{"busybox": busybox(), "srca": busybox(), "srcb": busybox(), "tools": busybox()}
	args := dockerfile.NewBuildArgs(nil)
	if err := df.DeclareMetaArgs(args, ""); err != nil {
		t.Fatal(err)
	}
	if got, want := df.Images([]int{0, 1}, args), []string{"busybox", "tools", "srca", "srcb"}; !slices.Equal(got, want) {
		t.Errorf("Images = %q, want %q", got, want)
	}
	plan := func(imgs Images, parallel int) (*Plan, error) {
		df, err := dockerfile.Parse([]byte(src))
		if err != nil {
			t.Fatal(err)
		}
		return Make(context.Background(), Input{Dockerfile: df, MaxConfigBytes: 1 << 20, Images: imgs, Parallel: parallel})
	}
	if _, err := plan(&gatedImages{images: images, wait: time.Second, all: make(chan struct{})}, 1); err == nil {
		t.Error("Make with Parallel 1 resolved the images at once")
	}
	at, err := plan(&gatedImages{images: images, wait: 30 * time.Second, all: make(chan struct{})}, 4)
	if err != nil {
		t.Fatalf("Make: %v (the images were not resolved at once)", err)
	}
	inTurn, err := plan(images, 1)
	if err != nil {
		t.Fatal(err)
	}
	if at.Stages[1].LastKey() != inTurn.Stages[1].LastKey() {
		t.Errorf("the plan's last key is %s resolving at once, %s in turn", at.Stages[1].LastKey(), inTurn.Stages[1].LastKey())
	}
}
