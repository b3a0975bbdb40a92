package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/strata-build/strata/lib/auth"
	"github.com/strata-build/strata/lib/grpcclient"
)

// StackOptions choose how StartStack runs the services.
type StackOptions struct {
	// S3 puts the blobs in a versitygw started for the stack; otherwise they
	// live in a directory (the blob store's embedded default).
	S3 bool
	// NoBuilder leaves the builder out (it needs root for runc and overlay).
	NoBuilder bool
	// Secure runs every service with mutual TLS and a token file with a
	// token for each role (Stack.Tokens); the services call each other with
	// the service token, and what runs with Env (the CLI) and Client get
	// the admin token.
	Secure bool
	// BuilderEnv is more environment for the builder, after the harness's
	// own (which lets it pull from registries on loopback, as make run's
	// does).
	BuilderEnv []string
	// Postgres runs metadata on a PostgreSQL cluster started for the stack
	// instead of SQLite.
	Postgres bool
	// Registry runs strata-registry too (RegistryAddr), with RegistryEnv.
	Registry    bool
	RegistryEnv []string
}

// Stack is Strata's three services running from their binaries on free
// loopback ports: the blob store, metadata on SQLite and the builder.
type Stack struct {
	// Bin is the directory of the binaries, the strata CLI among them.
	Bin string
	// Dir holds the services' data.
	Dir string
	// BlobstoreAddr, MetadataAddr, BuilderAddr and RegistryAddr are
	// "127.0.0.1:PORT".
	BlobstoreAddr, MetadataAddr, BuilderAddr, RegistryAddr string
	// BuilderStateDir is the builder's --state-dir.
	BuilderStateDir string
	// S3 is the S3 server under the blob store, when StackOptions.S3 is set.
	S3 *S3
	// Blobstore is the blob store's process (tests of its failure stop it).
	Blobstore *Process
	// Client is how a Go client reaches the services (TLS and the admin
	// token with StackOptions.Secure).
	Client grpcclient.Config
	// Tokens are the tokens of the services' token file by role, with
	// StackOptions.Secure; each is named ROLE-user.
	Tokens map[auth.Role]string
	// Builder is the builder's process.
	Builder *Process

	serverEnv, clientEnv, serviceEnv, builderEnv []string
}

// StartStack starts the services, waits until each one serves, and stops
// them when the test ends.
func StartStack(t testing.TB, opts StackOptions) *Stack {
	t.Helper()
	s := &Stack{
		Bin:           Binaries(t),
		Dir:           t.TempDir(),
		BlobstoreAddr: addr(FreePort(t)),
		MetadataAddr:  addr(FreePort(t)),
	}
	if opts.Secure {
		s.secure(t)
	}
	blobEnv := append([]string{"STRATA_LISTEN=" + s.BlobstoreAddr}, s.serverEnv...)
	if opts.S3 {
		s.S3 = StartS3(t)
		blobEnv = append(blobEnv, "STRATA_BACKEND=s3", "STRATA_S3_ENDPOINT="+s.S3.Endpoint, "STRATA_S3_PATH_STYLE=true",
			"STRATA_S3_REGION=us-east-1", "STRATA_S3_ACCESS_KEY="+s.S3.AccessKey, "STRATA_S3_SECRET_KEY="+s.S3.SecretKey,
			"STRATA_S3_CREATE_BUCKET=true")
	} else {
		blobEnv = append(blobEnv, "STRATA_FS_ROOT="+filepath.Join(s.Dir, "blobs"))
	}
	s.Blobstore = Start(t, blobEnv, filepath.Join(s.Bin, "strata-blobstore"))
	metaEnv := []string{"STRATA_LISTEN=" + s.MetadataAddr, "STRATA_SQLITE_PATH=" + filepath.Join(s.Dir, "metadata.db")}
	if opts.Postgres {
		metaEnv = append(metaEnv, "STRATA_STORE=postgres", "STRATA_POSTGRES_DSN="+StartPostgres(t).DSN)
	}
	Start(t, append(append(metaEnv, s.serverEnv...), s.peerEnv()...), filepath.Join(s.Bin, "strata-metadata"))
	serving := []string{s.BlobstoreAddr, s.MetadataAddr}
	if opts.Registry {
		s.RegistryAddr = addr(FreePort(t))
		env := append([]string{"STRATA_LISTEN=" + s.RegistryAddr}, s.serverEnv...)
		Start(t, append(append(env, s.peerEnv()...), opts.RegistryEnv...), filepath.Join(s.Bin, "strata-registry"))
		serving = append(serving, s.RegistryAddr)
	}
	if !opts.NoBuilder {
		s.BuilderAddr = addr(FreePort(t))
		s.BuilderStateDir = filepath.Join(s.Dir, "builder")
		s.builderEnv = append([]string{"STRATA_LISTEN=" + s.BuilderAddr, "STRATA_STATE_DIR=" + s.BuilderStateDir,
			"STRATA_ALLOW_REGISTRIES=127.0.0.0/8,::1/128"}, s.serverEnv...)
		s.builderEnv = append(append(s.builderEnv, s.peerEnv()...), opts.BuilderEnv...)
		s.Builder = Start(t, s.builderEnv, filepath.Join(s.Bin, "strata-builder"))
		serving = append(serving, s.BuilderAddr)
	}
	for _, a := range serving {
		waitServing(t, a, s.Client)
	}
	return s
}

