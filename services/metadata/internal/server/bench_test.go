package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/harness"
	"github.com/strata-build/strata/lib/reference"
	"github.com/strata-build/strata/services/metadata/internal/image"
	"github.com/strata-build/strata/services/metadata/internal/image/imagetest"
	"github.com/strata-build/strata/services/metadata/internal/sqlstore"
)

// cpuTime returns the CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkImageService measures GetImage, TagImage and ListImages (a page of
// 100) through the gRPC API over loopback, at a fixed concurrency, with
// 100,000 images recorded, on SQLite and on PostgreSQL. It reports
// throughput and p50/p99 latency. STRATA_BENCH_IMAGES,
// STRATA_BENCH_CONCURRENCY and STRATA_BENCH_SECONDS change the defaults
// (100000, 8, 3). Run with -benchtime 1x: each figure comes from a timed
// run of its own, not from b.N.
func BenchmarkImageService(b *testing.B) {
	n := envInt("STRATA_BENCH_IMAGES", 100000)
	conc := envInt("STRATA_BENCH_CONCURRENCY", 8)
	dur := time.Duration(envInt("STRATA_BENCH_SECONDS", 3)) * time.Second
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()
	backends := []struct {
		name string
		open func(b *testing.B) *sqlstore.DB
	}{
		{"sqlite", func(b *testing.B) *sqlstore.DB {
			db, err := sqlstore.OpenSQLite(ctx, filepath.Join(b.TempDir(), "metadata.db"), log)
			if err != nil {
				b.Fatal(err)
			}
			return db
		}},
		{"postgres", func(b *testing.B) *sqlstore.DB {
			pg := harness.StartPostgres(b)
			db, err := sqlstore.OpenPostgres(ctx, pg.DSN, log)
			if err != nil {
				b.Fatal(err)
			}
			return db
		}},
	}
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			db := be.open(b)
			b.Cleanup(func() { db.Close() })
			start := time.Now()
			ids := populate(b, db, n)
			b.Logf("%s: recorded %d images in %v", be.name, n, time.Since(start).Round(time.Millisecond))
			client := serve(b, image.New(db, image.Options{}), allBlobs{})

			b.Run("GetImage", func(b *testing.B) {
				measure(b, conc, dur, func(_ int, r *rand.Rand) error {
					_, err := client.GetImage(ctx, &metadatav1.GetImageRequest{Reference: fmt.Sprintf("bench/app:%d", r.IntN(n))})
					return err
				})
			})
			b.Run("TagImage", func(b *testing.B) {
				measure(b, conc, dur, func(_ int, r *rand.Rand) error {
					_, err := client.TagImage(ctx, &metadatav1.TagImageRequest{Source: ids[r.IntN(n)], Target: fmt.Sprintf("bench/moving:%d", r.IntN(100))})
					return err
				})
			})
			b.Run("ListImages", func(b *testing.B) {
				// Each worker pages through all images, 100 at a time.
				tokens := make([]string, conc)
				measure(b, conc, dur, func(w int, _ *rand.Rand) error {
					r, err := client.ListImages(ctx, &metadatav1.ListImagesRequest{PageSize: 100, PageToken: tokens[w]})
					if err != nil {
						return err
					}
					if len(r.GetImages()) != 100 && r.GetNextPageToken() != "" {
						return fmt.Errorf("a page of %d images", len(r.GetImages()))
					}
					tokens[w] = r.GetNextPageToken()
					return nil
				})
			})
		})
	}
}

// populate records n images tagged bench/app:<i>, a thousand per
// transaction, and returns their IDs.
func populate(b *testing.B, db *sqlstore.DB, n int) []string {
	b.Helper()
	ctx := context.Background()
	ids := make([]string, 0, n)
	const batch = 1000
	for i := 0; i < n; i += batch {
		var rows []image.NewImage
		for j := i; j < min(i+batch, n); j++ {
			row, err := image.Prepare(imagetest.Make(b, imagetest.Step{LayerSize: int64(j%5000 + 1), CreatedBy: "/bin/sh -c #(nop)  ENV N=" + strconv.Itoa(j)}), time.Now())
			if err != nil {
				b.Fatal(err)
			}
			rows = append(rows, row)
		}
		err := db.Update(ctx, func(tx image.Tx) error {
			for k, row := range rows {
				if _, err := tx.InsertImage(ctx, row); err != nil {
					return err
				}
				ref, err := reference.ParseTag(fmt.Sprintf("bench/app:%d", i+k))
				if err != nil {
					return err
				}
				if _, err := tx.SetRef(ctx, image.Ref{Name: ref.String(), Familiar: ref.Familiar(), ImageID: row.Image.GetId(), IsTag: true}, time.Now()); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		for _, row := range rows {
			ids = append(ids, row.Image.GetId())
		}
	}
	return ids
}

// measure runs op from conc workers for dur after a short warm-up and
// reports throughput and latency percentiles.
func measure(b *testing.B, conc int, dur time.Duration, op func(worker int, r *rand.Rand) error) {
	b.Helper()
	run := func(d time.Duration) ([]time.Duration, time.Duration) {
		var mu sync.Mutex
		var all []time.Duration
		var wg sync.WaitGroup
		var failed error
		start := time.Now()
		deadline := start.Add(d)
		for w := 0; w < conc; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(w), uint64(start.UnixNano())))
				var lat []time.Duration
				for time.Now().Before(deadline) {
					t0 := time.Now()
					if err := op(w, r); err != nil {
						mu.Lock()
						failed = err
						mu.Unlock()
						return
					}
					lat = append(lat, time.Since(t0))
				}
				mu.Lock()
				all = append(all, lat...)
				mu.Unlock()
			}(w)
		}
		wg.Wait()
		if failed != nil {
			b.Fatal(failed)
		}
		return all, time.Since(start)
	}
	run(dur / 6)
	cpu0 := cpuTime()
	lat, elapsed := run(dur)
	cpu := cpuTime() - cpu0
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 {
		return float64(lat[int(float64(len(lat)-1)*p)].Microseconds()) / 1000
	}
	opsPerSec := float64(len(lat)) / elapsed.Seconds()
	b.ReportMetric(opsPerSec, "ops/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	// CPU per call (client and server, both in this process; PostgreSQL's
	// own work is not counted) tells what the machine can do when it is not
	// shared: about GOMAXPROCS seconds of CPU per second.
	cpuPerOp := float64(cpu.Microseconds()) / float64(len(lat))
	b.ReportMetric(cpuPerOp, "cpu-µs/op")
	b.ReportMetric(0, "ns/op")
	b.Logf("%d calls from %d workers in %v: %.0f/s, p50 %.2f ms, p99 %.2f ms, %.0f µs of CPU per call", len(lat), conc, elapsed.Round(time.Millisecond), opsPerSec, pct(0.5), pct(0.99), cpuPerOp)
}
