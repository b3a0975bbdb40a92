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
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", for VACUUM

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/grpcclient"
	"github.com/strata-build/strata/lib/harness"
	"github.com/strata-build/strata/lib/reference"
	"github.com/strata-build/strata/services/metadata/internal/image"
	"github.com/strata-build/strata/services/metadata/internal/image/imagetest"
	"github.com/strata-build/strata/services/metadata/internal/sqlstore"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkImageService measures GetImage, TagImage and ListImages (a page of
// 100) through the gRPC API of the strata-metadata binary, the client in
// this process and the server in its own, with 100,000 images recorded, on
// SQLite and on PostgreSQL, at a fixed concurrency. Each figure is the
// median of 5 timed windows: throughput and p50/p99 latency, and CPU time
// per call of the server (and of PostgreSQL). STRATA_BENCH_IMAGES,
// STRATA_BENCH_CONCURRENCY, STRATA_BENCH_SECONDS (of a window) and
// STRATA_BENCH_WINDOWS change the defaults (100000, 8, 3, 5). Run with
// -benchtime 1x: each figure comes from timed windows of its own, not from
// b.N. There is no peer: Docker's image store is not a network service.
func BenchmarkImageService(b *testing.B) {
	n := envInt("STRATA_BENCH_IMAGES", 100000)
	conc := envInt("STRATA_BENCH_CONCURRENCY", 8)
	dur := time.Duration(envInt("STRATA_BENCH_SECONDS", 3)) * time.Second
	windows := envInt("STRATA_BENCH_WINDOWS", 5)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()
	backends := []struct {
		name string
		// open returns the store, the environment that points
		// strata-metadata at it, and, for a database server, a function
		// returning the CPU time that server has used and one that settles
		// it after the images are recorded.
		open func(b *testing.B) (db *sqlstore.DB, env []string, dbCPU func() time.Duration, settle func())
	}{
		{"SQLite", func(b *testing.B) (*sqlstore.DB, []string, func() time.Duration, func()) {
			path := filepath.Join(b.TempDir(), "metadata.db")
			db, err := sqlstore.OpenSQLite(ctx, path, log)
			if err != nil {
				b.Fatal(err)
			}
			return db, []string{"STRATA_STORE=sqlite", "STRATA_SQLITE_PATH=" + path}, nil, func() {}
		}},
		{"PostgreSQL", func(b *testing.B) (*sqlstore.DB, []string, func() time.Duration, func()) {
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
			return db, []string{"STRATA_STORE=postgres", "STRATA_POSTGRES_DSN=" + pg.DSN}, postgresCPU(b, pg.Port), settle
		}},
	}
	// What each store does for durability.
	dbDid := map[string]string{
		"SQLite":     "SQLite (WAL, synchronous=NORMAL: fsync at checkpoints, not at each commit)",
		"PostgreSQL": "PostgreSQL 15 (the test harness's cluster: fsync=off)",
	}
	cpuDid := map[string]string{"SQLite": "strata-metadata's CPU", "PostgreSQL": "strata-metadata's CPU and PostgreSQL's"}
	var figs []harness.BenchFigure
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			db, env, dbCPU, settle := be.open(b)
			start := time.Now()
			ids := populate(b, db, n)
			settle()
			if err := db.Close(); err != nil {
				b.Fatal(err)
			}
			b.Logf("%s: recorded %d images in %v", be.name, n, time.Since(start).Round(time.Millisecond))
			client, server := startMetadata(b, env)
			serverCPU := func() time.Duration {
				cpu := processCPU(b, server.Cmd.Process.Pid)
				if dbCPU != nil {
					cpu += dbCPU()
				}
				return cpu
			}
			did := "strata-metadata on " + dbDid[be.name] + ", gRPC over loopback from another process"
			ops := []struct {
				name string
				op   func(worker int, r *rand.Rand) error
			}{
				{"GetImage", func(_ int, r *rand.Rand) error {
					_, err := client.GetImage(ctx, &metadatav1.GetImageRequest{Reference: fmt.Sprintf("bench/app:%d", r.IntN(n))})
					return err
				}},
				{"TagImage", func(_ int, r *rand.Rand) error {
					_, err := client.TagImage(ctx, &metadatav1.TagImageRequest{Source: ids[r.IntN(n)], Target: fmt.Sprintf("bench/moving:%d", r.IntN(100))})
					return err
				}},
				{"ListImages", listPages(ctx, client, conc)},
			}
			for _, o := range ops {
				b.Run(o.name, func(b *testing.B) {
					w := measure(b, conc, dur, windows, serverCPU, o.op)
					what := fmt.Sprintf("%s, %s, %d images, %d client workers", o.name, be.name, n, conc)
					figs = append(figs,
						harness.BenchFigure{Bench: "meta", Name: what, Unit: "calls/s", Better: "higher", Strata: w.opsPerSec, StrataDid: did, Runs: windows},
						harness.BenchFigure{Bench: "meta", Name: what + ", p99 latency", Unit: "ms", Better: "lower", Strata: w.p99, StrataDid: did, Runs: windows},
						harness.BenchFigure{Bench: "meta", Name: what + ", server CPU per call", Unit: "µs", Better: "lower", Strata: w.serverCPUPerOp,
							StrataDid: did + "; " + cpuDid[be.name], Runs: windows})
				})
			}
		})
	}
	harness.RecordBench(b, figs...)
}

