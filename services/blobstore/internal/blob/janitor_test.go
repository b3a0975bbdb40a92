package blob_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/harness"
	"github.com/strata-build/strata/services/blobstore/internal/blob"
	"github.com/strata-build/strata/services/blobstore/internal/fsblob"
)

// TestJanitor checks that the janitor discards an abandoned upload on its
// own, and stops with its context.
func TestJanitor(t *testing.T) {
	s, err := fsblob.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	w, err := s.NewWriter(ctx, blob.WriterOptions{Ref: "abandoned", Expected: digest.FromString("xy"), Size: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	w.Close()

	jctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		blob.RunJanitor(jctx, s, time.Nanosecond, 10*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	harness.WaitFor(t, "the janitor", 10*time.Second, func(ctx context.Context) error {
		u, err := s.Upload(ctx, "abandoned")
		if errdefs.IsNotFound(err) {
			return nil
		}
		if err == nil {
			return fmt.Errorf("upload still there at offset %d", u.Offset)
		}
		return err
	})
	stop()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("RunJanitor did not return after its context ended")
	}
}
