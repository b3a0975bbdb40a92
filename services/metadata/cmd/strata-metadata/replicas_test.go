package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2/client"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/harness"
	"github.com/strata-build/strata/services/metadata/internal/image/imagetest"
)

// TestSecondProcessOnSQLiteFile: a second metadata process on the SQLite
// file a first one serves stops at start, naming the file.
func TestSecondProcessOnSQLiteFile(t *testing.T) {
	blobs := startBlobstore(t)
	db := filepath.Join(t.TempDir(), "metadata.db")
	env := []string{"STRATA_SQLITE_PATH=" + db, "STRATA_BLOBSTORE_ADDR=" + blobs.addr}
	startMetadata(t, env...)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, harness.Binary(t, "strata-metadata"))
	cmd.Env = append(append(cmd.Environ(), env...), fmt.Sprintf("STRATA_LISTEN=127.0.0.1:%d", harness.FreePort(t)), "STRATA_GC_INTERVAL=0")
	out, err := cmd.CombinedOutput()
	if err == nil || ctx.Err() != nil {
		t.Fatalf("second strata-metadata on %s: err %v (context %v), want it to stop at start; output:\n%s", db, err, ctx.Err(), out)
	}
	if !strings.Contains(string(out), db) || !strings.Contains(string(out), "in use by another process") {
		t.Errorf("second strata-metadata's output does not say that %s is in use:\n%s", db, out)
	}
}

// TestPostgresFaults puts Toxiproxy between the metadata service and
// PostgreSQL: health is NOT_SERVING while PostgreSQL cannot be reached and
// SERVING after; a read through a short outage succeeds (it is retried); a
// connection cut at any point of a transaction recording an image and its
// tags leaves the whole image and its tags or nothing, and what fails
// fails UNAVAILABLE.
func TestPostgresFaults(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	pg := harness.StartPostgres(t)
	tp := harness.StartToxiproxy(t)
	proxy := tp.Proxy(t, "postgres", fmt.Sprintf("127.0.0.1:%d", pg.Port))
	blobs := startBlobstore(t)
	dsn := strings.Replace(pg.DSN, fmt.Sprintf("127.0.0.1:%d", pg.Port), proxy.Listen, 1)
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	harness.Start(t, []string{"STRATA_LISTEN=" + addr, "STRATA_GC_INTERVAL=0", "STRATA_STORE=postgres", "STRATA_POSTGRES_DSN=" + dsn,
		"STRATA_BLOBSTORE_ADDR=" + blobs.addr, "STRATA_HEALTH_PROBE_INTERVAL=100ms"}, harness.Binary(t, "strata-metadata"))
	harness.WaitServing(t, addr)
	conn := dial(t, addr)
	images, health := metadatav1.NewImageServiceClient(conn), healthpb.NewHealthClient(conn)

	seed := imagetest.Make(t, imagetest.Step{LayerSize: 10})
	blobs.upload(t, seed)
	if _, err := images.PutImage(ctx, &metadatav1.PutImageRequest{Image: seed, Tags: []string{"seed"}}); err != nil {
		t.Fatal(err)
	}

	// PostgreSQL unreachable: NOT_SERVING, calls UNAVAILABLE; back: SERVING.
	if err := proxy.Disable(); err != nil {
		t.Fatal(err)
	}
	waitHealth(t, health, healthpb.HealthCheckResponse_NOT_SERVING)
	if _, err := images.GetImage(ctx, &metadatav1.GetImageRequest{Reference: "seed"}); !errdefs.IsUnavailable(err) {
		t.Errorf("GetImage with PostgreSQL down = %v, want UNAVAILABLE", err)
	}
	if err := proxy.Enable(); err != nil {
		t.Fatal(err)
	}
	waitHealth(t, health, healthpb.HealthCheckResponse_SERVING)

	// A short outage: the read is tried again and succeeds.
	if err := proxy.Disable(); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		_, err := images.GetImage(ctx, &metadatav1.GetImageRequest{Reference: "seed"})
		got <- err
	}()
	time.Sleep(150 * time.Millisecond) // the outage itself, not a wait for readiness
	if err := proxy.Enable(); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Errorf("GetImage through a 150 ms outage = %v, want it retried and answered", err)
	}

	// Connections cut after so many bytes from PostgreSQL, at points all
	// through PutImage's transaction.
	outcomes := map[string]int{}
	for i, limit := range []int64{0, 40, 120, 250, 400, 600, 900, 1300, 2000, 4000} {
		img := imagetest.Make(t, imagetest.Step{LayerSize: int64(100 + i)})
		blobs.upload(t, img)
		tags := []string{fmt.Sprintf("cut%d:a", i), fmt.Sprintf("cut%d:b", i), fmt.Sprintf("team/cut%d:c", i)}
		if _, err := proxy.AddToxic("cut", "limit_data", "downstream", 1, toxiproxy.Attributes{"bytes": limit}); err != nil {
			t.Fatal(err)
		}
		_, err := images.PutImage(ctx, &metadatav1.PutImageRequest{Image: img, Tags: tags, Action: metadatav1.EventAction_EVENT_ACTION_IMPORT})
		if err := proxy.RemoveToxic("cut"); err != nil {
			t.Fatal(err)
		}
		switch {
		case err == nil:
			outcomes["recorded"]++
		case errdefs.IsUnavailable(err):
			outcomes["unavailable"]++
		default:
			t.Errorf("PutImage with the connection cut after %d bytes = %v, want success or UNAVAILABLE", limit, err)
		}
		// Read back through a healthy connection: all or nothing.
		var rec *metadatav1.Image
		harness.WaitFor(t, "the image read back", 20*time.Second, func(ctx context.Context) error {
			r, err := images.GetImage(ctx, &metadatav1.GetImageRequest{Reference: img.GetId()})
			if errdefs.IsNotFound(err) {
				rec = nil
				return nil
			}
			rec = r.GetImage()
			return err
		})
		for _, tag := range tags {
			r, terr := images.GetImage(ctx, &metadatav1.GetImageRequest{Reference: tag})
			switch {
			case rec == nil && !errdefs.IsNotFound(terr):
				t.Errorf("cut after %d bytes: image %s not recorded, but tag %s = %v, %v", limit, img.GetId(), tag, r, terr)
			case rec != nil && (terr != nil || r.GetImage().GetId() != img.GetId()):
				t.Errorf("cut after %d bytes: image %s recorded, but tag %s = %v, %v", limit, img.GetId(), tag, r, terr)
			}
		}
		if err == nil && rec == nil {
			t.Errorf("cut after %d bytes: PutImage succeeded but the image is not recorded", limit)
		}
	}
	t.Logf("outcomes of PutImage with the connection cut: %v", outcomes)
	if outcomes["unavailable"] == 0 {
		t.Error("no cut made PutImage fail: the byte limits missed the transaction")
	}
}

func waitHealth(t *testing.T, h healthpb.HealthClient, want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	harness.WaitFor(t, "health "+want.String(), 30*time.Second, func(ctx context.Context) error {
		resp, err := h.Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		if resp.GetStatus() != want {
			return fmt.Errorf("health is %v", resp.GetStatus())
		}
		return nil
	})
}
