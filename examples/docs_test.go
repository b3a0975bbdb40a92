package examples

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/strata-build/strata/lib/harness"
)

// docs/go-client.md shows examples/build as it is: the program a reader
// copies is the one make test runs.
func TestGoClientGuideShowsBuildExample(t *testing.T) {
	root := harness.RepoRoot(t)
	prog, err := os.ReadFile(filepath.Join(root, "examples", "build", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	guide, err := os.ReadFile(filepath.Join(root, "docs", "go-client.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(guide), "```go\n"+string(prog)+"```\n") {
		t.Errorf("docs/go-client.md does not show examples/build/main.go as it is; paste the file into its first go block")
	}
}
