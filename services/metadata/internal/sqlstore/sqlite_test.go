package sqlstore

import (
	"context"
	"path/filepath"
	"strings"
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

// TestSQLiteOneProcess: a SQLite file serves one store at a time; a second
// open fails naming the file, and succeeds once the first is closed.
func TestSQLiteOneProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "metadata.db")
	first, err := OpenSQLite(context.Background(), path, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	_, err = OpenSQLite(context.Background(), path, testLogger(t))
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "in use by another process") {
		t.Fatalf("second OpenSQLite(%s) = %v; want an error naming the file in use", path, err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	newSQLite(t, path)
}
