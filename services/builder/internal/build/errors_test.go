package build

import (
	"slices"
	"testing"

	"google.golang.org/grpc/codes"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/buildctx"
)

// vocabulary is the design's error vocabulary (DESIGN.md, Errors), and
// the codes a build stopped by its caller ends with.
var vocabulary = []codes.Code{codes.NotFound, codes.AlreadyExists, codes.InvalidArgument, codes.FailedPrecondition,
	codes.Unavailable, codes.ResourceExhausted, codes.Canceled, codes.DeadlineExceeded}

// No internal condition reaches a client as UNKNOWN: every way a build
// fails here carries a code of the vocabulary, the one the cause calls for.
func TestBuildErrorsCarryTheDesignsCodes(t *testing.T) {
	e := newEnv(t)
	e.importBase("busybox:latest", busyboxLike())
	files := e.context([]ctxFile{
		{path: "Dockerfile", body: "x"}, {path: "f", body: "f\n"}, {path: "dir", dir: true, mode: 0o755},
		{path: "dir/a", body: "a\n"}, {path: "link", link: "/nowhere"},
	})
	ghost, err := buildctx.New([]*builderv1.FileEntry{{Path: "ghost", Mode: buildctx.UnixMode(0o644), Size: 5, Digest: "sha256:ead6ef03d61ee60c533d6d450c50a1e559a8a37f6b796a4094cd0dac6b744428"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, dockerfile string
		ctx              *buildctx.Context
		code             int // exit code of RUN
		want             codes.Code
	}{
		{"a parse error", "FROM busybox\nCOPY\n", files, 0, codes.InvalidArgument},
		{"an unknown instruction", "FROM busybox\nFOO bar\n", files, 0, codes.InvalidArgument},
		{"no FROM", "RUN true\n", files, 0, codes.InvalidArgument},
		{"an unknown base image", "FROM nosuchimage:here\n", files, 0, codes.NotFound},
		{"a missing COPY source", "FROM busybox\nCOPY nothere /x\n", files, 0, codes.NotFound},
		{"a wildcard matching nothing", "FROM busybox\nCOPY *.none /x/\n", files, 0, codes.InvalidArgument},
		{"a source outside the context", "FROM busybox\nCOPY ../f /x\n", files, 0, codes.InvalidArgument},
		{"several sources to a file", "FROM busybox\nCOPY f dir /x\n", files, 0, codes.InvalidArgument},
		{"an unknown --chown user", "FROM busybox\nCOPY --chown=nobody-here f /x\n", files, 0, codes.InvalidArgument},
		{"an unknown --from stage", "FROM busybox\nCOPY --from=nostage /f /x\n", files, 0, codes.NotFound},
		{"context content that never came", "FROM busybox\nCOPY ghost /srv/\n", ghost, 0, codes.NotFound},
		{"a RUN that fails", "FROM busybox\nRUN exit 3\n", files, 3, codes.InvalidArgument},
		{"VOLUME over a file", "FROM busybox\nCOPY f /foo\nVOLUME /foo\n", files, 0, codes.InvalidArgument},
		{"a bad EXPOSE", "FROM busybox\nEXPOSE notaport\n", files, 0, codes.InvalidArgument},
		{"a bad STOPSIGNAL", "FROM busybox\nSTOPSIGNAL NOSIG\n", files, 0, codes.InvalidArgument},
		{"an unknown target", "FROM busybox AS a\n", files, 0, codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.sandbox.code = tc.code
			defer func() { e.sandbox.code = 0 }()
			var mods []func(*Request)
			if tc.name == "an unknown target" {
				mods = append(mods, func(r *Request) { r.Target = "nosuchstage" })
			}
			_, _, err := e.build(tc.dockerfile, tc.ctx, mods...)
			if err == nil {
				t.Fatal("the build succeeded")
			}
			got := errdefs.Code(err)
			if !slices.Contains(vocabulary, got) {
				t.Fatalf("build = %v: code %v, which is not the design's vocabulary", err, got)
			}
			if got != tc.want {
				t.Errorf("build = %v: code %v, want %v", err, got, tc.want)
			}
		})
	}
}
