package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/grpcclient"
	"github.com/strata-build/strata/lib/harness"
	"github.com/strata-build/strata/services/metadata/internal/image/imagetest"
)

// BenchmarkReplicasGetImage measures GetImage requests per second through
// one and through two metadata processes on one PostgreSQL, the client
// spreading its calls over them (a list target: round robin to the healthy
// replicas), 16 calls in flight, 3 s per run, 5 runs each, reporting the
// median and the ratio. On this 2-core machine the figure shows what a
// second replica costs or gains on the same cores, not a cluster's
// speed-up. Run with -benchtime 1x (make bench-scale).
func BenchmarkReplicasGetImage(b *testing.B) {
	const (
		inFlight = 16
		runFor   = 3 * time.Second
		runs     = 5
		images   = 200
	)
	ctx := context.Background()
	pg := harness.StartPostgres(b)
	blobs := startBlobstore(b)
	env := []string{"STRATA_STORE=postgres", "STRATA_POSTGRES_DSN=" + pg.DSN, "STRATA_BLOBSTORE_ADDR=" + blobs.addr, "STRATA_LOG_LEVEL=warn"}
	var addrs []string
	for range 2 {
		addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(b))
		harness.Start(b, append([]string{"STRATA_LISTEN=" + addr, "STRATA_GC_INTERVAL=0"}, env...), harness.Binary(b, "strata-metadata"))
		harness.WaitServing(b, addr)
		addrs = append(addrs, addr)
	}
	seed, err := grpcclient.Dial(addrs[0], grpcclient.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer seed.Close()
	var refs []string
	for i := range images {
		img := imagetest.Make(b, imagetest.Step{LayerSize: int64(i + 1)})
		blobs.upload(b, img)
		tag := fmt.Sprintf("bench/app:%d", i)
		if _, err := metadatav1.NewImageServiceClient(seed).PutImage(ctx, &metadatav1.PutImageRequest{Image: img, Tags: []string{tag}}); err != nil {
			b.Fatal(err)
		}
		refs = append(refs, tag)
	}
	median := map[int]float64{}
	for _, replicas := range []int{1, 2} {
		target := strings.Join(addrs[:replicas], ",")
		conn, err := grpcclient.Dial(target, grpcclient.Config{})
		if err != nil {
			b.Fatal(err)
		}
		client := metadatav1.NewImageServiceClient(conn)
		var rates []float64
		for range runs {
			var done atomic.Int64
			var wg sync.WaitGroup
			stop := time.Now().Add(runFor)
			start := time.Now()
			for w := range inFlight {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := w; time.Now().Before(stop); i += inFlight {
						if _, err := client.GetImage(ctx, &metadatav1.GetImageRequest{Reference: refs[i%len(refs)]}); err != nil {
							b.Error(err)
							return
						}
						done.Add(1)
					}
				}()
			}
			wg.Wait()
			rates = append(rates, float64(done.Load())/time.Since(start).Seconds())
		}
		conn.Close()
		sort.Float64s(rates)
		median[replicas] = rates[len(rates)/2]
		b.Logf("%d replica(s): GetImage/s median %.0f (runs %.0f)", replicas, median[replicas], rates)
	}
	b.ReportMetric(median[1], "getimage/s-1-replica")
	b.ReportMetric(median[2], "getimage/s-2-replicas")
	b.ReportMetric(median[2]/median[1], "ratio-2/1")
}