// listPages returns an op by which each worker pages through all images,
// 100 at a time.
func listPages(ctx context.Context, client metadatav1.ImageServiceClient, conc int) func(int, *rand.Rand) error {
	tokens := make([]string, conc)
	return func(w int, _ *rand.Rand) error {
		r, err := client.ListImages(ctx, &metadatav1.ListImagesRequest{PageSize: 100, PageToken: tokens[w]})
		if err != nil {
			return err
		}
		if len(r.GetImages()) != 100 && r.GetNextPageToken() != "" {
			return fmt.Errorf("a page of %d images", len(r.GetImages()))
		}
		tokens[w] = r.GetNextPageToken()
		return nil
	}
}

// startMetadata runs the strata-metadata binary over a store that env
// names, with no garbage collection to run during the windows, and returns
// a client of it and its process.
func startMetadata(b *testing.B, env []string) (metadatav1.ImageServiceClient, *harness.Process) {
	b.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(b))
	proc := harness.Start(b, append(env, "STRATA_LISTEN="+addr, "STRATA_GC_INTERVAL=0", "STRATA_LOG_LEVEL=warn",
		fmt.Sprintf("STRATA_BLOBSTORE_ADDR=127.0.0.1:%d", harness.FreePort(b))), harness.Binary(b, "strata-metadata"))
	harness.WaitServing(b, addr)
	conn, err := grpcclient.Dial(addr, grpcclient.Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return metadatav1.NewImageServiceClient(conn), proc
}

// processCPU returns the CPU time a process has used so far.
func processCPU(b *testing.B, pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // from field 3, state
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ is 100 on Linux
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

// window is what measure found: medians over its windows.
type window struct {
	opsPerSec, p50, p99, serverCPUPerOp float64
}

// measure runs op from conc workers, after a short warm-up, in windows
// timed windows of dur each, and reports the medians of the windows'
// throughput, p50 and p99 latency, and server CPU time per call (from
// serverCPU). With STRATA_BENCH_CPUPROFILE set to a directory, it writes a
// CPU profile of the client's side of the windows there.
func measure(b *testing.B, conc int, dur time.Duration, windows int, serverCPU func() time.Duration, op func(worker int, r *rand.Rand) error) window {
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
	var ops, p50, p99, cpu []float64
	for range windows {
		cpu0 := serverCPU()
		lat, elapsed := run(dur)
		used := serverCPU() - cpu0
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		pct := func(p float64) float64 { return float64(lat[int(float64(len(lat)-1)*p)].Microseconds()) / 1000 }
		ops = append(ops, float64(len(lat))/elapsed.Seconds())
		p50 = append(p50, pct(0.50))
		p99 = append(p99, pct(0.99))
		cpu = append(cpu, float64(used.Microseconds())/float64(len(lat)))
	}
	w := window{opsPerSec: medianOf(ops), p50: medianOf(p50), p99: medianOf(p99), serverCPUPerOp: medianOf(cpu)}
	b.ReportMetric(w.opsPerSec, "ops/s")
	b.ReportMetric(w.p50, "p50-ms")
	b.ReportMetric(w.p99, "p99-ms")
	b.ReportMetric(w.serverCPUPerOp, "server-cpu-µs/op")
	b.ReportMetric(0, "ns/op")
	load, _ := os.ReadFile("/proc/loadavg")
	b.Logf("medians of %d windows of %v, %d workers: %.0f calls/s, p50 %.2f ms, p99 %.2f ms, %.0f µs of server CPU per call; load average %s",
		windows, dur, conc, w.opsPerSec, w.p50, w.p99, w.serverCPUPerOp, strings.Join(strings.Fields(string(load))[:3], " "))
	return w
}

// medianOf returns the middle of xs (the mean of the two middle ones for an
// even count).
func medianOf(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	return (s[(len(s)-1)/2] + s[len(s)/2]) / 2
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
