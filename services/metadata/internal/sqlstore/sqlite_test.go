package sqlstore

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/strata-build/strata/services/metadata/internal/image"
	"github.com/strata-build/strata/services/metadata/internal/image/imagetest"
)

func newSQLite(t *testing.T, path string) *DB {
	t.Helper()
	db, err := OpenSQLite(context.Background(), path, testLogger(t))
	if err != nil {
		t.Fatalf("OpenSQLite(%s) = %v", path, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestSQLite(t *testing.T) {
	imagetest.TestStore(t, func(t *testing.T, now func() time.Time) image.Store {
		return image.New(newSQLite(t, filepath.Join(t.TempDir(), "metadata.db")), image.Options{Now: now, EventPoll: 20 * time.Millisecond})
	})
}
