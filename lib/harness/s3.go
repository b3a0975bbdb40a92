package harness

import (
	"context"
	"net/http"
	"testing"
	"time"
)

// S3 is a running versitygw S3 server on loopback.
type S3 struct {
	// Endpoint is "127.0.0.1:PORT" (plain HTTP).
	Endpoint string
	// AccessKey and SecretKey are the root credentials.
	AccessKey, SecretKey string
	// Dir is the directory versitygw keeps buckets in.
	Dir string

	port int
	proc *Process
}

// StartS3 starts versitygw with a posix backend in a temporary directory.
// Buckets are folders of Dir; create them through the S3 API.
func StartS3(t testing.TB) *S3 {
	t.Helper()
	s := &S3{AccessKey: "strata-test", SecretKey: "strata-test-secret", Dir: t.TempDir(), port: FreePort(t)}
	s.Endpoint = addr(s.port)
	s.Start(t)
	return s
}

// Start (re)starts the server on the same port and directory.
func (s *S3) Start(t testing.TB) {
	t.Helper()
	bin := Tool(t, "versitygw")
	s.proc = Start(t, []string{"ROOT_ACCESS_KEY=" + s.AccessKey, "ROOT_SECRET_KEY=" + s.SecretKey},
		bin, "--port", s.Endpoint, "posix", s.Dir)
	WaitFor(t, "versitygw", 30*time.Second, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.Endpoint+"/", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil // any HTTP answer (403 for an unsigned request) means it serves
	})
}

// Stop kills the server, as a crash would.
func (s *S3) Stop() { s.proc.Stop() }
