package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// sqliteDialect serialises writers on one connection (SQLite allows one
// writer at a time; queueing in Go is cheaper than busy retries) and reads
// from a pool that WAL mode lets run beside the writer.
type sqliteDialect struct {
	write, read *sql.DB
	// checkpoints has one connection, which checkpoints the WAL.
	checkpoints *sql.DB
	log         *slog.Logger
	dirty       chan struct{} // a write committed since the last checkpoint
	cancel      context.CancelFunc
	done        chan struct{}
}

// checkpointInterval is how often, at most, the WAL is checkpointed while
// writes go on.
const checkpointInterval = 200 * time.Millisecond

// writerCheckpointPages is the size of the WAL, in pages, past which the
// writer checkpoints it itself after a commit: a backstop for when the
// background checkpoints fall behind (SQLite's default is 1000 pages).
const writerCheckpointPages = 16384

// OpenSQLite opens (creating it and its directory when needed) the SQLite
// database at path, in WAL mode, and applies the schema migrations.
func OpenSQLite(ctx context.Context, path string, log *slog.Logger) (*DB, error) {
	if path == "" {
		return nil, errors.New("a SQLite database path is required")
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("creating the directory of the SQLite database: %w", err)
		}
	}
	base := "file:" + (&url.URL{Path: path}).EscapedPath() +
		"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(0)" +
		// Reads through a memory map and a larger page cache: a list page
		// or an image lookup then makes no read system calls.
		"&_pragma=mmap_size(1073741824)&_pragma=cache_size(-32768)"
	// The writer leaves checkpoints to checkpoint (up to a backstop): they
	// write pages into the database file and sync it, which would hold up
	// the commit that ran into them and every writer queued behind it.
	write, err := sql.Open("sqlite", base+"&_txlock=immediate"+fmt.Sprintf("&_pragma=wal_autocheckpoint(%d)", writerCheckpointPages))
	if err != nil {
		return nil, err
	}
	write.SetMaxOpenConns(1)
	write.SetConnMaxIdleTime(0)
	read, err := sql.Open("sqlite", base+"&_pragma=query_only(1)")
	if err != nil {
		write.Close()
		return nil, err
	}
	checkpoints, err := sql.Open("sqlite", base)
	if err != nil {
		write.Close()
		read.Close()
		return nil, err
	}
	checkpoints.SetMaxOpenConns(1)
	n := 2 * runtime.GOMAXPROCS(0)
	if n < 4 {
		n = 4
	}
	read.SetMaxOpenConns(n)
	read.SetMaxIdleConns(n)
	cctx, cancel := context.WithCancel(context.Background())
	d := &sqliteDialect{write: write, read: read, checkpoints: checkpoints, log: log,
		dirty: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{})}
	go d.checkpoint(cctx)
	if err := write.PingContext(ctx); err != nil {
		d.close()
		return nil, fmt.Errorf("opening SQLite database %s: %w", path, err)
	}
	if err := migrate(ctx, d, nil); err != nil {
		d.close()
		return nil, fmt.Errorf("migrating SQLite database %s: %w", path, err)
	}
	return &DB{d: d, read: read, log: log}, nil
}

func (d *sqliteDialect) name() string { return "sqlite" }

func (d *sqliteDialect) writer() (*sql.DB, *sql.TxOptions) { return d.write, nil }

func (d *sqliteDialect) rowWriter() (*sql.DB, *sql.TxOptions) { return d.write, nil }

func (d *sqliteDialect) reader() (*sql.DB, *sql.TxOptions) { return d.read, nil }

func (d *sqliteDialect) driverPrepares() bool { return false }

func (d *sqliteDialect) retryable(err error) bool {
	var e *sqlite.Error
	if errors.As(err, &e) {
		switch e.Code() & 0xff {
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
			return true
		}
	}
	return false
}

func (d *sqliteDialect) unavailable(error) bool { return false }

// eventsNotify returns nil: one process owns a SQLite store, and its own
// commits wake its watchers.
func (d *sqliteDialect) eventsNotify() <-chan struct{} { return nil }

// checkpoint copies the pages that commits appended to the WAL into the
// database file, at most every checkpointInterval while writes go on. A
// passive checkpoint waits for no reader or writer.
func (d *sqliteDialect) checkpoint(ctx context.Context) {
	defer close(d.done)
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.dirty:
		}
		var busy, pages, copied int
		err := d.checkpoints.QueryRowContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &pages, &copied)
		if err != nil && ctx.Err() == nil {
			d.log.Warn("checkpointing the SQLite WAL failed; the writer will", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(checkpointInterval):
		}
	}
}

func (d *sqliteDialect) committed(bool) {
	select {
	case d.dirty <- struct{}{}:
	default: // a checkpoint is due already
	}
}

func (d *sqliteDialect) close() error {
	d.cancel()
	<-d.done
	return errors.Join(d.read.Close(), d.write.Close(), d.checkpoints.Close())
}
