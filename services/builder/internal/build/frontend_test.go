package build

import (
	"testing"

	"github.com/strata-build/strata/lib/errdefs"
)

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
