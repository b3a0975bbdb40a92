package parity

import (
	"archive/tar"
	"bytes"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The suite's own parts, checked without Docker or Strata.

func TestParseCase(t *testing.T) {
	c, err := parseCase("TestX", []byte(`What it is about.
fail: (?i)boom
arg: A=1
secret: tok "s3 cret"
known: a reason
tar: a.tar file x 0640 7:8 "hi there"
check: file /x "a b"
rebuild: edit foo "bye" different
-- Dockerfile --
FROM busybox
-- dir/f --
f
`))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Fail.MatchString("BOOM") || !cmp.Equal(c.BuildArgs, []string{"A=1"}) {
		t.Errorf("fail %v, args %v", c.Fail, c.BuildArgs)
	}
	if want := [][2]string{{"tok", "s3 cret"}}; !cmp.Equal(c.Secrets, want) || c.Known != "a reason" {
		t.Errorf("secrets %q, known %q", c.Secrets, c.Known)
	}
	if want := []archiveEntry{{typ: "file", name: "x", body: "hi there", mode: 0o640, uid: 7, gid: 8}}; !cmp.Equal(c.Archives["a.tar"], want, cmp.AllowUnexported(archiveEntry{})) {
		t.Errorf("archive %+v, want %+v", c.Archives["a.tar"], want)
	}
	if got := string(c.contextFile("Dockerfile", c.Files["Dockerfile"])); got != "FROM "+baseTag+"\n" {
		t.Errorf("Dockerfile written as %q", got)
	}
	if got := string(c.Files["dir/f"]); got != "f\n" {
		t.Errorf("dir/f = %q", got)
	}
	if _, err := parseCase("TestY", []byte("no Dockerfile\n-- other --\n")); err == nil {
		t.Error("a case without a Dockerfile parsed")
	}
}

func TestFields(t *testing.T) {
	got := fields(`edit Dockerfile "FROM a\n\tRUN \"x\"" same`)
	want := []string{"edit", "Dockerfile", "FROM a\n\tRUN \"x\"", "same"}
	if !cmp.Equal(got, want) {
		t.Errorf("fields = %q, want %q", got, want)
	}
}

func TestApplyLayerAndDiff(t *testing.T) {
	layer := func(entries ...*tar.Header) []byte {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, h := range entries {
			tw.WriteHeader(h)
		}
		tw.Close()
		return buf.Bytes()
	}
	files := map[string]string{}
	applyLayer(t, files, bytes.NewReader(layer(
		&tar.Header{Name: "a/", Typeflag: tar.TypeDir, Mode: 0o755},
		&tar.Header{Name: "a/b", Typeflag: tar.TypeReg, Mode: 0o644},
		&tar.Header{Name: "c", Typeflag: tar.TypeSymlink, Linkname: "a", Mode: 0o777},
	)))
	base := map[string]string{}
	for k, v := range files {
		base[k] = v
	}
	applyLayer(t, files, bytes.NewReader(layer(
		&tar.Header{Name: "a/.wh.b", Typeflag: tar.TypeReg},
		&tar.Header{Name: "c", Typeflag: tar.TypeReg, Mode: 0o600, Uid: 1, Gid: 2},
	)))
	want := []string{
		"/a/b deleted",
		"/c file 0600 1:2 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
	}
	if diff := cmp.Diff(want, diffFiles(base, files)); diff != "" {
		t.Errorf("diffFiles (-want +got):\n%s", diff)
	}
}

func TestAllCached(t *testing.T) {
	cached := "Step 1/2 : FROM x\n ---> 1\nStep 2/2 : RUN y\n ---> Using cache\n ---> 2\n"
	if !allCached(cached) {
		t.Error("allCached = false for a build from the cache")
	}
	if allCached("Step 1/2 : FROM x\n ---> 1\nStep 2/2 : RUN y\n ---> Running in 3\n ---> 2\n") {
		t.Error("allCached = true for a build that ran a step")
	}
}

func TestErrorLine(t *testing.T) {
	for out, want := range map[string]string{
		"step output\nError: it broke\nmore output\n":   "Error: it broke",
		"The command 'x' returned a non-zero code: 1\n": "The command 'x' returned a non-zero code: 1",
	} {
		if got := errorLine(out); got != want {
			t.Errorf("errorLine(%q) = %q, want %q", out, got, want)
		}
	}
}

func TestBuiltImages(t *testing.T) {
	out := "Step 1/3 : FROM base\n ---> aaaaaaaaaaaa\nStep 2/3 : RUN x\n ---> Running in 0123456789ab\n" +
		"Removing intermediate container 0123456789ab\n ---> bbbbbbbbbbbb\nStep 3/3 : COPY a b\n ---> Using cache\n ---> cccccccccccc\n"
	if got, want := builtImages(out), []string{"bbbbbbbbbbbb", "cccccccccccc"}; !cmp.Equal(got, want) {
		t.Errorf("builtImages = %q, want %q (never the base's)", got, want)
	}
}
