package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// built is the one directory a test process builds Strata's binaries into.
// It is process-wide on purpose: every test of a package shares one build,
// and Main removes it when the tests end.
var built struct {
	mu   sync.Mutex
	dir  string
	have map[string]bool
}

// packageOf maps a binary's name to its main package in the checkout.
func packageOf(name string) (string, error) {
	switch name {
	case "strata":
		return "./cli/cmd/strata", nil
	case "strata-blobstore", "strata-metadata", "strata-builder", "strata-registry":
		return "./services/" + strings.TrimPrefix(name, "strata-") + "/cmd/" + name, nil
	}
	return "", fmt.Errorf("unknown binary %q", name)
}

// Binaries builds the named binaries of this checkout ("strata",
// "strata-blobstore", "strata-metadata", "strata-builder",
// "strata-registry"; all five when none is named), each once per test
// process, and returns their directory.
func Binaries(t testing.TB, names ...string) string {
	t.Helper()
	if len(names) == 0 {
		names = []string{"strata", "strata-blobstore", "strata-metadata", "strata-builder", "strata-registry"}
	}
	built.mu.Lock()
	defer built.mu.Unlock()
	if built.dir == "" {
		dir, err := os.MkdirTemp("", "strata-test-bin-")
		if err != nil {
			t.Fatal(err)
		}
		built.dir, built.have = dir, map[string]bool{}
	}
	var pkgs []string
	for _, n := range names {
		if built.have[n] {
			continue
		}
		p, err := packageOf(n)
		if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) > 0 {
		cmd := exec.Command("go", append([]string{"build", "-o", built.dir + "/"}, pkgs...)...)
		cmd.Dir = RepoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", strings.Join(pkgs, " "), err, out)
		}
		for _, n := range names {
			built.have[n] = true
		}
	}
	return built.dir
}

// Binary returns the path of one binary, building it if needed.
func Binary(t testing.TB, name string) string {
	t.Helper()
	return filepath.Join(Binaries(t, name), name)
}

// Main runs a package's tests (call it from TestMain) and then removes the
// binaries they built.
func Main(m *testing.M) int {
	code := m.Run()
	built.mu.Lock()
	defer built.mu.Unlock()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	return code
}
