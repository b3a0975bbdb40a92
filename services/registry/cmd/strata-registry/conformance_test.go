package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/strata-build/strata/lib/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// conformanceModule is the OCI distribution-spec conformance suite, pinned.
const conformanceModule = "github.com/opencontainers/distribution-spec/conformance@v0.0.0-20260831232431-97274622c111"

var suite struct {
	once sync.Once
	bin  string
	err  error
	out  []byte
}

// conformanceSuite builds the suite's test binary once per test process,
// as its README says: `go test -c` in the module's directory.
func conformanceSuite(t *testing.T) string {
	t.Helper()
	suite.once.Do(func() {
		dl := exec.Command("go", "mod", "download", "-json", conformanceModule)
		dl.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
		out, err := dl.Output()
		if err != nil {
			suite.err, suite.out = err, out
			return
		}
		var mod struct{ Dir string }
		if suite.err = json.Unmarshal(out, &mod); suite.err != nil {
			return
		}
		dir, err := os.MkdirTemp("", "strata-conformance-")
		if err != nil {
			suite.err = err
			return
		}
		suite.bin = filepath.Join(dir, "conformance.test")
		build := exec.Command("go", "test", "-c", "-o", suite.bin, ".")
		build.Dir = mod.Dir
		build.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
		suite.out, suite.err = build.CombinedOutput()
	})
	if suite.err != nil {
		t.Fatalf("building the conformance suite %s: %v\n%s", conformanceModule, suite.err, suite.out)
	}
	return suite.bin
}

var countLine = regexp.MustCompile(`(?m)^\s+(Pass|FAIL|Error|Skip|Disabled)\.+:\s+(\d+)$`)

// runConformance runs the whole suite, with its default settings (every API
// and data group on), against a registry over the real services.
func runConformance(t *testing.T, opts harness.StackOptions) {
	bin := conformanceSuite(t)
	opts.NoBuilder, opts.Registry = true, true
	stack := harness.StartStack(t, opts)
	results := t.TempDir()
	cmd := exec.Command(bin)
	cmd.Dir = results
	cmd.Env = append(os.Environ(), "OCI_REGISTRY="+stack.RegistryAddr, "OCI_TLS=disabled", "OCI_RESULTS_DIR="+results)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	counts := map[string]string{}
	for _, m := range countLine.FindAllStringSubmatch(out.String(), -1) {
		counts[m[1]] = m[2]
	}
	t.Logf("conformance: %s passed, %s failed, %s errors, %s skipped, %s disabled", counts["Pass"], counts["FAIL"], counts["Error"], counts["Skip"], counts["Disabled"])
	if err != nil || !strings.Contains(out.String(), "OCI Conformance Result: Pass") || counts["FAIL"] != "0" || counts["Error"] != "0" || counts["Skip"] != "0" {
		var failed []string
		for _, line := range strings.Split(out.String(), "\n") {
			if strings.Contains(line, "failed test") || strings.HasSuffix(line, ": FAIL") {
				failed = append(failed, line)
			}
		}
		t.Fatalf("the conformance suite failed (%v):\n%s", err, strings.Join(failed, "\n"))
	}
}

func TestConformanceSQLite(t *testing.T) {
	runConformance(t, harness.StackOptions{})
}

func TestConformancePostgres(t *testing.T) {
	runConformance(t, harness.StackOptions{Postgres: true})
}
