package build

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/lib/errdefs"
)

// copyFlagsContext is the context the COPY flag tests copy from.
func copyFlagsContext() []ctxFile {
	return []ctxFile{
		{path: "src", dir: true, mode: 0o755},
		{path: "src/main.go", body: "package main\n"},
		{path: "src/notes.md", body: "notes\n"},
		{path: "src/lib", dir: true, mode: 0o755},
		{path: "src/lib/lib.go", body: "package lib\n"},
		{path: "src/lib/README.md", body: "readme\n"},
		{path: "src/docs", dir: true, mode: 0o700},
		{path: "src/docs/a.md", body: "a\n"},
		{path: "top.md", body: "top\n"},
	}
}

// checkFiles fails the test for each path of present the image's files
// lack, and each of absent they hold.
func checkFiles(t *testing.T, got map[string]string, present, absent []string) {
	t.Helper()
	for _, p := range present {
		if _, ok := got[p]; !ok {
			t.Errorf("%s missing", p)
		}
	}
	for _, p := range absent {
		if _, ok := got[p]; ok {
			t.Errorf("%s copied, want it left out", p)
		}
	}
}

// COPY and ADD --exclude leave out what the patterns match below each
// source (never the source itself), from the context, both ways a COPY
// takes, and from a stage.
func TestCopyExclude(t *testing.T) {
	for _, intoMounts := range []bool{false, true} {
		e := newEnv(t)
		e.b.copyIntoMounts = intoMounts
		e.importBase("busybox:latest", busyboxLike())
		res, _ := e.mustBuild(`FROM busybox AS s
COPY --exclude=*.md --exclude=docs src /a/
ADD --exclude=**/*.go src /b/
COPY --exclude=*.md *.md /c/
COPY --exclude=docs --exclude=!docs/a.md --exclude=lib/*.md src /d
FROM s
COPY --from=s --exclude=lib /a /e
`, e.context(copyFlagsContext()))
		got := e.files(e.image(res.ImageID))
		checkFiles(t, got,
			[]string{"a/main.go", "a/lib/lib.go", "a/lib/README.md", "b/notes.md", "b/lib/README.md", "b/docs/a.md",
				"c/top.md", "d/main.go", "d/notes.md", "d/docs/a.md", "d/lib/lib.go", "e/main.go"},
			[]string{"a/notes.md", "a/docs", "b/main.go", "b/lib/lib.go", "d/lib/README.md", "e/lib"})
		if got["d/docs"][:10] != "drwx------" {
			t.Errorf("into mounts %v: d/docs = %q, want the source directory's mode (it holds a file a ! pattern keeps)", intoMounts, got["d/docs"])
		}
	}
}

// COPY --parents keeps the sources' directories relative to the context
// root, or to a "/./" in the source, from the context and from a stage.
func TestCopyParents(t *testing.T) {
	for _, intoMounts := range []bool{false, true} {
		e := newEnv(t)
		e.b.copyIntoMounts = intoMounts
		e.importBase("busybox:latest", busyboxLike())
		res, _ := e.mustBuild(`FROM busybox AS s
COPY --parents src/lib/lib.go top.md /a/
WORKDIR /w
COPY --parents src/*/*.md .
COPY --parents src/./lib /b
COPY --parents --exclude=**/*.md src/./docs src/./lib /c/
FROM s
COPY --from=s --parents /w/src/./docs /a/./src/lib /d/
`, e.context(copyFlagsContext()))
		got := e.files(e.image(res.ImageID))
		checkFiles(t, got,
			[]string{"a/src/lib/lib.go", "a/top.md", "w/src/lib/README.md", "w/src/docs/a.md", "b/lib/lib.go", "b/lib/README.md",
				"c/lib/lib.go", "d/docs/a.md", "d/src/lib/lib.go"},
			[]string{"a/src/main.go", "a/src/lib/README.md", "w/src/main.go", "w/src/notes.md", "w/src/lib/lib.go", "b/src", "b/main.go",
				"c/docs/a.md", "c/lib/README.md", "d/w"})
		if got["w/src/docs"][:10] != "drwx------" {
			t.Errorf("into mounts %v: w/src/docs = %q, want the source directory's mode", intoMounts, got["w/src/docs"])
		}
	}
}

