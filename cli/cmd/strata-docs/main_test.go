package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// docsDir is the checked-in reference, from this package's directory.
const docsDir = "../../../docs/cli"

// TestReferenceIsCurrent fails when docs/cli differs from what the command
// tree generates: a flag, command or help text changed without `make docs`.
func TestReferenceIsCurrent(t *testing.T) {
	for _, kv := range os.Environ() {
		if name, value, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "STRATA_") {
			t.Setenv(name, value) // restored after write unsets it
		}
	}
	t.Setenv("STRATA_CONFIG", "")
	got := t.TempDir()
	if err := write(got); err != nil {
		t.Fatal(err)
	}
	want, have := pages(t, got), pages(t, docsDir)
	if diff := cmp.Diff(have, want); diff != "" {
		t.Errorf("docs/cli is stale; run `make docs` and commit it (-checked in +generated):\n%s", diff)
	}
}

// pages reads the Markdown pages of dir by file name.
func pages(t *testing.T, dir string) map[string]string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		m[filepath.Base(p)] = string(b)
	}
	return m
}
