package build

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// A COPY the context-store fast path cannot write takes the general path:
// the build succeeds, and its layers are those copying into the mount makes.
func TestCopyFastPathFallsBackToTheGeneralPath(t *testing.T) {
	base := append(busyboxLike(),
		tarFile{name: "etc/conf.d/", dir: true, mode: 0o750},
		tarFile{name: "etc/conf.d/old", body: "old\n", mode: 0o640},
	)
	files := []ctxFile{
		{path: "Dockerfile", body: "x", mtime: 1_600_000_000_000_000_000},
		{path: "foo", body: "foo\n", mtime: 1_600_000_001_000_000_000},
		{path: "bar", body: "bar\n", mtime: 1_600_000_002_000_000_000},
		{path: "a b.txt", body: "spaces\n", mtime: 1_600_000_003_000_000_000},
		{path: "dir", dir: true, mode: 0o755, mtime: 1_600_000_004_000_000_000},
		{path: "dir/x", body: "x\n", mtime: 1_600_000_005_000_000_000},
	}
	cases := []struct{ name, df string }{
		{"into an existing directory", "FROM busybox\nCOPY foo /etc/\nCOPY dir /etc/conf.d/\n"},
		{"several sources into one directory", "FROM busybox\nCOPY foo bar /etc/\nCOPY foo bar dir /new/\n"},
		{"variable sources", "FROM busybox\nARG SRC=foo\nENV DST=/srv/\nCOPY $SRC ${DST}\nCOPY ${SRC} bar $DST\n"},
		{"the Dockerfile", "FROM busybox\nCOPY Dockerfile /\nCOPY Dockerfile /etc/\n"},
		{"into the WORKDIR", "FROM busybox\nWORKDIR /app\nCOPY foo ./\nCOPY bar .\nCOPY dir ./\n"},
		{"into an existing WORKDIR", "FROM busybox\nWORKDIR /etc\nCOPY foo ./\nCOPY dir .\n"},
		{"JSON sources with spaces", "FROM busybox\nCOPY [\"a b.txt\", \"/x/\"]\nCOPY [\"a b.txt\", \"foo\", \"/etc/\"]\n"},
		{"twice to the same place", "FROM busybox\nCOPY foo /srv/\nCOPY foo /srv/\nCOPY dir /srv/\nCOPY dir /srv/\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var listings [2][][]string
			var sizes [2][]int64
			for i, general := range []bool{true, false} {
				e := newEnv(t)
				e.b.copyIntoMounts = general
				e.importBase("busybox:latest", base)
				res, _, err := e.build(tc.df, e.context(files))
				if err != nil {
					t.Fatalf("build (copy into mounts: %v): %v", general, err)
				}
				for _, l := range e.image(res.ImageID).Layers() {
					listings[i] = append(listings[i], e.layerListing(l))
					sizes[i] = append(sizes[i], l.DiffSize)
				}
			}
			if diff := cmp.Diff(listings[0], listings[1]); diff != "" {
				t.Errorf("layers (-copied into the mount +fast path):\n%s", diff)
			}
			if !slices.Equal(sizes[0], sizes[1]) {
				t.Errorf("diff sizes %v copied into the mount, %v fast path", sizes[0], sizes[1])
			}
		})
	}
}

// The sandbox runs a RUN step with the hostname of the container the
// image records.
func TestRunSeesTheRecordedContainersHostname(t *testing.T) {
	e := newEnv(t)
	e.importBase("busybox:latest", busyboxLike())
	res, _ := e.mustBuild("FROM busybox\nRUN touch x\n", nil)
	img := e.image(res.ImageID)
	if len(e.sandbox.runs) != 1 {
		t.Fatalf("%d RUN steps ran, want 1", len(e.sandbox.runs))
	}
	if got, want := e.sandbox.runs[0].Hostname, img.Config.Container[:12]; got != want {
		t.Errorf("RUN ran with hostname %q, the image records container %q", got, img.Config.Container)
	}
}
