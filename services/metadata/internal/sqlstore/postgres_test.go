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

// TestPostgresCollectionLock: one replica at a time holds the collection
// lock; another waits for it or, without waiting, is told it is held; a
// replica whose connection ends lets go.
func TestPostgresCollectionLock(t *testing.T) {
	pg := harness.StartPostgres(t)
	a, b := newPostgres(t, pg.DSN), newPostgres(t, pg.DSN)
	ctx := context.Background()
	unlockA, held, err := a.LockCollection(ctx, false)
	if err != nil || !held {
		t.Fatalf("replica a: LockCollection = %v, %v; want held", held, err)
	}
	if _, held, err := b.LockCollection(ctx, false); err != nil || held {
		t.Fatalf("replica b while a collects: LockCollection(no wait) = %v, %v; want not held", held, err)
	}
	got := make(chan error, 1)
	go func() {
		unlock, held, err := b.LockCollection(ctx, true)
		if err == nil && !held {
			err = fmt.Errorf("LockCollection(wait) returned without the lock")
		}
		if err == nil {
			unlock()
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("replica b took the lock while a held it (err %v)", err)
	case <-time.After(200 * time.Millisecond):
	}
	unlockA()
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("replica b waiting for the lock: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("replica b did not get the lock after a let go")
	}
	wctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	unlockA, _, _ = a.LockCollection(ctx, true)
	if _, _, err := b.LockCollection(wctx, true); err == nil {
		t.Error("LockCollection(wait) with a context that ends returned no error")
	}
	unlockA()
}

// TestPostgresReplicasStartTogether: replicas opening a new database at
// once migrate it once, one after the other, and all start.
func TestPostgresReplicasStartTogether(t *testing.T) {
	pg := harness.StartPostgres(t)
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			db, err := OpenPostgres(context.Background(), pg.DSN, testLogger(t))
			if err == nil {
				db.Close()
			}
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Errorf("OpenPostgres beside other replicas = %v", err)
		}
	}
}
