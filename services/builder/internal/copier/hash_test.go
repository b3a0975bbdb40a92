package copier

import (
	"io"
	"io/fs"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/services/builder/internal/buildctx"
	"github.com/strata-build/strata/services/builder/internal/plan"
)

// The hashes Docker 20.10's classic builder wrote for these sources, taken
// from the parity goldens (TestBuildRm, TestBuildCopyWholeDirToRoot).
func TestSourceHashIsDockers(t *testing.T) {
	files := map[string]string{"foo": "bar\n", "test_dir/test_file": "test1\n", "implied/keep.txt": "k\n"}
	store, err := buildctx.NewStore(t.TempDir(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	list := []*builderv1.FileEntry{{Path: "test_dir", Mode: buildctx.UnixMode(fs.ModeDir | 0o755)}}
	for p, body := range files {
		d := storeContent(t, store.NewWriter, body)
		// The owner on the client is not the one the CLI's tar gives (0:0).
		list = append(list, &builderv1.FileEntry{Path: p, Mode: buildctx.UnixMode(0o644), Size: int64(len(body)), Digest: string(d), Uid: 1000, Gid: 1000})
	}
	bctx, err := buildctx.New(list)
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Store: store, Context: bctx}
	source := func(p string) plan.Source {
		e, err := bctx.Resolve(p)
		if err != nil {
			t.Fatal(err)
		}
		return plan.Source{Src: p, Entry: e}
	}
	for _, tc := range []struct {
		srcs []string
		want string
	}{
		{[]string{"foo"}, "file:46420617f5ac06ffb227993f70086c2a76c44efe7ecfad50548193e4ff2cc943"},
		{[]string{"test_dir"}, "dir:8bb15d83ece63896770592bd23516d3e859785bdea1030d569f8a4b2636e68ce"},
		// A directory the list does not name (as .dockerignore's "dir" and
		// "!dir/keep" leave it) has no tar header: Docker counts its path.
		{[]string{"implied"}, "dir:f1ee1ee22587bc3b4c2dc0c3b170c3fa7fb61220159ae814dea84baf467215fe"},
		{[]string{"foo", "test_dir"}, joinHash("multi", []string{
			"file:46420617f5ac06ffb227993f70086c2a76c44efe7ecfad50548193e4ff2cc943",
			"dir:8bb15d83ece63896770592bd23516d3e859785bdea1030d569f8a4b2636e68ce"})},
	} {
		cp := &plan.Copy{}
		for _, s := range tc.srcs {
			cp.Sources = append(cp.Sources, source(s))
		}
		if got, err := SourceHash(cp, o); err != nil || got != tc.want {
			t.Errorf("SourceHash(%s) = %s, %v; want %s", strings.Join(tc.srcs, " "), got, err, tc.want)
		}
	}
}

// The store keeps files' sums from one build to the next: a build whose
// context changed a file's content or mode gets the hash a store seeing
// the context for the first time gives.
func TestSourceHashAfterAChange(t *testing.T) {
	hash := func(store *buildctx.Store, files map[string]string, mode fs.FileMode) string {
		t.Helper()
		list := []*builderv1.FileEntry{{Path: "d", Mode: buildctx.UnixMode(fs.ModeDir | 0o755)}}
		for p, body := range files {
			d := storeContent(t, store.NewWriter, body)
			list = append(list, &builderv1.FileEntry{Path: p, Mode: buildctx.UnixMode(mode), Size: int64(len(body)), Digest: string(d)})
		}
		bctx, err := buildctx.New(list)
		if err != nil {
			t.Fatal(err)
		}
		e, err := bctx.Resolve("d")
		if err != nil {
			t.Fatal(err)
		}
		h, err := SourceHash(&plan.Copy{Sources: []plan.Source{{Src: "d", Entry: e}}}, Options{Store: store, Context: bctx})
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	newStore := func() *buildctx.Store {
		s, err := buildctx.NewStore(t.TempDir(), 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	shared := newStore()
	first := hash(shared, map[string]string{"d/a": "a\n", "d/b": "b\n"}, 0o644)
	for _, tc := range []struct {
		name  string
		files map[string]string
		mode  fs.FileMode
	}{
		{"content", map[string]string{"d/a": "a\n", "d/b": "c\n"}, 0o644}, // the same size
		{"mode", map[string]string{"d/a": "a\n", "d/b": "b\n"}, 0o755},
		{"name", map[string]string{"d/a": "a\n", "d/c": "b\n"}, 0o644},
	} {
		got, want := hash(shared, tc.files, tc.mode), hash(newStore(), tc.files, tc.mode)
		if got != want || got == first {
			t.Errorf("%s changed: SourceHash = %s, want %s (a fresh store's), not %s", tc.name, got, want, first)
		}
	}
}

// storeContent keeps body in the context store through open (a Store's or
// a Batch's NewWriter), as a build's context transfer does, and returns
// its digest.
func storeContent(t testing.TB, open func(digest.Digest, int64) (*buildctx.Writer, error), body string) digest.Digest {
	t.Helper()
	d := digest.FromString(body)
	w, err := open(d, int64(len(body)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(w, body); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	return d
}
