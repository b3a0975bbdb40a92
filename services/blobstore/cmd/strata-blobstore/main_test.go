package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/strata-build/strata/lib/grpcclient"
	"github.com/strata-build/strata/lib/harness"
	"github.com/strata-build/strata/services/blobstore/internal/blob/blobtest"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// startServer runs strata-blobstore with args and waits until it serves.
func startServer(t *testing.T, env []string, args ...string) string {
	t.Helper()
	server := harness.Binary(t, "strata-blobstore")
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	harness.Start(t, env, server, append([]string{"--listen", addr}, args...)...)
	conn, err := grpcclient.Dial(addr, grpcclient.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	harness.WaitFor(t, "strata-blobstore", 30*time.Second, func(ctx context.Context) error {
		_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	})
	return addr
}

// strata runs the CLI against the blob store at addr.
func strata(t *testing.T, addr string, stdin []byte, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cli := harness.Binary(t, "strata")
	cmd := exec.Command(cli, append([]string{"--blobstore", addr}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(stdin), &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// checkCLI is the acceptance path: put of a 64 MiB file prints its digest,
// get returns the same bytes, a wrong --digest fails naming both digests and
// stores nothing.
func checkCLI(t *testing.T, addr string) {
	dir := t.TempDir()
	b := blobtest.Content(1, 64<<20)
	want := digest.FromBytes(b)
	file := filepath.Join(dir, "blob")
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := strata(t, addr, nil, "blob", "put", file)
	if err != nil || strings.TrimSpace(out) != string(want) {
		t.Fatalf("strata blob put = %q, %v (%s); want %s", out, err, errOut, want)
	}
	got := filepath.Join(dir, "got")
	if _, errOut, err := strata(t, addr, nil, "blob", "get", "-o", got, string(want)); err != nil {
		t.Fatalf("strata blob get = %v (%s)", err, errOut)
	}
	if g, err := os.ReadFile(got); err != nil || !bytes.Equal(g, b) {
		t.Errorf("strata blob get wrote %d bytes (%v), want the %d put", len(g), err, len(b))
	}
	out, _, err = strata(t, addr, nil, "blob", "get", "--offset", "10", "--length", "5", string(want))
	if err != nil || out != string(b[10:15]) {
		t.Errorf("strata blob get --offset 10 --length 5 = %q, %v", out, err)
	}

	other := filepath.Join(dir, "other")
	ob := []byte("not what was declared")
	if err := os.WriteFile(other, ob, 0o644); err != nil {
		t.Fatal(err)
	}
	actual := digest.FromBytes(ob)
	for _, src := range []string{other, "-"} {
		_, errOut, err = strata(t, addr, ob, "blob", "put", "--digest", string(want[:len(want)-1])+"0", src)
		if err == nil || !strings.Contains(errOut, string(want[:len(want)-1])+"0") || !strings.Contains(errOut, string(actual)) {
			t.Errorf("strata blob put --digest <wrong> %s = %v, stderr %q; want a failure naming both digests", src, err, errOut)
		}
	}
	out, _, err = strata(t, addr, nil, "blob", "ls", "-q")
	if err != nil || strings.TrimSpace(out) != string(want) {
		t.Errorf("strata blob ls -q = %q, %v; want only %s", out, err, want)
	}

	// Standard input, digest found by the client.
	out, _, err = strata(t, addr, ob, "blob", "put", "-")
	if err != nil || strings.TrimSpace(out) != string(actual) {
		t.Errorf("strata blob put - = %q, %v; want %s", out, err, actual)
	}
	out, _, err = strata(t, addr, nil, "blob", "stat", string(actual))
	if err != nil || !strings.Contains(out, string(actual)) || !strings.Contains(out, fmt.Sprint(len(ob))) {
		t.Errorf("strata blob stat = %q, %v", out, err)
	}
	if out, _, err = strata(t, addr, nil, "blob", "rm", string(actual)); err != nil || strings.TrimSpace(out) != string(actual) {
		t.Errorf("strata blob rm = %q, %v", out, err)
	}
	if _, errOut, err = strata(t, addr, nil, "blob", "stat", string(actual)); err == nil || !strings.Contains(errOut, "not found") {
		t.Errorf("strata blob stat of a removed blob = %v, %q; want not found", err, errOut)
	}
	if _, errOut, err = strata(t, addr, nil, "blob", "get", "sha256:../../x"); err == nil || !strings.Contains(errOut, "invalid digest") {
		t.Errorf("strata blob get sha256:../../x = %v, %q; want invalid digest", err, errOut)
	}
}

// checkDamage flips a byte of a stored blob (in the file path gives for
// its digest): strata blob get fails as DATA_LOSS naming the digest, and
// strata blob verify names it and exits 1 while the other blob is intact.
func checkDamage(t *testing.T, addr string, path func(digest.Digest) string) {
	dir := t.TempDir()
	var ds []digest.Digest
	for i, n := range []int{3 << 20, 100} {
		b := blobtest.Content(uint64(10+i), n)
		file := filepath.Join(dir, fmt.Sprint(i))
		if err := os.WriteFile(file, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if out, errOut, err := strata(t, addr, nil, "blob", "put", file); err != nil {
			t.Fatalf("strata blob put = %q, %v (%s)", out, err, errOut)
		}
		ds = append(ds, digest.FromBytes(b))
	}
	if out, errOut, err := strata(t, addr, nil, "blob", "verify"); err != nil || !strings.Contains(out, "2 blobs checked") {
		t.Errorf("strata blob verify of intact blobs = %q, %v (%s); want 2 checked, success", out, err, errOut)
	}
	damaged := ds[0]
	blobtest.FlipByte(t, path(damaged), 1<<20)

	_, errOut, err := strata(t, addr, nil, "blob", "get", "-o", filepath.Join(dir, "got"), string(damaged))
	if err == nil || !strings.Contains(errOut, string(damaged)) || !strings.Contains(errOut, "damaged") {
		t.Errorf("strata blob get of a damaged blob = %v, %q; want a failure naming %s as damaged", err, errOut, damaged)
	}
	if _, err := os.Stat(filepath.Join(dir, "got")); err == nil {
		t.Errorf("strata blob get of a damaged blob left its output file")
	}
	out, errOut, err := strata(t, addr, nil, "blob", "verify")
	if exit, ok := err.(*exec.ExitError); !ok || exit.ExitCode() != 1 ||
		!strings.Contains(out, string(damaged)+"\tdamaged: ") || strings.Contains(out, string(ds[1])) || !strings.Contains(errOut, "1 of 2 blobs") {
		t.Errorf("strata blob verify = %v, stdout %q, stderr %q; want exit 1 naming only %s as damaged", err, out, errOut, damaged)
	}
	if out, _, _ := strata(t, addr, nil, "blob", "verify", "-q", string(ds[1]), string(damaged)); out != string(damaged)+"\n" {
		t.Errorf("strata blob verify -q = %q, want only %s", out, damaged)
	}
}

func TestCLIWithFS(t *testing.T) {
	root := t.TempDir()
	addr := startServer(t, nil, "--fs-root", root)
	checkCLI(t, addr)
	// Nothing is left in the ingest folder.
	if entries, err := os.ReadDir(filepath.Join(root, "ingest")); err != nil || len(entries) != 0 {
		t.Errorf("ingest folder: %d entries, %v; want empty", len(entries), err)
	}
	t.Run("damage", func(t *testing.T) {
		root := t.TempDir()
		addr := startServer(t, nil, "--fs-root", root)
		checkDamage(t, addr, func(d digest.Digest) string { return filepath.Join(root, "blobs", "sha256", d.Encoded()) })
	})
}

// TestSecondProcessOnFSRoot: the fs backend is single-replica; a second
// process on the same root stops at once, saying why.
func TestSecondProcessOnFSRoot(t *testing.T) {
	root := t.TempDir()
	startServer(t, nil, "--fs-root", root)
	cmd := exec.Command(harness.Binary(t, "strata-blobstore"), "--listen", fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t)), "--fs-root", root)
	out, err := cmd.CombinedOutput()
	if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 1 || !strings.Contains(string(out), root) || !strings.Contains(string(out), "in use by another process") {
		t.Errorf("a second strata-blobstore on %s: %v, output %q; want exit 1 naming the root as in use", root, err, out)
	}
}

func TestCLIWithS3(t *testing.T) {
	s3 := harness.StartS3(t)
	env := []string{"STRATA_S3_ACCESS_KEY=" + s3.AccessKey, "STRATA_S3_SECRET_KEY=" + s3.SecretKey}
	s3Args := []string{"--backend", "s3", "--s3-endpoint", s3.Endpoint, "--s3-path-style", "--s3-create-bucket"}
	addr := startServer(t, env, append(s3Args, "--s3-bucket", "cli")...)
	checkCLI(t, addr)
	t.Run("damage", func(t *testing.T) {
		addr := startServer(t, env, append(s3Args, "--s3-bucket", "damage")...)
		checkDamage(t, addr, func(d digest.Digest) string { return filepath.Join(s3.Dir, "damage", "blobs", "sha256", d.Encoded()) })
	})
}

// TestS3DownAtStart: the service starts while S3 is down, answers
// UNAVAILABLE naming the endpoint, and serves once S3 is up.
func TestS3DownAtStart(t *testing.T) {
	s3 := harness.StartS3(t)
	s3.Stop()
	addr := startServer(t, []string{"STRATA_S3_ACCESS_KEY=" + s3.AccessKey, "STRATA_S3_SECRET_KEY=" + s3.SecretKey},
		"--backend", "s3", "--s3-endpoint", s3.Endpoint, "--s3-path-style", "--s3-create-bucket", "--s3-max-retries", "1")
	_, errOut, err := strata(t, addr, nil, "blob", "ls")
	if err == nil || !strings.Contains(errOut, s3.Endpoint) || !strings.Contains(errOut, "unreachable") {
		t.Errorf("strata blob ls with S3 down = %v, %q; want an error naming %s as unreachable", err, errOut, s3.Endpoint)
	}
	s3.Start(t)
	if out, errOut, err := strata(t, addr, []byte("x"), "blob", "put", "-"); err != nil || strings.TrimSpace(out) != string(digest.FromString("x")) {
		t.Errorf("strata blob put once S3 is up = %q, %v (%s)", out, err, errOut)
	}
}

func TestBadFlags(t *testing.T) {
	server := harness.Binary(t, "strata-blobstore")
	for _, tc := range []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"--backend", "nfs"}, nil, `invalid value "nfs" for --backend`},
		{nil, []string{"STRATA_BACKEND=tape"}, `invalid value "tape" for STRATA_BACKEND`},
		{[]string{"--backend", "s3", "--s3-endpoint", "http://h:9000", "--s3-access-key", "a", "--s3-secret-key", "b"}, nil, `invalid value "http://h:9000" for --s3-endpoint`},
		{[]string{"--s3-part-size", "1024"}, nil, `invalid value "1024" for --s3-part-size`},
		{[]string{"--janitor-max-age", "-1h"}, nil, `invalid value "-1h0m0s" for --janitor-max-age`},
		{[]string{"--s3-upload-lease", "100ms"}, nil, `invalid value "100ms" for --s3-upload-lease`},
		{[]string{"--s3-idle-timeout", "0s"}, nil, `invalid value "0s" for --s3-idle-timeout`},
		{nil, []string{"STRATA_HEALTH_PROBE_INTERVAL=0s"}, `invalid value "0s" for STRATA_HEALTH_PROBE_INTERVAL`},
	} {
		cmd := exec.Command(server, tc.args...)
		cmd.Env = append(os.Environ(), tc.env...)
		out, err := cmd.CombinedOutput()
		if cmd.ProcessState.ExitCode() != 2 || !strings.Contains(string(out), tc.want) {
			t.Errorf("strata-blobstore %v %v: exit %d (%v), output %q; want exit 2 and %q", tc.env, tc.args, cmd.ProcessState.ExitCode(), err, out, tc.want)
		}
	}
}
