package plan

import (
	"context"
	"errors"
	"io/fs"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/buildctx"
	"github.com/strata-build/strata/services/builder/internal/dockerfile"
)

func TestFilter(t *testing.T) {
	type entry struct {
		rel string
		dir bool
	}
	tree := []entry{
		{"", true}, {"a", true}, {"a/b.txt", false}, {"a/c.go", false}, {"a/sub", true}, {"a/sub/d.txt", false},
		{"e.txt", false}, {"f.go", false},
	}
	for _, tc := range []struct {
		patterns []string
		want     []string
	}{
		{nil, []string{"", "a", "a/b.txt", "a/c.go", "a/sub", "a/sub/d.txt", "e.txt", "f.go"}},
		{[]string{"*.txt"}, []string{"", "a", "a/b.txt", "a/c.go", "a/sub", "a/sub/d.txt", "f.go"}},
		{[]string{"**/*.txt"}, []string{"", "a", "a/c.go", "a/sub", "f.go"}},
		{[]string{"a"}, []string{"", "e.txt", "f.go"}},
		{[]string{"*"}, []string{""}},
		// A "!" pattern brings back an entry, and the directories above it.
		{[]string{"a", "!a/sub/d.txt"}, []string{"", "a", "a/sub", "a/sub/d.txt", "e.txt", "f.go"}},
		{[]string{"*", "!*.go"}, []string{"", "f.go"}},
	} {
		x, err := NewExcluder(tc.patterns)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range Filter(x, "", tree, func(e entry) (string, bool) { return e.rel, e.dir }) {
			got = append(got, e.rel)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("Filter(%q) (-want +got):\n%s", tc.patterns, diff)
		}
	}
}

// A COPY --exclude's key covers the patterns and what they keep: editing
// an excluded file keeps the key, editing a kept one or the patterns
// changes it.
func TestCopyExcludeKey(t *testing.T) {
	file := func(p, body string) *builderv1.FileEntry {
		return &builderv1.FileEntry{Path: p, Mode: buildctx.UnixMode(0o644), Size: int64(len(body)), Digest: string(digest.FromString(body))}
	}
	key := func(src string, main, notes string) digest.Digest {
		t.Helper()
		df, err := dockerfile.Parse([]byte("FROM busybox\n" + src + "\n"))
		if err != nil {
			t.Fatal(err)
		}
		c, err := buildctx.New([]*builderv1.FileEntry{
			{Path: "app", Mode: buildctx.UnixMode(fs.ModeDir | 0o755)},
			file("app/main.go", main), file("app/notes.md", notes),
		})
		if err != nil {
			t.Fatal(err)
		}
		pl, err := Make(context.Background(), Input{Dockerfile: df, Context: c, MaxConfigBytes: 1 << 20, Images: baseImages{"busybox": busybox()}})
		if err != nil {
			t.Fatal(err)
		}
		steps := pl.Stages[0].Steps
		return steps[len(steps)-1].Key
	}
	const cp = "COPY --exclude=*.md app /app"
	base := key(cp, "a", "b")
	if k := key(cp, "a", "edited"); k != base {
		t.Errorf("editing an excluded file changed the key")
	}
	if k := key(cp, "edited", "b"); k == base {
		t.Errorf("editing a kept file kept the key")
	}
	if k := key("COPY --exclude=*.txt app /app", "a", "b"); k == base {
		t.Errorf("other patterns, same key")
	}
	if k := key("COPY app /app", "a", "b"); k == base {
		t.Errorf("no --exclude, same key")
	}
}

func TestSplitParents(t *testing.T) {
	for _, tc := range []struct{ src, dir, pattern string }{
		{"a/b/c.txt", "/", "a/b/c.txt"},
		{"a/./b/c", "/a", "b/c"},
		{"/test/a/./b/./c", "/test/a", "b/c"},
		{"a/b/.", "/", "a/b"},
		{"./x", "/", "x"},
		{"a/b*/./c/**/e", "/a/b*", "c/**/e"},
	} {
		dir, pattern := SplitParents(tc.src)
		if dir != tc.dir || pattern != tc.pattern {
			t.Errorf("SplitParents(%q) = %q, %q, want %q, %q", tc.src, dir, pattern, tc.dir, tc.pattern)
		}
	}
}

// A COPY --parents source without wildcards must exist, as BuildKit
// requires; one with wildcards may match nothing.
func TestCopyParentsSources(t *testing.T) {
	plan := func(src string) error {
		df, err := dockerfile.Parse([]byte("FROM busybox\n" + src + "\n"))
		if err != nil {
			t.Fatal(err)
		}
		c, err := testContext()
		if err != nil {
			t.Fatal(err)
		}
		_, err = Make(context.Background(), Input{Dockerfile: df, Context: c, MaxConfigBytes: 1 << 20, Images: baseImages{"busybox": busybox()}})
		return err
	}
	if err := plan("COPY --parents app/main.go app/./run.sh /x"); err != nil {
		t.Errorf("COPY --parents of existing files: %v", err)
	}
	if err := plan("COPY --parents app/*.c /x/"); err != nil {
		t.Errorf("COPY --parents of a wildcard that matches nothing: %v", err)
	}
	if err := plan("COPY --parents app/missing /x/"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("COPY --parents of a missing file: err = %v, want NOT_FOUND", err)
	}
}
