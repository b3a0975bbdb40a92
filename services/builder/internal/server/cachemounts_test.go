package server

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/cachemount"
)

func TestCacheMountRPCs(t *testing.T) {
	ctx := context.Background()
	store, err := cachemount.New(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	dir, release, err := store.Acquire(ctx, cachemount.Spec{ID: "gomod", Sharing: cachemount.Shared})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), make([]byte, 42), 0o644); err != nil {
		t.Fatal(err)
	}
	release()
	s := New(nil, nil, nil, store)

	list, err := s.ListCacheMounts(ctx, &builderv1.ListCacheMountsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if ms := list.GetCacheMounts(); len(ms) != 1 || ms[0].GetId() != "gomod" || ms[0].GetSize() != 42 || ms[0].GetLastUsed() == nil || list.GetTotalSize() != 42 {
		t.Errorf("ListCacheMounts = %v, want gomod of 42 bytes", list)
	}

	for _, req := range []*builderv1.PruneCacheMountsRequest{
		{KeepBytes: -1},
		{UnusedFor: durationpb.New(-time.Hour)},
		{UnusedFor: &durationpb.Duration{Seconds: 1, Nanos: -1}},
	} {
		if _, err := s.PruneCacheMounts(ctx, req); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("PruneCacheMounts(%v) = %v, want INVALID_ARGUMENT", req, err)
		}
	}
	if list, _ := s.ListCacheMounts(ctx, &builderv1.ListCacheMountsRequest{}); len(list.GetCacheMounts()) != 1 {
		t.Fatalf("a refused prune removed cache mounts: %v", list)
	}
	pruned, err := s.PruneCacheMounts(ctx, &builderv1.PruneCacheMountsRequest{})
	if err != nil || len(pruned.GetRemoved()) != 1 || pruned.GetSpaceReclaimed() != 42 {
		t.Errorf("PruneCacheMounts = %v, %v; want gomod removed, 42 bytes", pruned, err)
	}

	bare := New(nil, nil, nil, nil)
	if _, err := bare.ListCacheMounts(ctx, &builderv1.ListCacheMountsRequest{}); !errors.Is(err, errdefs.ErrUnimplemented) {
		t.Errorf("ListCacheMounts without a store = %v, want UNIMPLEMENTED", err)
	}
	if _, err := bare.PruneCacheMounts(ctx, &builderv1.PruneCacheMountsRequest{}); !errors.Is(err, errdefs.ErrUnimplemented) {
		t.Errorf("PruneCacheMounts without a store = %v, want UNIMPLEMENTED", err)
	}
}
