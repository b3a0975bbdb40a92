package harness

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// StartRegistry runs the distribution registry (v3, `make tools` installs
// it) on loopback with filesystem storage and deletes enabled, and returns
// its "localhost:PORT" (plain HTTP, as Strata and Docker use for localhost).
func StartRegistry(t testing.TB) string {
	t.Helper()
	return startRegistry(t, "", "").Addr
}

// Registry is a distribution registry the harness started.
type Registry struct {
	// Addr is "localhost:PORT".
	Addr string

	proc *Process
	dir  string
}

// StartRemovableRegistry is StartRegistry for benchmarks that push
// gigabytes a run: Remove ends the registry and its storage before the
// benchmark does.
func StartRemovableRegistry(t testing.TB) *Registry {
	t.Helper()
	return startRegistry(t, "", "")
}

// Remove stops the registry and deletes what it stored.
func (r *Registry) Remove() error {
	r.proc.Stop()
	return os.RemoveAll(r.dir)
}

// StartRegistryWithAuth is StartRegistry with HTTP basic auth (htpasswd):
// only user with password may push or pull.
func StartRegistryWithAuth(t testing.TB, user, password string) string {
	t.Helper()
	return startRegistry(t, user, password).Addr
}

func startRegistry(t testing.TB, user, password string) *Registry {
	t.Helper()
	port := FreePort(t)
	dir, err := os.MkdirTemp(t.TempDir(), "registry-")
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: 127.0.0.1:%d
`, filepath.Join(dir, "data"), port)
	ready := http.StatusOK
	if user != "" {
		hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		htpasswd := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(htpasswd, []byte(user+":"+string(hash)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg += fmt.Sprintf("auth:\n  htpasswd:\n    realm: strata-test\n    path: %s\n", htpasswd)
		ready = http.StatusUnauthorized
	}
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	proc := Start(t, nil, Tool(t, "registry"), "serve", cfgPath)
	addr := fmt.Sprintf("localhost:%d", port)
	WaitFor(t, "registry", 30*time.Second, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v2/", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != ready {
			return fmt.Errorf("GET /v2/: %s", resp.Status)
		}
		return nil
	})
	return &Registry{Addr: addr, proc: proc, dir: dir}
}
