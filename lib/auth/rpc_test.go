package auth_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	_ "google.golang.org/grpc/health/grpc_health_v1"
	_ "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/strata-build/strata/gen/descriptors"
	"github.com/strata-build/strata/lib/auth"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/grpcclient"
	"github.com/strata-build/strata/lib/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// method is one RPC and the server that serves it.
type method struct {
	desc protoreflect.MethodDescriptor
	addr string
}

func (m method) name() string {
	return "/" + string(m.desc.Parent().FullName()) + "/" + string(m.desc.Name())
}

// methods lists every RPC of the three services, from the descriptors the
// servers' reflection serves (so a new RPC is in this test as soon as it is
// in a proto), with health and reflection, which every server serves.
func methods(t *testing.T, s *harness.Stack) []method {
	t.Helper()
	files, err := descriptors.Files()
	if err != nil {
		t.Fatal(err)
	}
	addrOf := map[protoreflect.FullName]string{
		"strata.blob.v1": s.BlobstoreAddr, "strata.metadata.v1": s.MetadataAddr, "strata.builder.v1": s.BuilderAddr,
	}
	var out []method
	add := func(fd protoreflect.FileDescriptor, addr string) {
		for i := 0; i < fd.Services().Len(); i++ {
			sd := fd.Services().Get(i)
			for j := 0; j < sd.Methods().Len(); j++ {
				out = append(out, method{sd.Methods().Get(j), addr})
			}
		}
	}
	files.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		if fd.Services().Len() == 0 {
			return true
		}
		addr, ok := addrOf[fd.Package()]
		if !ok {
			t.Errorf("%s: services of package %s: which server serves them?", fd.Path(), fd.Package())
			return true
		}
		add(fd, addr)
		return true
	})
	for _, path := range []string{"grpc/health/v1/health.proto", "grpc/reflection/v1/reflection.proto"} {
		fd, err := protoregistry.GlobalFiles.FindFileByPath(path)
		if err != nil {
			t.Fatal(err)
		}
		add(fd, s.MetadataAddr)
	}
	return out
}

// call makes one call of m with an empty request (a stream gets one empty
// message, then its end) and returns how it ended.
func call(ctx context.Context, conn *grpc.ClientConn, m method) error {
	req, resp := dynamicpb.NewMessage(m.desc.Input()), dynamicpb.NewMessage(m.desc.Output())
	if !m.desc.IsStreamingClient() && !m.desc.IsStreamingServer() {
		return conn.Invoke(ctx, m.name(), req, resp)
	}
	st, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: m.desc.IsStreamingClient(), ServerStreams: m.desc.IsStreamingServer()}, m.name())
	if err != nil {
		return err
	}
	if err := st.SendMsg(req); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if err := st.CloseSend(); err != nil {
		return err
	}
	err = st.RecvMsg(resp)
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// For every RPC of the three services and every role: a caller without the
// role the RPC needs gets PERMISSION_DENIED naming the RPC and the role; one
// with it gets past auth (whatever the empty request then earns).
func TestEveryRPCNeedsItsRole(t *testing.T) {
	s := harness.StartStack(t, harness.StackOptions{Secure: true})
	callers := map[string]grpcclient.Config{"no token": {CAFile: s.Client.CAFile, CertFile: s.Client.CertFile, KeyFile: s.Client.KeyFile}}
	for _, r := range auth.Roles {
		cfg := s.Client
		cfg.Token = s.Tokens[r]
		callers[string(r)] = cfg
	}
	conns := map[string]*grpc.ClientConn{}
	conn := func(caller, addr string) *grpc.ClientConn {
		if c, ok := conns[caller+addr]; ok {
			return c
		}
		c, err := grpcclient.Dial(addr, callers[caller])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		conns[caller+addr] = c
		return c
	}
	all := methods(t, s)
	if len(all) < 35 {
		t.Fatalf("%d RPCs found, want every one of the three services' and health's and reflection's", len(all))
	}
	for _, m := range all {
		needs, declared := auth.RoleFor(m.name())
		if !declared {
			t.Errorf("%s declares no role", m.name())
			continue
		}
		for caller := range callers {
			t.Run(strings.TrimPrefix(m.name(), "/")+"/"+caller, func(t *testing.T) {
				// A stream that waits for more (WatchEvents) ends at the
				// deadline, past auth; refusals come at once.
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				err := call(ctx, conn(caller, m.addr), m)
				code := errdefs.Code(err)
				allowed := needs == auth.Open || caller != "no token" && auth.Role(caller).Includes(needs)
				if allowed {
					if code == codes.PermissionDenied || code == codes.Unauthenticated {
						t.Errorf("%s as %s (needs %s): %v %v, want past auth", m.name(), caller, needs, code, err)
					}
					return
				}
				want := fmt.Sprintf("%s needs the %s role", strings.TrimPrefix(m.name(), "/"), needs)
				if code != codes.PermissionDenied || !strings.Contains(err.Error(), want) {
					t.Errorf("%s as %s: %v %v, want PERMISSION_DENIED saying %q", m.name(), caller, code, err, want)
				}
			})
		}
	}
}

// SIGHUP reads the token file again (and does not stop the service, as it
// would a program that does not handle it).
func TestSIGHUPReadsTheTokenFileAgain(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "tokens")
	if err := os.WriteFile(file, []byte("read old-token alice\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	p := harness.Start(t, []string{"STRATA_LISTEN=" + addr, "STRATA_FS_ROOT=" + filepath.Join(dir, "blobs"), "STRATA_AUTH_TOKEN_FILE=" + file},
		harness.Binary(t, "strata-blobstore"))
	harness.WaitServing(t, addr)
	list := func(token string) error {
		conn, err := grpcclient.Dial(addr, grpcclient.Config{Token: token})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return call(ctx, conn, method{desc: blobList(t), addr: addr})
	}
	if err := list("old-token"); err != nil {
		t.Fatalf("List with the token of the file: %v", err)
	}
	if err := os.WriteFile(file, []byte("read new-token alice\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	harness.WaitFor(t, "the SIGHUP reload", 10*time.Second, func(context.Context) error {
		b, err := os.ReadFile(p.Log)
		if err != nil || !strings.Contains(string(b), "SIGHUP: token file read") {
			return fmt.Errorf("the log does not say the file was read on SIGHUP: %v", err)
		}
		return nil
	})
	if err := list("new-token"); err != nil {
		t.Errorf("List with the new token after SIGHUP: %v", err)
	}
	if err := list("old-token"); errdefs.Code(err) != codes.Unauthenticated {
		t.Errorf("List with the old token after SIGHUP: %v, want UNAUTHENTICATED", err)
	}
}

func blobList(t *testing.T) protoreflect.MethodDescriptor {
	files, err := descriptors.Files()
	if err != nil {
		t.Fatal(err)
	}
	d, err := files.FindDescriptorByName("strata.blob.v1.BlobService.List")
	if err != nil {
		t.Fatal(err)
	}
	return d.(protoreflect.MethodDescriptor)
}
