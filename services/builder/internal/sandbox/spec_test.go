package sandbox

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/strata-build/strata/services/builder/internal/rootfs"
)

func TestStepMountsComeAfterTheDefaults(t *testing.T) {
	own := []specs.Mount{
		{Destination: "/root/.cache", Type: "bind", Source: "/state/cachemounts/x/data", Options: []string{"rbind", "rprivate"}},
		{Destination: "/etc/hosts", Type: "tmpfs", Source: "tmpfs"},
	}
	s := runtimeSpec(Process{RootFS: "/r", Args: []string{"true"}, Mounts: own}, rootfs.User{}, stepSpec{bundle: "/b", hostname: "h"})
	if len(s.Mounts) < len(own)+1 {
		t.Fatalf("Mounts = %v", s.Mounts)
	}
	// Last: a step's mount may cover a default one (runc mounts in order).
	if diff := cmp.Diff(own, s.Mounts[len(s.Mounts)-len(own):]); diff != "" {
		t.Errorf("the step's mounts are not last, in order (-want +got):\n%s", diff)
	}
}
