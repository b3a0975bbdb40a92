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

	"golang.org/x/sys/unix"
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
	// lock is the database file, flocked while the store is open: one
	// process serves a SQLite store.
	lock  *os.File
	log   *slog.Logger
	dirty chan struct{} // a write committed since the last checkpoint
	// collecting holds a token while a garbage collection runs: the file
	// lock makes this process the only one, so a lock in it is enough.
	collecting chan struct{}
	cancel     context.CancelFunc
	done       chan struct{}
}

// checkpointInterval is how often, at most, the WAL is checkpointed while
// writes go on.
const checkpointInterval = 200 * time.Millisecond

// writerCheckpointPages is the size of the WAL, in pages, past which the
// writer checkpoints it itself after a commit: a backstop for when the
// background checkpoints fall behind (SQLite's default is 1000 pages).
const writerCheckpointPages = 16384

// OpenSQLite opens (creating it and its directory when needed) the SQLite
// database at path, in WAL mode, and applies the schema migrations. It
// takes an exclusive lock on the file first: when another process serves
// it, OpenSQLite fails saying so (SQLite's own locks would let a second
// process in, and two services would then keep event sequences, garbage
// collection and their watchers' wakes apart).
func OpenSQLite(ctx context.Context, path string, log *slog.Logger) (*DB, error) {
	if path == "" {
		return nil, errors.New("a SQLite database path is required")
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("creating the directory of the SQLite database: %w", err)
		}
	}
	lock, err := lockFile(path)
	if err != nil {
		return nil, err
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
		lock.Close()
		return nil, err
	}
	write.SetMaxOpenConns(1)
	write.SetConnMaxIdleTime(0)
	read, err := sql.Open("sqlite", base+"&_pragma=query_only(1)")
	if err != nil {
		write.Close()
		lock.Close()
		return nil, err
	}
	checkpoints, err := sql.Open("sqlite", base)
	if err != nil {
		write.Close()
		read.Close()
		lock.Close()
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
	d := &sqliteDialect{write: write, read: read, checkpoints: checkpoints, lock: lock, log: log,
		dirty: make(chan struct{}, 1), collecting: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{})}
	go d.checkpoint(cctx)
	if err := write.PingContext(ctx); err != nil {
		d.close()
		return nil, fmt.Errorf("opening SQLite database %s: %w", path, err)
	}
	if err := migrate(ctx, d); err != nil {
		d.close()
		return nil, fmt.Errorf("migrating SQLite database %s: %w", path, err)
	}
	return &DB{d: d, read: read, log: log}, nil
}

// lockFile opens the database file, creating it empty (which SQLite takes
// for a new database), and flocks it. The flock is apart from SQLite's own
// POSIX record locks on the file, and the descriptor stays open until the
// store is closed: closing another descriptor of the file would drop
// SQLite's record locks.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening SQLite database %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("SQLite database %s is in use by another process (it holds the file's lock): one metadata process serves a SQLite file; run several replicas with --store postgres", path)
		}
		return nil, fmt.Errorf("locking SQLite database %s: %w", path, err)
	}
	return f, nil
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

func (d *sqliteDialect) lockCollection(ctx context.Context, wait bool) (func(), bool, error) {
	unlock := func() { <-d.collecting }
	if !wait {
		select {
		case d.collecting <- struct{}{}:
			return unlock, true, nil
		default:
			return nil, false, nil
		}
	}
	select {
	case d.collecting <- struct{}{}:
		return unlock, true, nil
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
}

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
	err := errors.Join(d.read.Close(), d.write.Close(), d.checkpoints.Close())
	return errors.Join(err, d.lock.Close())
}
