// Package e2e tests builds end to end: the strata binary against the three
// real services (blob store on versitygw, metadata on SQLite, the builder
// with runc), and against the machine's Docker Engine for parity.
package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/strata-build/strata/lib/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// stack is the three services on loopback: the blob store on versitygw,
// metadata on SQLite and the builder with runc.
type stack struct {
	*harness.Stack
	home string // the CLI's HOME, where its context digest cache lives
}

func startStack(t *testing.T) *stack {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("the builder needs root for overlay mounts and runc")
	}
	s := &stack{Stack: harness.StartStack(t, harness.StackOptions{S3: true})}
	s.home = filepath.Join(s.Dir, "home")
	return s
}

// result is one run of the strata binary.
type result struct {
	code           int
	stdout, stderr string
}

// strata runs the CLI against the stack, in dir.
func (s *stack) strata(t *testing.T, dir string, args ...string) result {
	t.Helper()
	cmd := exec.Command(filepath.Join(s.Bin, "strata"), args...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "TZ=UTC", "HOME="+s.home, "XDG_CACHE_HOME="+filepath.Join(s.home, ".cache")), s.Env()...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running strata %v: %v", args, err)
	}
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// ok runs the CLI and fails the test unless it succeeds.
func (s *stack) ok(t *testing.T, dir string, args ...string) string {
	t.Helper()
	r := s.strata(t, dir, args...)
	if r.code != 0 {
		t.Fatalf("strata %v: exit %d\n%s%s", args, r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// rootfsTar writes the busybox-static root filesystem tarball that
// shared/bench/make-rootfs.sh writes, and returns its path.
func rootfsTar(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "rootfs.tar")
	if err := os.WriteFile(p, harness.BusyboxRootfs(t), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// writeFiles writes a build context; names ending in "/" are directories,
// "name -> target" symlinks.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		if i := strings.Index(name, " -> "); i >= 0 {
			p := filepath.Join(dir, name[:i])
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.Symlink(name[i+4:], p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		p := filepath.Join(dir, name)
		if strings.HasSuffix(name, "/") {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
