package sqlstore

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strata-build/strata/lib/harness"
	"github.com/strata-build/strata/services/metadata/internal/image"
	"github.com/strata-build/strata/services/metadata/internal/image/imagetest"
)

var dbSeq atomic.Int64

func newPostgres(t *testing.T, dsn string) *DB {
	t.Helper()
	db, err := OpenPostgres(context.Background(), dsn, testLogger(t))
	if err != nil {
		t.Fatalf("OpenPostgres = %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestPostgres(t *testing.T) {
	pg := harness.StartPostgres(t)
	imagetest.TestStore(t, func(t *testing.T, now func() time.Time) image.Store {
		dsn := pg.CreateDatabase(t, fmt.Sprintf("conformance%d", dbSeq.Add(1)))
		return image.New(newPostgres(t, dsn), image.Options{Now: now, EventPoll: 20 * time.Millisecond})
	})
}

// TestPostgresReplicaEvents runs concurrent writers through two replicas on
// one database: a watcher of one receives every event of both, once.
func TestPostgresReplicaEvents(t *testing.T) {
	pg := harness.StartPostgres(t)
	c := imagetest.NewClock()
	a := image.New(newPostgres(t, pg.DSN), image.Options{Now: c.Now, EventPoll: time.Minute})
	b := image.New(newPostgres(t, pg.DSN), image.Options{Now: c.Now, EventPoll: time.Minute})
	imagetest.EventsUnderConcurrentWrites(t, b, []image.Store{a, b}, c)
}
