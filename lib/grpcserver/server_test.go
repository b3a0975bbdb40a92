package grpcserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	blobv1 "github.com/strata-build/strata/gen/strata/blob/v1"
	"github.com/strata-build/strata/lib/auth"
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
	return startServerLog(t, cfg, svc, io.Discard)
}

func startServerLog(t *testing.T, cfg Config, svc blobv1.BlobServiceServer, logs io.Writer) *testServer {
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
	srv, err := New(cfg, slog.New(slog.NewJSONHandler(logs, nil)))
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

// TestProbeDrivesHealth: while the probe fails the server and its
// services are NOT_SERVING, and SERVING once it passes again.
func TestProbeDrivesHealth(t *testing.T) {
	srv, err := New(Config{Listen: "127.0.0.1:0", MaxRecvMsgSize: 4 << 20, MaxSendMsgSize: 4 << 20, KeepaliveMinTime: time.Second, ShutdownTimeout: time.Second},
		slog.New(slog.NewJSONHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	blobv1.RegisterBlobServiceServer(srv.GRPC, &echoBlobs{})
	var down atomic.Bool
	srv.SetProbe(Probe{Interval: 20 * time.Millisecond, Check: func(context.Context) error {
		if down.Load() {
			return errors.New("the backend is down")
		}
		return nil
	}})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis, nil) }()
	t.Cleanup(func() { cancel(); <-done })
	health := healthpb.NewHealthClient(dial(t, lis.Addr().String(), grpcclient.Config{}))
	want := func(status healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		for _, svc := range []string{"", "strata.blob.v1.BlobService"} {
			harness.WaitFor(t, fmt.Sprintf("health of %q %v", svc, status), 10*time.Second, func(ctx context.Context) error {
				resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
				if err == nil && resp.GetStatus() != status {
					err = fmt.Errorf("status %v", resp.GetStatus())
				}
				return err
			})
		}
	}
	want(healthpb.HealthCheckResponse_SERVING)
	down.Store(true)
	want(healthpb.HealthCheckResponse_NOT_SERVING)
	down.Store(false)
	want(healthpb.HealthCheckResponse_SERVING)

	// A draining server stays NOT_SERVING whatever the probe says.
	srv.SetDraining()
	want(healthpb.HealthCheckResponse_NOT_SERVING)
	time.Sleep(100 * time.Millisecond) // five probe intervals: a probe that passes must not undo the drain
	want(healthpb.HealthCheckResponse_NOT_SERVING)
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
			if tt.want == codes.Unauthenticated && !strings.Contains(err.Error(), "strata.blob.v1.BlobService/Stat") {
				t.Errorf("Stat with token %q: %q does not name the RPC", tt.token, err)
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
	roles := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(roles, []byte("admin s3cret ops\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conn = dial(t, ts.addr, grpcclient.Config{TokenFile: roles})
	if _, err := blobv1.NewBlobServiceClient(conn).Stat(context.Background(), &blobv1.StatRequest{Digest: "x"}); err != nil {
		t.Errorf("Stat with the token of a ROLE TOKEN NAME line: %v", err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := grpcclient.Dial(ts.addr, grpcclient.Config{TokenFile: empty}); err == nil || !strings.Contains(err.Error(), empty) {
		t.Errorf("Dial with an empty token file = %v, want an error naming it", err)
	}
}

// writeTokens writes a token file with one token per role, named after it.
func writeTokens(t *testing.T, path, suffix string) {
	t.Helper()
	var b strings.Builder
	for _, r := range auth.Roles {
		fmt.Fprintf(&b, "%s %s-%s %s-user\n", r, r, suffix, r)
	}
	if err := os.WriteFile(path+".tmp", []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil { // as editors and secret mounts replace files
		t.Fatal(err)
	}
}

// The role a call needs decides: Stat needs read, Write needs write, Delete
// needs admin (echoBlobs implements neither, so passing auth shows as
// UNIMPLEMENTED).
func TestRoles(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tokens")
	writeTokens(t, file, "1")
	ts := startServer(t, Config{AuthTokenFile: file}, &echoBlobs{})
	calls := []struct {
		method string
		needs  auth.Role
		call   func(blobv1.BlobServiceClient) error
	}{
		{"Stat", auth.RoleRead, func(c blobv1.BlobServiceClient) error {
			_, err := c.Stat(context.Background(), &blobv1.StatRequest{Digest: "x"})
			return err
		}},
		{"AbortUpload", auth.RoleWrite, func(c blobv1.BlobServiceClient) error {
			_, err := c.AbortUpload(context.Background(), &blobv1.AbortUploadRequest{})
			return err
		}},
		{"Delete", auth.RoleAdmin, func(c blobv1.BlobServiceClient) error {
			_, err := c.Delete(context.Background(), &blobv1.DeleteRequest{})
			return err
		}},
	}
	for _, role := range auth.Roles {
		client := blobv1.NewBlobServiceClient(dial(t, ts.addr, grpcclient.Config{Token: string(role) + "-1"}))
		for _, c := range calls {
			err := c.call(client)
			if role.Includes(c.needs) {
				if code := errdefs.Code(err); code == codes.PermissionDenied || code == codes.Unauthenticated {
					t.Errorf("%s with the %s role: %v, want past auth", c.method, role, err)
				}
				continue
			}
			want := fmt.Sprintf("strata.blob.v1.BlobService/%s needs the %s role; %s-user has the %s role", c.method, c.needs, role, role)
			if errdefs.Code(err) != codes.PermissionDenied || err.Error() != want {
				t.Errorf("%s with the %s role: %v (%v), want PERMISSION_DENIED %q", c.method, role, errdefs.Code(err), err, want)
			}
		}
	}
}

// A changed token file is read again while the server runs: new tokens
// work, removed ones stop working, and a file that does not parse changes
// nothing.
func TestTokenFileIsReadAgainWhenItChanges(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tokens")
	writeTokens(t, file, "1")
	ts := startServer(t, Config{AuthTokenFile: file}, &echoBlobs{})
	stat := func(token string) error {
		conn := dial(t, ts.addr, grpcclient.Config{Token: token})
		_, err := blobv1.NewBlobServiceClient(conn).Stat(context.Background(), &blobv1.StatRequest{Digest: "x"})
		return err
	}
	if err := stat("read-1"); err != nil {
		t.Fatalf("Stat with a token of the file: %v", err)
	}
	writeTokens(t, file, "2")
	waitUntil(t, func() bool { return stat("read-2") == nil })
	if err := stat("read-1"); errdefs.Code(err) != codes.Unauthenticated {
		t.Errorf("Stat with a token removed from the file: %v, want UNAUTHENTICATED", err)
	}
	if err := os.WriteFile(file, []byte("wirte w3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // nothing to poll for: the file must be ignored
	if err := stat("read-2"); err != nil {
		t.Errorf("Stat after the file was broken: %v; want the tokens read before to stay", err)
	}
}

// A client certificate names its caller (the subject) and grants the roles
// its organizations name; a token, when sent, decides instead.
func TestClientCertificateRoles(t *testing.T) {
	dir := t.TempDir()
	ca := harness.NewCA(t, dir, "ca")
	ca.Issue(t, dir, "server", true)
	ca.Issue(t, dir, "reader", false, "read")
	ca.Issue(t, dir, "nobody", false, "Acme Inc")
	f := func(name string) string { return filepath.Join(dir, name) }
	tokens := f("tokens")
	writeTokens(t, tokens, "1")
	ts := startServer(t, Config{TLSCert: f("server.crt"), TLSKey: f("server.key"), TLSClientCA: f("ca.crt"), AuthTokenFile: tokens}, &echoBlobs{})
	client := func(cert, token string) blobv1.BlobServiceClient {
		return blobv1.NewBlobServiceClient(dial(t, ts.addr, grpcclient.Config{CAFile: f("ca.crt"), CertFile: f(cert + ".crt"), KeyFile: f(cert + ".key"), Token: token}))
	}
	if _, err := client("reader", "").Stat(context.Background(), &blobv1.StatRequest{Digest: "x"}); err != nil {
		t.Errorf("Stat with a certificate of O=read: %v", err)
	}
	_, err := client("reader", "").Delete(context.Background(), &blobv1.DeleteRequest{})
	if want := "strata.blob.v1.BlobService/Delete needs the admin role; CN=reader,O=read has the read role"; err == nil || err.Error() != want {
		t.Errorf("Delete with a certificate of O=read: %v, want %q", err, want)
	}
	if _, err := client("nobody", "").Stat(context.Background(), &blobv1.StatRequest{Digest: "x"}); errdefs.Code(err) != codes.PermissionDenied {
		t.Errorf("Stat with a certificate that names no role: %v, want PERMISSION_DENIED", err)
	}
	if _, err := client("nobody", "admin-1").Delete(context.Background(), &blobv1.DeleteRequest{}); errdefs.Code(err) != codes.Unimplemented {
		t.Errorf("Delete with an admin token over a certificate without roles: %v, want past auth", err)
	}
}

// A service names the caller it serves; the server believes it only of a
// caller with the service role, and logs every call with its caller, never
// the token.
func TestCallerIsLoggedAndPassedOn(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tokens")
	writeTokens(t, file, "1")
	var logs syncBuffer
	back := startServerLog(t, Config{AuthTokenFile: file}, &whoBlobs{}, &logs)
	front := startServer(t, Config{AuthTokenFile: file}, &echoBlobs{next: blobv1.NewBlobServiceClient(dial(t, back.addr, grpcclient.Config{Token: "service-1"}))})
	resp, err := blobv1.NewBlobServiceClient(dial(t, front.addr, grpcclient.Config{Token: "write-1"})).Stat(context.Background(), &blobv1.StatRequest{Digest: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := resp.GetBlob().GetDigest(), "write-user via service-user"; got != want {
		t.Errorf("the second server saw %q, want %q", got, want)
	}
	// A caller without the service role cannot pass for another.
	ctx := metadata.AppendToOutgoingContext(context.Background(), auth.OnBehalfOfHeader, "admin-user")
	resp, err = blobv1.NewBlobServiceClient(dial(t, back.addr, grpcclient.Config{Token: "write-1"})).Stat(ctx, &blobv1.StatRequest{Digest: "x"})
	if err != nil || resp.GetBlob().GetDigest() != "write-user" {
		t.Errorf("a write token claiming to call for admin-user: %q, %v; want write-user", resp.GetBlob().GetDigest(), err)
	}
	if _, err := blobv1.NewBlobServiceClient(dial(t, back.addr, grpcclient.Config{Token: "write-1"})).AbortUpload(context.Background(), &blobv1.AbortUploadRequest{Ref: "r"}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { return strings.Contains(logs.String(), "AbortUpload") })
	var line string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "AbortUpload") {
			line = l
		}
	}
	for _, want := range []string{`"auth.caller":"write-user"`, `"auth.role":"write"`} {
		if !strings.Contains(line, want) {
			t.Errorf("log line of a mutating call %s lacks %s", line, want)
		}
	}
	if strings.Contains(logs.String(), "write-1") || strings.Contains(logs.String(), "service-1") {
		t.Errorf("the log shows a token:\n%s", logs.String())
	}
}

// whoBlobs answers Stat with the caller it sees.
type whoBlobs struct {
	blobv1.UnimplementedBlobServiceServer
}

func (whoBlobs) Stat(ctx context.Context, _ *blobv1.StatRequest) (*blobv1.StatResponse, error) {
	id, _ := auth.IdentityFrom(ctx)
	return &blobv1.StatResponse{Blob: &blobv1.BlobInfo{Digest: id.String()}}, nil
}

func (whoBlobs) AbortUpload(context.Context, *blobv1.AbortUploadRequest) (*blobv1.AbortUploadResponse, error) {
	return &blobv1.AbortUploadResponse{}, nil
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Off loopback a server needs TLS and a way to identify callers, or
// --insecure.
func TestExposedServerNeedsTLSAndAuth(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string // a substring of the error; empty for none
	}{
		{"loopback, nothing", Config{Listen: "127.0.0.1:50052"}, ""},
		{"localhost, nothing", Config{Listen: "localhost:50052"}, ""},
		{"every interface, nothing", Config{Listen: ":50052"}, `--listen ":50052" is not a loopback address and the server has no TLS (--tls-cert, --tls-key) and no tokens`},
		{"tokens without TLS", Config{Listen: "0.0.0.0:50052", AuthToken: "t"}, "has no TLS"},
		{"TLS without tokens", Config{Listen: "10.1.2.3:50052", TLSCert: "c", TLSKey: "k"}, "no tokens (--auth-token-file) or client certificates"},
		{"TLS and tokens", Config{Listen: ":50052", TLSCert: "c", TLSKey: "k", AuthTokenFile: "f"}, ""},
		{"mutual TLS", Config{Listen: ":50052", TLSCert: "c", TLSKey: "k", TLSClientCA: "ca"}, ""},
		{"--insecure", Config{Listen: ":50052", Insecure: true}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.exposed()
			if (err == nil) != (tt.want == "") || err != nil && !strings.Contains(err.Error(), tt.want) {
				t.Errorf("exposed(%+v) = %v, want %q", tt.cfg, err, tt.want)
			}
		})
	}
}

// A client sends no token in clear text off loopback.
func TestClientRefusesTokenInClearText(t *testing.T) {
	for addr, ok := range map[string]bool{"127.0.0.1:50052": true, "localhost:50052": true, "[::1]:50052": true,
		"unix:///run/strata.sock": true, "metadata:50052": false, "10.0.0.7:50052": false, "dns:///strata.example:443": false} {
		conn, err := grpcclient.Dial(addr, grpcclient.Config{Token: "t"})
		if conn != nil {
			conn.Close()
		}
		if ok != (err == nil) {
			t.Errorf("Dial(%s) with a token and no TLS: %v, want success %v", addr, err, ok)
		}
		if err != nil && !strings.Contains(err.Error(), addr) {
			t.Errorf("Dial(%s): %q does not name the address", addr, err)
		}
		// With TLS the token goes anywhere.
		conn, err = grpcclient.Dial(addr, grpcclient.Config{Token: "t", TLS: true})
		if err != nil {
			t.Errorf("Dial(%s) with a token over TLS: %v", addr, err)
		} else {
			conn.Close()
		}
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
		{"pprof without metrics", []string{"--pprof"}, nil, []string{"--pprof", "--metrics-addr"}},
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

// TestPprofOnMetricsListener checks that --pprof serves profiles beside
// /metrics, and that without it the metrics listener serves none. The
// command line is never served: it may hold a token or an S3 secret key.
func TestPprofOnMetricsListener(t *testing.T) {
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("pprof=%v", on), func(t *testing.T) {
			srv, err := New(Config{Listen: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", Pprof: on, ShutdownTimeout: time.Second}, slog.New(slog.NewJSONHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			mlis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- srv.Serve(ctx, lis, mlis) }()
			t.Cleanup(func() { cancel(); <-done })
			resp, err := http.Get("http://" + mlis.Addr().String() + "/debug/pprof/goroutine?debug=1")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if got := resp.StatusCode == http.StatusOK && strings.Contains(string(body), "goroutine profile"); got != on {
				t.Errorf("GET /debug/pprof/goroutine with pprof %v: %s %.100q", on, resp.Status, body)
			}
			resp, err = http.Get("http://" + mlis.Addr().String() + "/debug/pprof/cmdline")
			if err != nil {
				t.Fatal(err)
			}
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || strings.Contains(string(body), "grpcserver.test") {
				t.Errorf("GET /debug/pprof/cmdline with pprof %v: %s %.100q; the command line must not be served", on, resp.Status, body)
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