// --chmod takes chmod(1)'s symbolic modes, applied to each entry's own
// mode, as BuildKit does.
func TestCopyChmodSymbolic(t *testing.T) {
	for _, intoMounts := range []bool{false, true} {
		e := newEnv(t)
		e.b.copyIntoMounts = intoMounts
		e.importBase("busybox:latest", busyboxLike())
		files := copyFlagsContext()
		files = append(files, ctxFile{path: "run.sh", body: "#!/bin/sh\n", mode: 0o750})
		res, _ := e.mustBuild(`FROM busybox AS s
COPY --chmod=u+x,go-w top.md run.sh /a/
COPY --chmod=a=rX src /b
FROM s
COPY --from=s --chmod=o+w /a/run.sh /c
`, e.context(files))
		got := e.files(e.image(res.ImageID))
		for p, want := range map[string]string{
			"a/top.md": "-rwxr--r--", "a/run.sh": "-rwxr-x---",
			"b/main.go": "-r--r--r--", "b/docs": "dr-xr-xr-x",
			"c": "-rwxr-x-w-",
		} {
			if v := got[p]; len(v) < 10 || v[:10] != want {
				t.Errorf("into mounts %v: %s = %q, want mode %s", intoMounts, p, v, want)
			}
		}
	}
}

// ADD --checksum verifies a download: a mismatch fails naming the URL and
// both digests; BuildKit's refusals for other sources hold.
func TestAddChecksum(t *testing.T) {
	e := newEnv(t)
	e.importBase("busybox:latest", busyboxLike())
	const body = "#!/bin/sh\necho tool\n"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) }))
	defer srv.Close()
	e.b.URLPolicy.AllowPrivate = true
	url := srv.URL + "/tool.sh"
	good := digest.FromString(body)
	res, _ := e.mustBuild("FROM busybox\nADD --checksum="+good.String()+" "+url+" /tool.sh\n", nil)
	if got := e.files(e.image(res.ImageID))["tool.sh"]; !strings.HasSuffix(got, body) {
		t.Errorf("tool.sh = %q, want the download", got)
	}
	bad := digest.FromString("other")
	_, _, err := e.build("FROM busybox\nADD --checksum="+bad.String()+" "+url+" /tool.sh\n", nil)
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), url) ||
		!strings.Contains(err.Error(), good.String()) || !strings.Contains(err.Error(), bad.String()) {
		t.Errorf("ADD with a wrong checksum: err = %v, want FAILED_PRECONDITION naming the URL and both digests", err)
	}
	for df, want := range map[string]string{
		"ADD --checksum=" + good.String() + " top.md /x":                    "checksum requires HTTP(S) or Git sources",
		"ADD --checksum=" + good.String() + " " + url + " " + url + " /x/":  "checksum can't be specified for multiple sources",
		"ADD --checksum=sha256:xyz " + url + " /x":                          "--checksum=sha256:xyz",
		"ADD --checksum=md5:" + strings.Repeat("0", 32) + " " + url + " /x": "--checksum=md5:" + strings.Repeat("0", 32) + ": want a sha256, sha384 or sha512 digest",
	} {
		_, _, err := e.build("FROM busybox\n"+df+"\n", e.context(copyFlagsContext()))
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want INVALID_ARGUMENT saying %q", df, err, want)
		}
	}
}

// COPY --link makes its layer on its own: its files land as in an empty
// root (a symlink or a directory below does not redirect them), and the
// layer holds only what the COPY made.
func TestCopyLink(t *testing.T) {
	for _, intoMounts := range []bool{false, true} {
		e := newEnv(t)
		e.b.copyIntoMounts = intoMounts
		e.importBase("busybox:latest", append(busyboxLike(),
			tarFile{name: "data/", dir: true, mode: 0o755}, tarFile{name: "dst/", dir: true, mode: 0o755},
			tarFile{name: "app", link: "/data", mode: 0o777}))
		res, _ := e.mustBuild(`FROM busybox
COPY --link --chown=1000:1000 top.md /app/
COPY --link src/lib /dst
`, e.context(copyFlagsContext()))
		img := e.image(res.ImageID)
		got := e.files(img)
		checkFiles(t, got, []string{"app/top.md", "dst/lib.go", "dst/README.md"}, []string{"data/top.md", "dst/lib/lib.go"})
		if v := got["app/top.md"]; len(v) < 21 || v[11:20] != "1000:1000" {
			t.Errorf("into mounts %v: app/top.md = %q, want it owned by 1000:1000", intoMounts, v)
		}
	}
	e := newEnv(t)
	e.importBase("busybox:latest", busyboxLike())
	_, _, err := e.build("FROM busybox\nCOPY --link --chown=app top.md /x\n", e.context(copyFlagsContext()))
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "can't be resolved when used with --link") {
		t.Errorf("COPY --link --chown=app: err = %v, want BuildKit's refusal", err)
	}
}

