package server

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", for VACUUM

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
		// open returns the store and, for a database server, a function
		// returning the CPU time the server has used and one that settles
		// the server after the images are recorded.
		open func(b *testing.B) (db *sqlstore.DB, serverCPU func() time.Duration, settle func())
	}{
		{"sqlite", func(b *testing.B) (*sqlstore.DB, func() time.Duration, func()) {
			db, err := sqlstore.OpenSQLite(ctx, filepath.Join(b.TempDir(), "metadata.db"), log)
			if err != nil {
				b.Fatal(err)
			}
			return db, nil, func() {}
		}},
		{"postgres", func(b *testing.B) (*sqlstore.DB, func() time.Duration, func()) {
			pg := harness.StartPostgres(b)
			db, err := sqlstore.OpenPostgres(ctx, pg.DSN, log)
			if err != nil {
				b.Fatal(err)
			}
			// What autovacuum does soon after a bulk load, done before the
			// measurements rather than during one of them: statistics, and
			// the visibility map that lets a list page read the index alone.
			settle := func() {
				conn, err := sql.Open("pgx", pg.DSN)
				if err != nil {
					b.Fatal(err)
				}
				defer conn.Close()
				if _, err := conn.ExecContext(ctx, `VACUUM ANALYZE`); err != nil {
					b.Fatal(err)
				}
			}
			return db, postgresCPU(b, pg.Port), settle
		}},
	}
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			db, serverCPU, settle := be.open(b)
			b.Cleanup(func() { db.Close() })
			start := time.Now()
			ids := populate(b, db, n)
			settle()
			b.Logf("%s: recorded %d images in %v", be.name, n, time.Since(start).Round(time.Millisecond))
			client := serve(b, image.New(db, image.Options{}), allBlobs{})

			b.Run("GetImage", func(b *testing.B) {
				measure(b, conc, dur, serverCPU, func(_ int, r *rand.Rand) error {
					_, err := client.GetImage(ctx, &metadatav1.GetImageRequest{Reference: fmt.Sprintf("bench/app:%d", r.IntN(n))})
					return err
				})
			})
			b.Run("TagImage", func(b *testing.B) {
				measure(b, conc, dur, serverCPU, func(_ int, r *rand.Rand) error {
					_, err := client.TagImage(ctx, &metadatav1.TagImageRequest{Source: ids[r.IntN(n)], Target: fmt.Sprintf("bench/moving:%d", r.IntN(100))})
					return err
				})
			})
			b.Run("ListImages", func(b *testing.B) {
				// Each worker pages through all images, 100 at a time.
				tokens := make([]string, conc)
				measure(b, conc, dur, serverCPU, func(w int, _ *rand.Rand) error {
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
				if err := tx.InsertImage(ctx, row); err != nil {
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
// reports throughput, latency percentiles and CPU time per call: of this
// process (client and server) and, when serverCPU is set, of the database
// server. With STRATA_BENCH_CPUPROFILE set to a directory, it writes a CPU
// profile of each timed run there.
func measure(b *testing.B, conc int, dur time.Duration, serverCPU func() time.Duration, op func(worker int, r *rand.Rand) error) {
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
	if dir := os.Getenv("STRATA_BENCH_CPUPROFILE"); dir != "" {
		f, err := os.Create(filepath.Join(dir, strings.ReplaceAll(b.Name(), "/", "-")+".pprof"))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	var db0 time.Duration
	if serverCPU != nil {
		db0 = serverCPU()
	}
	cpu0 := cpuTime()
	lat, elapsed := run(dur)
	cpu := cpuTime() - cpu0
	var dbCPU time.Duration
	if serverCPU != nil {
		dbCPU = serverCPU() - db0
	}
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
	dbPerOp := float64(dbCPU.Microseconds()) / float64(len(lat))
	if serverCPU != nil {
		b.ReportMetric(dbPerOp, "db-cpu-µs/op")
	}
	b.ReportMetric(0, "ns/op")
	server := ""
	if serverCPU != nil {
		server = fmt.Sprintf(" (+%.0f µs in the database server)", dbPerOp)
	}
	load, _ := os.ReadFile("/proc/loadavg")
	b.Logf("%d calls from %d workers in %v: %.0f/s, p50 %.2f ms, p99 %.2f ms, %.0f µs of CPU per call%s; load average %s",
		len(lat), conc, elapsed.Round(time.Millisecond), opsPerSec, pct(0.5), pct(0.99), cpuPerOp, server, strings.Join(strings.Fields(string(load))[:3], " "))
}

// postgresCPU returns a function that reports the CPU time used by the
// PostgreSQL server listening on port: its postmaster (with the backends it
// has reaped) and its live processes.
func postgresCPU(b *testing.B, port int) func() time.Duration {
	b.Helper()
	// The postmaster was started with "-p <port>" (lib/harness).
	want := "\x00-p\x00" + strconv.Itoa(port) + "\x00"
	postmaster := 0
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		cmd, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(cmd), want) && strings.Contains(string(cmd), "postgres") {
			postmaster, _ = strconv.Atoi(filepath.Base(filepath.Dir(p)))
			break
		}
	}
	if postmaster == 0 {
		b.Logf("PostgreSQL server on port %d not found; its CPU time is not reported", port)
		return func() time.Duration { return 0 }
	}
	const tick = 10 * time.Millisecond // USER_HZ is 100 on Linux
	// stat returns the parent and the CPU ticks of a process, with those of
	// its reaped children when children is set.
	stat := func(pid string, children bool) (int, int64) {
		raw, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil {
			return 0, 0
		}
		s := string(raw)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // from field 3, state
		if len(f) < 15 {
			return 0, 0
		}
		ppid, _ := strconv.Atoi(f[1])
		var ticks int64
		last := 12 // utime, stime
		if children {
			last = 14 // cutime, cstime
		}
		for _, v := range f[11 : last+1] {
			n, _ := strconv.ParseInt(v, 10, 64)
			ticks += n
		}
		return ppid, ticks
	}
	return func() time.Duration {
		_, total := stat(strconv.Itoa(postmaster), true)
		dirs, _ := filepath.Glob("/proc/[0-9]*")
		for _, d := range dirs {
			if ppid, ticks := stat(filepath.Base(d), false); ppid == postmaster {
				total += ticks
			}
		}
		return time.Duration(total) * tick
	}
}
