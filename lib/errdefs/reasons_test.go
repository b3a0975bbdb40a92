package errdefs

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// repoRoot is the directory of go.work above the test's directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Skip("not in the repository (no go.work above)")
		}
		dir = parent
	}
}

var (
	// reasonUse matches a reason given in code: WithReason("X"), or a
	// constant such as `ReasonInvalidReference = "INVALID_REFERENCE"`.
	reasonUse = regexp.MustCompile(`WithReason\("([A-Z][A-Z0-9_]*)"\)|(?i:reason)\w*\s*=\s*"([A-Z][A-Z0-9_]*)"`)
	// reasonRow matches a row of the reasons table of docs/api.md.
	reasonRow = regexp.MustCompile("(?m)^\\| `([A-Z][A-Z0-9_]*)` \\|")
)

// The ErrorInfo reasons are a documented, stable list: every reason the
// code gives is in the table of docs/api.md, and the table lists nothing
// the code does not give.
func TestEveryReasonIsDocumented(t *testing.T) {
	root := repoRoot(t)
	used := map[string]string{} // reason → a file that gives it
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); p != root && (strings.HasPrefix(name, ".") || name == "gen" || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range reasonUse.FindAllStringSubmatch(string(b), -1) {
			used[m[1]+m[2]], _ = filepath.Rel(root, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(used) < 50 {
		t.Fatalf("found %d reasons in the code, want every one", len(used))
	}
	doc, err := os.ReadFile(filepath.Join(root, "docs", "api.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(doc), "### Error reasons")
	if !ok {
		t.Fatal(`docs/api.md has no "### Error reasons" section`)
	}
	var documented []string
	for _, m := range reasonRow.FindAllStringSubmatch(table, -1) {
		documented = append(documented, m[1])
	}
	for r, file := range used {
		if !slices.Contains(documented, r) {
			t.Errorf("reason %s (%s) is not in the table of docs/api.md#error-reasons", r, file)
		}
	}
	for _, r := range documented {
		if _, ok := used[r]; !ok {
			t.Errorf("docs/api.md lists reason %s, which no code gives", r)
		}
	}
}