// ADD --checksum takes sha256, sha384 and sha512 digests, as BuildKit does,
// and keys the step on the checksum, not the download: a build its cache
// serves does not fetch the URL (here, a server that now fails), while an
// ADD without --checksum downloads again, as Docker's classic ADD does.
func TestAddChecksumIsNotFetchedOnACacheHit(t *testing.T) {
	e := newEnv(t)
	e.importBase("busybox:latest", busyboxLike())
	e.b.URLPolicy.AllowPrivate = true
	const body = "#!/bin/sh\necho tool\n"
	var failing atomic.Bool
	var fetches atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		if failing.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, body)
	}))
	defer srv.Close()
	url := srv.URL + "/tool.sh"
	for _, algo := range []digest.Algorithm{digest.SHA256, digest.SHA384, digest.SHA512} {
		t.Run(string(algo), func(t *testing.T) {
			failing.Store(false)
			sum := algo.FromString(body)
			df := "FROM busybox\nADD --checksum=" + sum.String() + " " + url + " /tool.sh\nRUN touch x\n"
			before := fetches.Load()
			res, rec := e.mustBuild(df, nil)
			if n := fetches.Load() - before; n != 1 || rec.cached() != 0 {
				t.Errorf("first build: %d downloads, %d steps cached; want 1 and none", n, rec.cached())
			}
			if got := e.files(e.image(res.ImageID))["tool.sh"]; got != "-rw------- 0:0 "+body {
				t.Errorf("tool.sh = %q, want the download, mode 0600", got)
			}

			failing.Store(true)
			before = fetches.Load()
			again, rec := e.mustBuild(df, nil)
			if n := fetches.Load() - before; n != 0 || rec.cached() != 2 || again.ImageID != res.ImageID {
				t.Errorf("rebuild: %d downloads, %d steps cached, image %s; want none, 2 and %s", n, rec.cached(), again.ImageID, res.ImageID)
			}

			// On a miss the step downloads, and the server's answer fails it.
			_, _, err := e.build(df, nil, noCache)
			if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "500") || !strings.Contains(err.Error(), "Dockerfile:2") {
				t.Errorf("--no-cache build over the failing server: err = %v, want FAILED_PRECONDITION naming line 2 and the 500", err)
			}
		})
	}

	// A mismatch found when the step runs names the URL and both digests.
	failing.Store(false)
	bad := digest.SHA512.FromString("other")
	_, _, err := e.build("FROM busybox\nADD --checksum="+bad.String()+" "+url+" /tool.sh\n", nil)
	good := digest.SHA512.FromString(body)
	var de *errdefs.Error
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !errors.As(err, &de) || de.Reason() != "CHECKSUM_MISMATCH" ||
		!strings.Contains(err.Error(), url) || !strings.Contains(err.Error(), good.String()) || !strings.Contains(err.Error(), bad.String()) {
		t.Errorf("ADD with a wrong sha512 checksum: err = %v, want FAILED_PRECONDITION CHECKSUM_MISMATCH naming the URL and both digests", err)
	}

	// Without --checksum the URL is fetched to key the step, every build.
	df := "FROM busybox\nADD " + url + " /tool.sh\n"
	e.mustBuild(df, nil)
	failing.Store(true)
	if _, _, err := e.build(df, nil); err == nil || !strings.Contains(err.Error(), "500") {
		t.Errorf("ADD without --checksum over the failing server: err = %v, want the download's failure", err)
	}
}
