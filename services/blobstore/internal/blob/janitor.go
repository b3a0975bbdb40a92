package blob

import (
	"context"
	"log/slog"
	"time"
)

// RunJanitor discards, every interval, the unfinished uploads that made no
// progress for maxAge, until ctx is done. Failures are logged and retried at
// the next tick: a backend that is down now may be back then.
func RunJanitor(ctx context.Context, s Store, maxAge, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		n, err := s.CleanUploads(ctx, time.Now().Add(-maxAge))
		switch {
		case err != nil && ctx.Err() == nil:
			log.WarnContext(ctx, "cleaning abandoned uploads failed", "error", err.Error())
		case n > 0:
			log.InfoContext(ctx, "discarded abandoned uploads", "count", n, "max_age", maxAge.String())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
