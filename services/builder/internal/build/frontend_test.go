package build

import (
	"testing"

	"github.com/strata-build/strata/lib/errdefs"
)

// BuildKit's automatic platform args: usable in FROM, and in a stage once
// an ARG declares them, when RUN sees them and its history row names them.
func TestPlatformArgsReachRun(t *testing.T) {
	e := newRuncEnv(t)
	df := `ARG ARCH=$TARGETARCH
FROM --platform=$BUILDPLATFORM busybox
RUN echo "[$TARGETPLATFORM]" > /before
ARG TARGETPLATFORM
ARG BUILDOS ARCH
RUN echo $TARGETPLATFORM $BUILDOS $ARCH > /p
`
	res, _ := e.mustBuild(df, nil)
	img := e.image(res.ImageID)
	files := e.files(img)
	for path, want := range map[string]string{
		"before": "-rw-r--r-- 0:0 []\n",
		"p":      "-rw-r--r-- 0:0 linux/amd64 linux amd64\n",
	} {
		if got := files[path]; got != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}
	h := history(img)
	if got, want := h[len(h)-1], "|3 ARCH=amd64 BUILDOS=linux TARGETPLATFORM=linux/amd64 /bin/sh -c echo $TARGETPLATFORM $BUILDOS $ARCH > /p"; got != want {
		t.Errorf("history of the last RUN = %q, want %q", got, want)
	}
}

func TestSyntaxDirective(t *testing.T) {
	e := newEnv(t)
	e.importBase("busybox:latest", busyboxLike())
	if _, _, err := e.build("# syntax=docker/dockerfile:1.7-labs\nFROM busybox\nRUN touch /x\n", nil); err != nil {
		t.Errorf("syntax=docker/dockerfile:1.7-labs: %v", err)
	}
	_, _, err := e.build("# syntax=foo/bar:1\nFROM busybox\nRUN touch /x\n", nil)
	want := `Dockerfile:1: the syntax directive names frontend image "foo/bar:1"; this builder has only its own Dockerfile frontend (docker/dockerfile:1)`
	if !errdefs.IsInvalidArgument(err) || err.Error() != want {
		t.Errorf("syntax=foo/bar:1: err = %v, want INVALID_ARGUMENT %q", err, want)
	}
}
