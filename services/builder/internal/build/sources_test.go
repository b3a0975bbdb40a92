package build

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/services/builder/internal/exec"
)

// gatedBlobs holds the first opening of each gated blob until every gated
// blob is being opened, or wait has passed: a build that unpacks them one
// after another fails, naming the blob that was opened alone.
type gatedBlobs struct {
	exec.Blobs
	wait time.Duration

	mu   sync.Mutex
	gate map[digest.Digest]bool // true once opened
	left int
	all  chan struct{}
}

func newGatedBlobs(b exec.Blobs, wait time.Duration, gated ...digest.Digest) *gatedBlobs {
	g := &gatedBlobs{Blobs: b, wait: wait, gate: map[digest.Digest]bool{}, left: len(gated), all: make(chan struct{})}
	for _, d := range gated {
		g.gate[d] = false
	}
	return g
}

func (g *gatedBlobs) Open(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
	g.mu.Lock()
	opened, gated := g.gate[d]
	if gated && !opened {
		g.gate[d] = true
		if g.left--; g.left == 0 {
			close(g.all)
		}
	}
	g.mu.Unlock()
	if gated && !opened {
		select {
		case <-g.all:
		case <-time.After(g.wait):
			return nil, fmt.Errorf("blob %s was opened alone: the other sources were not being prepared", d)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return g.Blobs.Open(ctx, d)
}

// The images two COPY --from of one stage read are unpacked at the same
// time, not each when its step comes, at most --parallel-stages at a
// time; the image is the one a build that unpacks them one after another
// makes.
func TestCopyFromSourcesArePreparedAtOnce(t *testing.T) {
	const df = "FROM busybox:latest\nCOPY --from=srca:1 /a /a\nCOPY --from=srcb:1 /b /b\n"
	// build builds df in a new env, whose snapshots have none of the
	// sources' layers, the blobs of their layers gated to wait (none when
	// wait is 0).
	build := func(wait time.Duration, parallel int) ([]digest.Digest, error) {
		e := newEnv(t)
		e.importBase("busybox:latest", busyboxLike())
		e.importBase("srca:1", []tarFile{{name: "a", body: "from a\n", mode: 0o644}})
		e.importBase("srcb:1", []tarFile{{name: "b", body: "from b\n", mode: 0o644}})
		var blobs exec.Blobs = e.blobs
		if wait > 0 {
			var gated []digest.Digest
			for _, ref := range []string{"srca:1", "srcb:1"} {
				img, err := e.images.Get(context.Background(), ref)
				if err != nil {
					t.Fatal(err)
				}
				gated = append(gated, img.Layers()[0].Blob.Digest)
			}
			blobs = newGatedBlobs(e.blobs, wait, gated...)
		}
		e.b.Snapshots, e.b.ParallelStages = exec.SnapshotStore(e.snaps, blobs), parallel
		res, _, err := e.build(df, nil)
		if err != nil {
			return nil, err
		}
		return e.image(res.ImageID).Config.RootFS.DiffIDs, nil
	}

	// One at a time, the first source's blob is opened alone.
	if _, err := build(time.Second, 1); err == nil || !strings.Contains(err.Error(), "opened alone") {
		t.Errorf("build with --parallel-stages 1 = %v, want the sources unpacked one at a time", err)
	}
	parallel, err := build(30*time.Second, 0)
	if err != nil {
		t.Fatalf("build: %v (the sources were not unpacked at the same time)", err)
	}
	sequential, err := build(0, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(parallel, sequential) || len(parallel) != 3 {
		t.Errorf("layers %v with the sources unpacked at once, %v one after another", parallel, sequential)
	}
}
