package buildctx

import (
	"errors"
	"io/fs"
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/moby/patternmatcher/ignorefile"
	"google.golang.org/protobuf/proto"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/errdefs"
)

// FuzzContext builds a context from any file list a client can send (the
// ContextEntries message) and resolves sources in it as COPY and ADD do,
// after applying a .dockerignore as the builder does. A list is refused
// with INVALID_ARGUMENT or RESOURCE_EXHAUSTED, or makes a tree in which
// every entry has a clean path inside the context under a directory;
// Resolve never returns an entry outside that tree, nor a symlink, nor
// anything for a path above the root; Match returns entries of the
// context that match; and Ignore leaves a tree of the same shape, with the
// Dockerfile and .dockerignore in it.
func FuzzContext(f *testing.F) {
	for _, list := range [][]*builderv1.FileEntry{
		{file("Dockerfile", "FROM busybox\nCOPY . /app\n"), file(".dockerignore", "secrets/\n*.log\n!keep.log\n"),
			file("app/main.go", "package main"), file("secrets/key", "k"), file("a.log", "x"), file("keep.log", "y"),
			{Path: "bin", Mode: 0o040755}, {Path: "bin/run", Mode: 0o100755, Size: 2, Digest: string(file("", "#!").GetDigest())}},
		{file("dir/f", "f"), link("abs", "/dir/f"), link("rel", "dir/f"), link("out", "/etc/shadow"),
			link("up", "../../../dir/f"), link("loop", "loop"), link("dir/self", "."), link("dirlink", "dir")},
		{{Path: ".", Mode: 0o040700}, {Path: "a/b", Mode: 0o040755}, file("a/b/c", "c")},
	} {
		wire, err := proto.Marshal(&builderv1.ContextEntries{Entries: list, Last: true})
		if err != nil {
			f.Fatal(err)
		}
		for _, src := range []string{"dir/f", "abs", "up", "dirlink/f", "app/../Dockerfile", "../x", "/a/b/c"} {
			f.Add(wire, src, "*/*", "secrets/\n*.log\n!keep.log\n")
		}
		f.Add(wire, "a/b/c", "a/?", "# docs aside\na\n!a/b/c\ndir\n!dir/f\n")
	}
	f.Fuzz(func(t *testing.T, wire []byte, src, pattern, dockerignore string) {
		var msg builderv1.ContextEntries
		if proto.Unmarshal(wire, &msg) != nil {
			return
		}
		c, err := New(msg.GetEntries())
		if err != nil {
			if !errdefs.IsInvalidArgument(err) && !errors.Is(err, errdefs.ErrResourceExhausted) {
				t.Fatalf("New = %v, want INVALID_ARGUMENT or RESOURCE_EXHAUSTED", err)
			}
			return
		}
		checkTree(t, "New", c)
		checkResolve(t, c, src)
		checkMatch(t, c, pattern)

		patterns, err := ignorefile.ReadAll(strings.NewReader(dockerignore))
		if err != nil {
			return
		}
		kept := map[string]bool{}
		for _, k := range []string{".dockerignore", "Dockerfile"} {
			_, kept[k] = c.Lookup(k)
		}
		if err := c.Ignore(patterns, ".dockerignore", "Dockerfile"); err != nil {
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("Ignore(%q) = %v, want INVALID_ARGUMENT", patterns, err)
			}
			return
		}
		checkTree(t, "Ignore", c)
		for k, was := range kept {
			_, is := c.Lookup(k)
			_, removed := c.Removed(k)
			if was && is == removed {
				t.Fatalf("Ignore(%q): %s in the context %v, removed %v; want one of them", patterns, k, is, removed)
			}
		}
		checkResolve(t, c, src)
		checkMatch(t, c, pattern)
	})
}

// checkTree checks that every entry of c has a clean path inside the
// context, sits in a directory that lists it, and that Walk from the root
// visits each once.
func checkTree(t *testing.T, after string, c *Context) {
	t.Helper()
	root, ok := c.Lookup(".")
	if !ok || !root.Mode.IsDir() {
		t.Fatalf("after %s: the root is %v", after, root)
	}
	visited := map[string]int{}
	if err := c.Walk(".", func(e *Entry) error { visited[e.Path]++; return nil }); err != nil {
		t.Fatalf("after %s: Walk: %v", after, err)
	}
	for p, e := range c.entries {
		if e.Path != p {
			t.Fatalf("after %s: entry %q holds path %q", after, p, e.Path)
		}
		if visited[p] != 1 {
			t.Fatalf("after %s: Walk visited %q %d times", after, p, visited[p])
		}
		if p == "." {
			continue
		}
		if checkName(p) != nil || path.Clean(p) != p {
			t.Fatalf("after %s: entry %q is not a clean relative path", after, p)
		}
		parent, ok := c.Lookup(path.Dir(p))
		if !ok || !parent.Mode.IsDir() || !slices.Contains(c.children[path.Dir(p)], p) {
			t.Fatalf("after %s: entry %q is not listed in a directory %q (%v)", after, p, path.Dir(p), parent)
		}
	}
}

func checkResolve(t *testing.T, c *Context, src string) {
	t.Helper()
	e, err := c.Resolve(src)
	if err != nil {
		if !errdefs.IsInvalidArgument(err) && !errdefs.IsNotFound(err) {
			t.Fatalf("Resolve(%q) = %v, want INVALID_ARGUMENT or NOT_FOUND", src, err)
		}
		return
	}
	if outside(src) {
		t.Fatalf("Resolve(%q) = %q for a path above the context root", src, e.Path)
	}
	if in, ok := c.Lookup(e.Path); !ok || in != e {
		t.Fatalf("Resolve(%q) = %q, not an entry of the context", src, e.Path)
	}
	if e.Mode&fs.ModeSymlink != 0 {
		t.Fatalf("Resolve(%q) = symlink %q: links are followed", src, e.Path)
	}
}

func checkMatch(t *testing.T, c *Context, pattern string) {
	t.Helper()
	paths, err := c.Match(pattern)
	if err != nil {
		if !errdefs.IsInvalidArgument(err) {
			t.Fatalf("Match(%q) = %v, want INVALID_ARGUMENT", pattern, err)
		}
		return
	}
	if !slices.IsSorted(paths) {
		t.Fatalf("Match(%q) = %q, not sorted", pattern, paths)
	}
	clean := strings.TrimPrefix(path.Clean("/"+pattern), "/")
	for _, p := range paths {
		if ok, _ := path.Match(clean, p); !ok {
			t.Fatalf("Match(%q) = %q, which holds %q", pattern, paths, p)
		}
		if _, in := c.Lookup(p); !in || p == "." {
			t.Fatalf("Match(%q) = %q: %q is not a file of the context", pattern, paths, p)
		}
	}
}
