package copier

import (
	"errors"
	"io/fs"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/services/builder/internal/buildctx"
	"github.com/strata-build/strata/services/builder/internal/plan"
)

// Both ways of copying take an entry's destination from targets: a
// directory's entries below the destination, a file at the destination or
// inside it when it is a directory.
func TestTargets(t *testing.T) {
	file := func(p string) *builderv1.FileEntry {
		return &builderv1.FileEntry{Path: p, Mode: buildctx.UnixMode(0o644), Digest: string(digest.FromString(p))}
	}
	bctx, err := buildctx.New([]*builderv1.FileEntry{
		{Path: "app", Mode: buildctx.UnixMode(fs.ModeDir | 0o755)}, file("app/a"),
		{Path: "app/sub", Mode: buildctx.UnixMode(fs.ModeDir | 0o700)}, file("app/sub/b"), file("one.txt"),
	})
	if err != nil {
		t.Fatal(err)
	}
	source := func(p string) plan.Source {
		e, err := bctx.Resolve(p)
		if err != nil {
			t.Fatal(err)
		}
		return plan.Source{Src: p, Entry: e}
	}
	dsts := func(ts []target) []string {
		var out []string
		for _, t := range ts {
			out = append(out, t.dst)
		}
		return out
	}
	isDir, notDir := func() (bool, error) { return true, nil }, func() (bool, error) { return false, nil }
	for _, tc := range []struct {
		name      string
		cp        plan.Copy
		src       string
		destIsDir func() (bool, error)
		want      []string
	}{
		{"directory", plan.Copy{Dest: "/srv"}, "app", notDir, []string{"/srv/a", "/srv/sub", "/srv/sub/b"}},
		{"file to a name", plan.Copy{Dest: "/srv/x"}, "one.txt", notDir, []string{"/srv/x"}},
		{"file into an existing directory", plan.Copy{Dest: "/etc"}, "one.txt", isDir, []string{"/etc/one.txt"}},
		{"file into a directory by its slash", plan.Copy{Dest: "/new/", DestDir: true}, "one.txt", nil, []string{"/new/one.txt"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts, err := targets(bctx, &tc.cp, source(tc.src), tc.destIsDir)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, dsts(ts)); diff != "" {
				t.Errorf("targets (-want +got):\n%s", diff)
			}
		})
	}
	wantErr := errors.New("stat failed")
	if _, err := targets(bctx, &plan.Copy{Dest: "/x"}, source("one.txt"), func() (bool, error) { return false, wantErr }); !errors.Is(err, wantErr) {
		t.Errorf("targets with a failing lookup = %v, want %v", err, wantErr)
	}
}
