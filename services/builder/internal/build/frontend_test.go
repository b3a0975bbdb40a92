package build

import (
	"context"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/errdefs"
	planexec "github.com/strata-build/strata/services/builder/internal/exec"
	"github.com/strata-build/strata/services/builder/internal/sandbox"
	"github.com/strata-build/strata/services/builder/internal/stepnet"
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

// RUN --network=none runs the step with loopback only, whatever the
// build's network; host needs the builder's network.host entitlement.
func TestRunNetworkFlag(t *testing.T) {
	e := newRuncEnv(t)
	const ifs = `cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' | sort`
	res, _ := e.mustBuild("FROM busybox\nRUN --network=none "+ifs+" > /none\nRUN --network=default --security=sandbox echo ok > /default\n", nil)
	files := e.files(e.image(res.ImageID))
	if got, want := files["none"], "-rw-r--r-- 0:0 lo\n"; got != want {
		t.Errorf("interfaces of a RUN --network=none = %q, want %q", got, want)
	}
	if got, want := files["default"], "-rw-r--r-- 0:0 ok\n"; got != want {
		t.Errorf("RUN --network=default wrote %q, want %q", got, want)
	}

	_, _, err := e.build("FROM busybox\nRUN --network=host echo\n", nil)
	if !errdefs.IsFailedPrecondition(err) || !strings.HasPrefix(err.Error(), "Dockerfile:2: RUN --network=host: ") || !strings.Contains(err.Error(), "network.host") {
		t.Errorf("RUN --network=host without the entitlement: err = %v, want FAILED_PRECONDITION naming line 2 and the entitlement", err)
	}
	_, _, err = e.build("FROM busybox\nRUN --security=insecure echo\n", nil)
	if !errdefs.IsInvalidArgument(err) || !strings.HasPrefix(err.Error(), "Dockerfile:2: RUN --security=insecure") {
		t.Errorf("RUN --security=insecure: err = %v, want INVALID_ARGUMENT naming line 2", err)
	}
}

// With the network.host entitlement, RUN --network=host runs in the
// builder's network namespace: it sees the host's interfaces (those there
// before and after the build: other builds add and remove theirs).
func TestRunNetworkHostWithTheEntitlement(t *testing.T) {
	e := newEnv(t)
	r, err := sandbox.New(context.Background(), filepath.Join(t.TempDir(), "sandbox"), sandbox.Options{Network: stepnet.Options{AllowHost: true}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(context.Background()) })
	e.b.Sandbox = planexec.RuncSandbox(r)
	e.importBase("busybox:latest", busybox(t))
	before := hostInterfaces(t)
	res, _ := e.mustBuild("FROM busybox\nRUN --network=host cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' > /host\n", nil)
	after := hostInterfaces(t)
	seen := strings.Fields(strings.TrimPrefix(e.files(e.image(res.ImageID))["host"], "-rw-r--r-- 0:0 "))
	stable := 0
	for _, name := range before {
		if !slices.Contains(after, name) {
			continue
		}
		stable++
		if !slices.Contains(seen, name) {
			t.Errorf("RUN --network=host does not see the host's interface %s: it sees %q", name, seen)
		}
	}
	if stable < 2 {
		t.Logf("the host has only loopback: nothing tells its namespace from an empty one")
	}
}

func hostInterfaces(t *testing.T) []string {
	t.Helper()
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range ifaces {
		names = append(names, i.Name)
	}
	return names
}

// A build on the host network keeps a RUN --network=none offline, and a
// build with --network none does not refuse it.
func TestRunNetworkNoneInAHostBuild(t *testing.T) {
	e := newEnv(t)
	e.importBase("busybox:latest", busyboxLike())
	_, _, err := e.build("FROM busybox\nRUN --network=none touch /x\nRUN touch /y\n", nil, func(r *Request) {
		r.Network = builderv1.NetworkMode_NETWORK_MODE_HOST
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(e.sandbox.runs) != 2 {
		t.Fatalf("%d runs, want 2", len(e.sandbox.runs))
	}
	if got := e.sandbox.runs[0].Network; got != builderv1.NetworkMode_NETWORK_MODE_NONE {
		t.Errorf("RUN --network=none ran on %v", got)
	}
	if got := e.sandbox.runs[1].Network; got != builderv1.NetworkMode_NETWORK_MODE_HOST {
		t.Errorf("RUN ran on %v, want the build's host network", got)
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