// RestartBuilder starts the builder again, on the same address and state
// directory, after its process ended, and waits until it serves.
func (s *Stack) RestartBuilder(t testing.TB) {
	t.Helper()
	s.Builder = Start(t, s.builderEnv, filepath.Join(s.Bin, "strata-builder"))
	waitServing(t, s.BuilderAddr, s.Client)
}

// secure makes a CA, a server certificate for 127.0.0.1, a client
// certificate (which grants no role: tokens decide) and a token file with a
// token per role, and the environment that gives them to the services and
// to their clients.
func (s *Stack) secure(t testing.TB) {
	dir := filepath.Join(s.Dir, "tls")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	ca := NewCA(t, dir, "ca")
	ca.Issue(t, dir, "server", true)
	ca.Issue(t, dir, "client", false)
	f := func(name string) string { return filepath.Join(dir, name) }
	s.Tokens = map[auth.Role]string{}
	var file strings.Builder
	for _, r := range auth.Roles {
		s.Tokens[r] = fmt.Sprintf("%s-%d", r, time.Now().UnixNano())
		fmt.Fprintf(&file, "%s %s %s-user\n", r, s.Tokens[r], r)
	}
	if err := os.WriteFile(f("tokens"), []byte(file.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	s.Client = grpcclient.Config{CAFile: f("ca.crt"), CertFile: f("client.crt"), KeyFile: f("client.key"), Token: s.Tokens[auth.RoleAdmin]}
	s.serverEnv = []string{"STRATA_TLS_CERT=" + f("server.crt"), "STRATA_TLS_KEY=" + f("server.key"),
		"STRATA_TLS_CLIENT_CA=" + f("ca.crt"), "STRATA_AUTH_TOKEN_FILE=" + f("tokens")}
	tls := []string{"STRATA_CLIENT_TLS_CA=" + f("ca.crt"), "STRATA_CLIENT_TLS_CERT=" + f("client.crt"), "STRATA_CLIENT_TLS_KEY=" + f("client.key")}
	s.clientEnv = append(slices.Clone(tls), "STRATA_CLIENT_TOKEN="+s.Tokens[auth.RoleAdmin])
	s.serviceEnv = append(slices.Clone(tls), "STRATA_CLIENT_TOKEN="+s.Tokens[auth.RoleService])
}

// Env returns the environment that points clients at the stack (with the
// admin token when it is secure).
func (s *Stack) Env() []string {
	return append(s.addrEnv(), s.clientEnv...)
}

// peerEnv is Env for the services themselves, with the service token.
func (s *Stack) peerEnv() []string {
	return append(s.addrEnv(), s.serviceEnv...)
}

func (s *Stack) addrEnv() []string {
	env := []string{"STRATA_BLOBSTORE_ADDR=" + s.BlobstoreAddr, "STRATA_METADATA_ADDR=" + s.MetadataAddr}
	if s.BuilderAddr != "" {
		env = append(env, "STRATA_BUILDER_ADDR="+s.BuilderAddr)
	}
	return env
}

// Dial returns a new connection to the stack's service at addr, as
// Client reaches it, closed when the test ends: each client of a test has
// its own, as separate processes would.
func (s *Stack) Dial(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpcclient.Dial(addr, s.Client)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// WaitServing waits until the gRPC service at addr reports SERVING.
func WaitServing(t testing.TB, addr string) {
	t.Helper()
	waitServing(t, addr, grpcclient.Config{})
}

func waitServing(t testing.TB, addr string, cfg grpcclient.Config) {
	t.Helper()
	conn, err := grpcclient.Dial(addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	WaitFor(t, "service at "+addr, 60*time.Second, func(ctx context.Context) error {
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("status %v", resp.GetStatus())
		}
		return nil
	})
}
