package command

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
)

var (
	goBuild = &builderv1.CacheMount{Id: "/root/.cache/go-build", Size: 52_428_800, LastUsed: timestamppb.New(testNow.Add(-3 * time.Hour)), InUse: true}
	gomod   = &builderv1.CacheMount{Id: "gomod", Source: "image sha256:0123 /go/pkg", Size: 1_200_000, LastUsed: timestamppb.New(testNow.Add(-50 * time.Hour))}
)

func TestBuilderDuCommand(t *testing.T) {
	f := &fakeServices{cacheMounts: &builderv1.ListCacheMountsResponse{CacheMounts: []*builderv1.CacheMount{goBuild, gomod}, TotalSize: 53_628_800}}
	addr := f.serve(t)
	wantRun(t, run(t, addr, "", "builder", "du"), 0,
		"ID\t\t\tRECLAIMABLE\tSIZE\tLAST ACCESSED\n"+
			"/root/.cache/go-build\tfalse\t\t52.43MB\t3 hours ago\n"+
			"gomod\t\t\ttrue\t\t1.2MB\t2 days ago\n"+
			"\n"+
			"Reclaimable:\t1.2MB\n"+
			"Total:\t\t53.63MB\n", "")
	wantRun(t, run(t, addr, "", "builder", "du", "--verbose"), 0,
		"ID:\t\t/root/.cache/go-build\nReclaimable:\tfalse\nIn use:\t\ttrue\nSize:\t\t52.43MB\nLast used:\t3 hours ago\nType:\t\texec.cachemount\n\n"+
			"ID:\t\tgomod\nSource:\t\timage sha256:0123 /go/pkg\nReclaimable:\ttrue\nIn use:\t\tfalse\nSize:\t\t1.2MB\nLast used:\t2 days ago\nType:\t\texec.cachemount\n\n"+
			"Reclaimable:\t1.2MB\nTotal:\t\t53.63MB\n", "")
	f.cacheMounts = &builderv1.ListCacheMountsResponse{}
	wantRun(t, run(t, addr, "", "builder", "du"), 0, "Reclaimable:\t0B\nTotal:\t\t0B\n", "")
}

func TestBuilderPruneCommand(t *testing.T) {
	f := &fakeServices{pruneMounts: &builderv1.PruneCacheMountsResponse{Removed: []*builderv1.CacheMount{gomod}, SpaceReclaimed: 1_200_000}}
	addr := f.serve(t)
	// No answer is no: nothing is pruned.
	wantRun(t, run(t, addr, "n\n", "builder", "prune"), 0, builderPruneWarning+" [y/N] ", "")
	if len(f.requests) != 0 {
		t.Fatalf("prune answered no still called the service: %v", f.requests)
	}
	wantRun(t, run(t, addr, "y\n", "builder", "prune", "-a"), 0,
		builderPruneWarning+" [y/N] "+
			"ID\tRECLAIMABLE\tSIZE\tLAST ACCESSED\n"+
			"gomod\ttrue\t\t1.2MB\t2 days ago\n"+
			"Total:\t1.2MB\n", "")
	f.requests = nil
	f.pruneMounts = &builderv1.PruneCacheMountsResponse{}
	wantRun(t, run(t, addr, "", "builder", "prune", "-f", "--filter", "until=24h", "--filter", "id=gomod", "--keep-storage", "5GB"), 0, "Total:\t0B\n", "")
	want := &builderv1.PruneCacheMountsRequest{Ids: []string{"gomod"}, UnusedFor: durationpb.New(24 * time.Hour), KeepBytes: 5 << 30}
	if diff := cmp.Diff(want, f.requests[0], protocmp.Transform()); diff != "" {
		t.Errorf("PruneCacheMounts request (-want +got):\n%s", diff)
	}
	for _, args := range [][]string{
		{"--filter", "until=yesterday"},
		{"--filter", "type=regular"},
		{"--keep-storage", "lots"},
	} {
		r := run(t, addr, "", append([]string{"builder", "prune", "-f"}, args...)...)
		if r.code != 125 {
			t.Errorf("builder prune %v: exit %d (%q), want 125", args, r.code, r.errOut)
		}
	}
}
