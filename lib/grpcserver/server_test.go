package grpcserver

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	blobv1 "github.com/strata-build/strata/gen/strata/blob/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/flagenv"
	"github.com/strata-build/strata/lib/grpcclient"
	"github.com/strata-build/strata/lib/harness"
	"github.com/strata-build/strata/lib/requestid"
	"github.com/strata-build/strata/lib/version"
)

// echoBlobs is a test BlobService: Stat answers with the request ID it saw
// (asking next first when set), Read blocks until release is closed.
type echoBlobs struct {
	blobv1.UnimplementedBlobServiceServer
	next    blobv1.BlobServiceClient
	started chan struct{}
	release chan struct{}
}

func (e *echoBlobs) Stat(ctx context.Context, req *blobv1.StatRequest) (*blobv1.StatResponse, error) {
	switch req.GetDigest() {
	case "missing":
		return nil, errdefs.NotFound("blob %s not found", req.GetDigest()).WithDetail("digest", req.GetDigest())
	case "panic":
		panic("handler bug")
	}
	if e.next != nil {
		return e.next.Stat(ctx, req)
	}
	return &blobv1.StatResponse{Blob: &blobv1.BlobInfo{Digest: requestid.From(ctx)}}, nil
}

func (e *echoBlobs) Read(req *blobv1.ReadRequest, stream grpc.ServerStreamingServer[blobv1.ReadResponse]) error {
	close(e.started)
	select {
	case <-e.release:
	case <-stream.Context().Done():
		return stream.Context().Err()
	}
	return stream.Send(&blobv1.ReadResponse{Data: []byte("finished")})
}

type testServer struct {
	addr   string
	cancel context.CancelFunc
	done   chan error
}

