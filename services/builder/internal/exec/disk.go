package exec

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/plan"
)

// noSpace replaces an error a full disk caused (ENOSPC, EDQUOT: an unpack,
// a copy, a layer written) with RESOURCE_EXHAUSTED naming the step (st, if
// known) but no path: the original names the builder's state directory,
// which is the operator's business, not the client's, so it goes to the
// builder's log. The sandbox's own disk limits (--step-disk,
// --min-free-disk) stop most steps before this.
func (r *run) noSpace(ctx context.Context, st *plan.Step, err error) error {
	if !errors.Is(err, syscall.ENOSPC) && !errors.Is(err, syscall.EDQUOT) {
		return err
	}
	where := ""
	if st != nil {
		where = fmt.Sprintf("Dockerfile:%d: step %d: ", st.Line, st.Number)
	}
	if r.d.Log != nil {
		r.d.Log.WarnContext(ctx, "a build ran out of disk space", "error", err)
	}
	return errdefs.ResourceExhausted("%sthe builder ran out of disk space (no space left on device); try again later (builder flags --min-free-disk, --step-disk)", where).
		WithReason("BUILDER_DISK_FULL")
}
