package exec

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"syscall"
	"testing"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/plan"
)

func TestNoSpaceNamesNoHostPath(t *testing.T) {
	const host = "/var/lib/strata-builder/snapshots/active/0123/merged/app/big"
	st := &plan.Step{Line: 3, Number: 2}
	r := &run{}
	for _, tc := range []struct {
		name string
		st   *plan.Step
		err  error
		want string
	}{
		{"write", st, fmt.Errorf("Dockerfile:3: COPY: %w", &fs.PathError{Op: "write", Path: host, Err: syscall.ENOSPC}), "Dockerfile:3: step 2: the builder ran out of disk space"},
		{"quota", nil, fmt.Errorf("unpacking layer into %s: %w", host, syscall.EDQUOT), "the builder ran out of disk space"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := r.noSpace(context.Background(), tc.st, tc.err)
			if !errdefs.IsResourceExhausted(err) {
				t.Fatalf("noSpace(%v) = %v, want RESOURCE_EXHAUSTED", tc.err, err)
			}
			if msg := err.Error(); strings.Contains(msg, "/var/lib") || !strings.Contains(msg, tc.want) || !strings.Contains(msg, "--min-free-disk") {
				t.Errorf("noSpace(%v) = %q, want %q, the flag and no host path", tc.err, msg, tc.want)
			}
		})
	}
	other := errors.New("something else")
	if err := r.noSpace(context.Background(), st, other); err != other {
		t.Errorf("noSpace(%v) = %v, want it unchanged", other, err)
	}
}