func startServer(t *testing.T, cfg Config, svc blobv1.BlobServiceServer) *testServer {
	t.Helper()
	cfg.Listen = "127.0.0.1:0"
	if cfg.MaxRecvMsgSize == 0 {
		cfg.MaxRecvMsgSize, cfg.MaxSendMsgSize = 4<<20, 4<<20
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	if cfg.KeepaliveMinTime == 0 {
		cfg.KeepaliveMinTime = time.Second
	}
	srv, err := New(cfg, slog.New(slog.NewJSONHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	blobv1.RegisterBlobServiceServer(srv.GRPC, svc)
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{addr: lis.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- srv.Serve(ctx, lis, nil) }()
	t.Cleanup(func() { cancel(); <-ts.done })
	return ts
}

func dial(t *testing.T, addr string, cfg grpcclient.Config) *grpc.ClientConn {
	t.Helper()
	conn, err := grpcclient.Dial(addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestRequestIDCrossesTwoServers(t *testing.T) {
	back := startServer(t, Config{}, &echoBlobs{})
	front := startServer(t, Config{}, &echoBlobs{next: blobv1.NewBlobServiceClient(dial(t, back.addr, grpcclient.Config{}))})
	client := blobv1.NewBlobServiceClient(dial(t, front.addr, grpcclient.Config{}))

	ctx := requestid.With(context.Background(), "cli-1234")
	var header metadata.MD
	resp, err := client.Stat(ctx, &blobv1.StatRequest{Digest: "x"}, grpc.Header(&header))
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	if got := resp.GetBlob().GetDigest(); got != "cli-1234" {
		t.Errorf("request ID seen by the second server = %q, want %q", got, "cli-1234")
	}
	if got := header.Get(requestid.Header); len(got) != 1 || got[0] != "cli-1234" {
		t.Errorf("response header %s = %v, want [cli-1234]", requestid.Header, got)
	}
	if got := header.Get(version.Header); len(got) != 1 || got[0] == "" {
		t.Errorf("response header %s = %v, want the server's version", version.Header, got)
	}

	// Without an ID from the caller, the first server makes one and passes it on.
	resp, err = client.Stat(context.Background(), &blobv1.StatRequest{Digest: "x"}, grpc.Header(&header))
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	made := header.Get(requestid.Header)
	if len(made) != 1 || !requestid.Valid(made[0]) || resp.GetBlob().GetDigest() != made[0] {
		t.Errorf("made request ID %v, second server saw %q; want one valid ID seen by both", made, resp.GetBlob().GetDigest())
	}
}

func TestErrorsAndPanicsBecomeStatuses(t *testing.T) {
	ts := startServer(t, Config{}, &echoBlobs{})
	conn := dial(t, ts.addr, grpcclient.Config{})

	_, err := blobv1.NewBlobServiceClient(conn).Stat(context.Background(), &blobv1.StatRequest{Digest: "missing"})
	if !errdefs.IsNotFound(err) {
		t.Fatalf("Stat(missing) = %v, want a not-found error", err)
	}
	var e *errdefs.Error
	if !errors.As(err, &e) || e.Details()["digest"] != "missing" || err.Error() != "blob missing not found" {
		t.Errorf("Stat(missing) = %v (details %v), want message and details from the server", err, e.Details())
	}

	// A raw connection sees the gRPC code itself.
	raw, err := grpc.NewClient(ts.addr, grpc.WithTransportCredentials(insecureCreds()))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_, err = blobv1.NewBlobServiceClient(raw).Stat(context.Background(), &blobv1.StatRequest{Digest: "panic"})
	if status.Code(err) != codes.Internal {
		t.Errorf("Stat(panic) code = %v, want Internal", status.Code(err))
	}
	// The server survives the panic.
	if _, err := blobv1.NewBlobServiceClient(raw).Stat(context.Background(), &blobv1.StatRequest{Digest: "x"}); err != nil {
		t.Errorf("Stat after a panic: %v", err)
	}
	_, err = blobv1.NewBlobServiceClient(raw).Delete(context.Background(), &blobv1.DeleteRequest{})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("Delete code = %v, want Unimplemented", status.Code(err))
	}
}

func TestHealthAndReflection(t *testing.T) {
	ts := startServer(t, Config{}, &echoBlobs{})
	conn := dial(t, ts.addr, grpcclient.Config{})
	resp, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{Service: "strata.blob.v1.BlobService"})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health of strata.blob.v1.BlobService = %v, %v; want SERVING", resp.GetStatus(), err)
	}
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	got, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range got.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{"strata.blob.v1.BlobService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"} {
		if !contains(names, want) {
			t.Errorf("reflection lists %v, missing %s", names, want)
		}
	}
}

func TestTokenAuth(t *testing.T) {
	ts := startServer(t, Config{AuthToken: "s3cret"}, &echoBlobs{})
	tests := []struct {
		name  string
		token string
		want  codes.Code
	}{
		{"no token", "", codes.Unauthenticated},
		{"wrong token", "guess", codes.Unauthenticated},
		{"right token", "s3cret", codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := dial(t, ts.addr, grpcclient.Config{Token: tt.token})
			_, err := blobv1.NewBlobServiceClient(conn).Stat(context.Background(), &blobv1.StatRequest{Digest: "x"})
			if got := errdefs.Code(err); got != tt.want {
				t.Errorf("Stat with token %q: code %v (%v), want %v", tt.token, got, err, tt.want)
			}
			// Health stays open for probes.
			if _, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
				t.Errorf("health check with token %q: %v", tt.token, err)
			}
		})
	}
	// A client's token file is read as a server's: its first token is sent.
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("\n  s3cret  \nother\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conn := dial(t, ts.addr, grpcclient.Config{TokenFile: file})
	if _, err := blobv1.NewBlobServiceClient(conn).Stat(context.Background(), &blobv1.StatRequest{Digest: "x"}); err != nil {
		t.Errorf("Stat with the token from a file: %v", err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := grpcclient.Dial(ts.addr, grpcclient.Config{TokenFile: empty}); err == nil || !strings.Contains(err.Error(), empty) {
		t.Errorf("Dial with an empty token file = %v, want an error naming it", err)
	}
}

func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca := harness.NewCA(t, dir, "ca")
	other := harness.NewCA(t, dir, "other")
	ca.Issue(t, dir, "server", true)
	ca.Issue(t, dir, "client", false)
	other.Issue(t, dir, "stranger", false)
	f := func(name string) string { return filepath.Join(dir, name) }

	ts := startServer(t, Config{TLSCert: f("server.crt"), TLSKey: f("server.key"), TLSClientCA: f("ca.crt")}, &echoBlobs{})
	tests := []struct {
		name string
		cfg  grpcclient.Config
		ok   bool
	}{
		{"trusted client certificate", grpcclient.Config{CAFile: f("ca.crt"), CertFile: f("client.crt"), KeyFile: f("client.key")}, true},
		{"no client certificate", grpcclient.Config{CAFile: f("ca.crt")}, false},
		{"certificate from another CA", grpcclient.Config{CAFile: f("ca.crt"), CertFile: f("stranger.crt"), KeyFile: f("stranger.key")}, false},
		{"client does not trust the server", grpcclient.Config{CAFile: f("other.crt"), CertFile: f("client.crt"), KeyFile: f("client.key")}, false},
		{"plaintext client", grpcclient.Config{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := dial(t, ts.addr, tt.cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
			if (err == nil) != tt.ok {
				t.Errorf("health check: %v, want success %v", err, tt.ok)
			}
			if !tt.ok && errdefs.Code(err) != codes.Unavailable {
				t.Errorf("failed handshake code = %v, want Unavailable", errdefs.Code(err))
			}
		})
	}
}

// stopDuringRead starts a server with cfg, opens a Read stream whose handler
// blocks until svc.release is closed, and then asks the server to stop.
func stopDuringRead(t *testing.T, cfg Config) (*testServer, *echoBlobs, grpc.ServerStreamingClient[blobv1.ReadResponse]) {
	t.Helper()
	svc := &echoBlobs{started: make(chan struct{}), release: make(chan struct{})}
	ts := startServer(t, cfg, svc)
	client := blobv1.NewBlobServiceClient(dial(t, ts.addr, grpcclient.Config{}))
	stream, err := client.Read(context.Background(), &blobv1.ReadRequest{Digest: "x"})
	if err != nil {
		t.Fatal(err)
	}
	<-svc.started
	ts.cancel()
	return ts, svc, stream
}

func TestGracefulStopFinishesStreamsAndRefusesNewCalls(t *testing.T) {
	ts, svc, stream := stopDuringRead(t, Config{})

	// New calls are refused while the stream drains.
	waitUntil(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := blobv1.NewBlobServiceClient(dial(t, ts.addr, grpcclient.Config{})).Stat(ctx, &blobv1.StatRequest{Digest: "x"})
		return errdefs.Code(err) == codes.Unavailable
	})
	select {
	case err := <-ts.done:
		t.Fatalf("server stopped before its stream finished: %v", err)
	default:
	}

	close(svc.release)
	msg, err := stream.Recv()
	if err != nil || string(msg.GetData()) != "finished" {
		t.Fatalf("in-flight stream: %v, %v; want it to finish", msg, err)
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Fatalf("stream end: %v, want io.EOF", err)
	}
	if err := <-ts.done; err != nil {
		t.Fatalf("Serve returned %v after a graceful stop", err)
	}
	ts.done <- nil // for the cleanup
}

func TestGracefulStopCutsOffAfterTimeout(t *testing.T) {
	ts, svc, stream := stopDuringRead(t, Config{ShutdownTimeout: 100 * time.Millisecond})
	defer close(svc.release)
	if err := <-ts.done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	ts.done <- nil
	if _, err := stream.Recv(); err == nil {
		t.Fatal("a stream outliving the shutdown timeout still got a message")
	}
}

func TestBadFlagsExitWithCodeTwo(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want []string // substrings of the message
	}{
		{"port not a number", []string{"--listen", ":http2"}, nil, []string{"--listen", `":http2"`}},
		{"port out of range", []string{"--listen", ":70000"}, nil, []string{"--listen", "70000"}},
		{"no port", []string{"--listen", "localhost"}, nil, []string{"--listen", "localhost"}},
		{"bad env twin", nil, map[string]string{"STRATA_LISTEN": ":99999"}, []string{"STRATA_LISTEN", "99999"}},
		{"env twin of a typed flag", nil, map[string]string{"STRATA_SHUTDOWN_TIMEOUT": "soon"}, []string{"STRATA_SHUTDOWN_TIMEOUT", "soon"}},
		{"missing TLS file", []string{"--tls-cert", filepath.Join(dir, "nope.crt"), "--tls-key", filepath.Join(dir, "nope.key")}, nil, []string{"--tls-cert", "nope.crt"}},
		{"cert without key", []string{"--tls-cert", filepath.Join(dir, "a.crt")}, nil, []string{"--tls-key"}},
		{"unknown flag", []string{"--no-such-flag"}, nil, []string{"no-such-flag"}},
		{"bad log level", []string{"--log-level", "loud"}, nil, []string{"--log-level", "loud"}},
		{"service flag", []string{"--backend", "tape"}, nil, []string{"--backend", "tape"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var backend string
			b := Binary{
				Name: "strata-test", DefaultListen: ":0",
				Flags: func(fs *flagenv.Set) { fs.StringVar(&backend, "backend", "fs", "fs or s3") },
				Validate: func(fs *flagenv.Set) error {
					if backend != "fs" && backend != "s3" {
						return fs.Invalid("backend", errors.New("want fs or s3"))
					}
					return nil
				},
				Wire: func(context.Context, *Server, *slog.Logger) (func(), error) {
					t.Fatal("Wire called despite bad flags")
					return nil, nil
				},
			}
			var stderr bytes.Buffer
			if code := b.main(tt.args, &stderr); code != 2 {
				t.Errorf("exit code %d, want 2 (stderr: %s)", code, stderr.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("message %q does not name %s", stderr.String(), w)
				}
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
