// Package sqlstore stores image metadata in SQL: SQLite (modernc.org/sqlite,
// the embedded default) or PostgreSQL (github.com/jackc/pgx/v5, for several
// replicas). One set of queries serves both; the dialects differ only in
// their schema files, transaction setup and retry rules. It implements
// image.Backend.
package sqlstore

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/metadata/internal/image"
)

//go:embed migrations
var migrations embed.FS

// dialect is what differs between the databases.
type dialect interface {
	name() string
	// writer and reader return the pool and options of read-write and
	// read-only transactions; rowWriter of image.Backend.UpdateRows.
	writer() (*sql.DB, *sql.TxOptions)
	rowWriter() (*sql.DB, *sql.TxOptions)
	reader() (*sql.DB, *sql.TxOptions)
	// retryable reports whether a failed transaction may be run again.
	retryable(err error) bool
	// unavailable reports whether err means the database cannot be reached.
	unavailable(err error) bool
	// eventsAfter and eventPosition are image.Backend's EventsAfter and
	// EventPosition.
	eventsAfter(ctx context.Context, pos image.EventPosition, limit int) ([]*metadatav1.Event, image.EventPosition, error)
	eventPosition(ctx context.Context, since time.Time) (image.EventPosition, error)
	// committed is told that a write transaction committed, and whether it
	// appended events.
	committed(events bool)
	// eventsNotify is image.Backend.EventsNotify.
	eventsNotify() <-chan struct{}
	// lockCollection is image.Backend.LockCollection.
	lockCollection(ctx context.Context, wait bool) (unlock func(), held bool, err error)
	// driverPrepares reports whether the driver prepares and caches
	// statements itself (pgx does), making stmtCache redundant.
	driverPrepares() bool
	close() error
}

// DB is an image.Backend over SQL.
type DB struct {
	d     dialect
	read  *sql.DB // for EventsAfter and friends
	log   *slog.Logger
	stmts sync.Map // *sql.DB → *stmtCache
}

// stmtCache holds the prepared statements of the fixed queries of one pool;
// database/sql then reuses each on every connection it was prepared on,
// saving SQLite's parse and plan of every query.
type stmtCache struct {
	db      *sql.DB
	mu      sync.Mutex
	m       map[string]*sql.Stmt
	pending map[string]bool
}

// get returns the prepared statement of q, or nil when it is not prepared
// yet: preparing needs a connection of the pool, which the calling
// transaction may hold (SQLite's writer pool has one), so q is prepared
// after the transaction, by prepare.
func (c *stmtCache) get(q string) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.m[q]; ok {
		return st
	}
	c.pending[q] = true
	return nil
}

// prepare prepares the queries get was asked for.
func (c *stmtCache) prepare(ctx context.Context) {
	c.mu.Lock()
	var qs []string
	for q := range c.pending {
		qs = append(qs, q)
	}
	c.pending = map[string]bool{}
	c.mu.Unlock()
	for _, q := range qs {
		st, err := c.db.PrepareContext(ctx, q)
		if err != nil {
			continue // the query runs unprepared, as before
		}
		c.mu.Lock()
		if _, ok := c.m[q]; ok {
			st.Close()
		} else {
			c.m[q] = st
		}
		c.mu.Unlock()
	}
}

func (c *stmtCache) hasPending() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending) > 0
}

func (db *DB) cache(pool *sql.DB) *stmtCache {
	if c, ok := db.stmts.Load(pool); ok {
		return c.(*stmtCache)
	}
	c, _ := db.stmts.LoadOrStore(pool, &stmtCache{db: pool, m: map[string]*sql.Stmt{}, pending: map[string]bool{}})
	return c.(*stmtCache)
}

var _ image.Backend = (*DB)(nil)

// maxRetries bounds the runs of a transaction that keeps conflicting.
const maxRetries = 20

// Update implements image.Backend.
func (db *DB) Update(ctx context.Context, fn func(image.Tx) error) error {
	pool, opts := db.d.writer()
	return db.update(ctx, pool, opts, false, fn)
}

// UpdateIdempotent implements image.Backend.
func (db *DB) UpdateIdempotent(ctx context.Context, fn func(image.Tx) error) error {
	pool, opts := db.d.writer()
	return db.update(ctx, pool, opts, true, fn)
}

// UpdateRows implements image.Backend.
func (db *DB) UpdateRows(ctx context.Context, fn func(image.Tx) error) error {
	pool, opts := db.d.rowWriter()
	return db.update(ctx, pool, opts, false, fn)
}

func (db *DB) update(ctx context.Context, pool *sql.DB, opts *sql.TxOptions, idempotent bool, fn func(image.Tx) error) error {
	reconnects := 0
	for attempt := 0; ; attempt++ {
		err := db.run(ctx, pool, opts, true, fn)
		var wait time.Duration
		switch {
		case err == nil:
			return nil
		case db.d.retryable(err) && attempt < maxRetries:
			// Back off a little, more with each attempt, so that
			// conflicting writers spread out.
			wait = time.Duration(attempt+1) * time.Millisecond
		case db.reconnectable(err, idempotent) && reconnects < len(reconnectWaits):
			wait = reconnectWaits[reconnects]
			reconnects++
		default:
			return db.classify(err)
		}
		if err := sleep(ctx, wait); err != nil {
			return err
		}
	}
}

// reconnectWaits are the pauses before each new try of a transaction that
// lost its connection (about 1.5 s in all): long enough to ride out a
// dropped connection or a database restart's first moments, short enough
// that a database that stays down is reported UNAVAILABLE promptly.
var reconnectWaits = []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond}

// reconnectable reports whether a transaction that failed may run again on
// another connection: the database could not be reached, and the failure
// was not at COMMIT, which may have committed before the connection broke
// (unless nothing of it was sent, or running it twice is harmless).
func (db *DB) reconnectable(err error, idempotent bool) bool {
	var ce *commitError
	if errors.As(err, &ce) && !idempotent && !pgconn.SafeToRetry(ce.err) {
		return false
	}
	return db.d.unavailable(err)
}

// commitError is a failed COMMIT.
type commitError struct{ err error }

func (e *commitError) Error() string { return e.err.Error() }
func (e *commitError) Unwrap() error { return e.err }

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// retryRead runs a read, again on another connection after the database could
// not be reached: a read changes nothing, so trying it again is safe.
func (db *DB) retryRead(ctx context.Context, run func() error) error {
	for reconnects := 0; ; reconnects++ {
		err := run()
		if err == nil || !db.d.unavailable(err) || reconnects == len(reconnectWaits) {
			return db.classify(err)
		}
		if err := sleep(ctx, reconnectWaits[reconnects]); err != nil {
			return err
		}
	}
}

// View implements image.Backend.
func (db *DB) View(ctx context.Context, fn func(image.Tx) error) error {
	pool, opts := db.d.reader()
	return db.retryRead(ctx, func() error { return db.run(ctx, pool, opts, false, fn) })
}

// ViewSingle implements image.Backend: the statement runs on the reader
// pool with no BEGIN and COMMIT around it, which on PostgreSQL saves two of
// three round trips.
func (db *DB) ViewSingle(ctx context.Context, fn func(image.Tx) error) error {
	pool, _ := db.d.reader()
	stmts := db.statements(pool)
	if stmts != nil {
		defer func() {
			if stmts.hasPending() {
				stmts.prepare(ctx)
			}
		}()
	}
	return db.retryRead(ctx, func() error {
		t := &txn{q: pool, d: db.d, stmts: stmts}
		err := fn(t)
		if t.statements > 1 {
			return errdefs.Internal("a single-statement read ran %d statements", t.statements)
		}
		return err
	})
}

// statements returns the prepared statements of a pool, nil where the
// driver keeps them.
func (db *DB) statements(pool *sql.DB) *stmtCache {
	if db.d.driverPrepares() {
		return nil
	}
	return db.cache(pool)
}

func (db *DB) run(ctx context.Context, pool *sql.DB, opts *sql.TxOptions, write bool, fn func(image.Tx) error) error {
	tx, err := pool.BeginTx(ctx, opts)
	if err != nil {
		return err
	}
	stmts := db.statements(pool)
	if stmts != nil {
		defer func() {
			if stmts.hasPending() {
				stmts.prepare(ctx)
			}
		}()
	}
	t := &txn{tx: tx, q: tx, d: db.d, stmts: stmts}
	if err := fn(t); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return &commitError{err}
	}
	if write {
		db.d.committed(t.appended)
	}
	return nil
}

// classify maps database errors to the error vocabulary; errors that are
// already classified pass through.
func (db *DB) classify(err error) error {
	if err == nil {
		return nil
	}
	var e *errdefs.Error
	if errors.As(err, &e) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var ce *commitError
	if errors.As(err, &ce) && db.d.unavailable(err) {
		return errdefs.Unavailable("%s database: the connection broke while committing, so the change may or may not have been made; read it back before trying again: %v", db.d.name(), err).
			WithReason("COMMIT_UNKNOWN")
	}
	if db.d.unavailable(err) {
		return errdefs.Unavailable("%s database unavailable: %v", db.d.name(), err)
	}
	if db.d.retryable(err) {
		return errdefs.Aborted("%s transaction kept conflicting with others; retry: %v", db.d.name(), err)
	}
	return errdefs.Internal("%s: %v", db.d.name(), err)
}

// EventsAfter implements image.Backend.
func (db *DB) EventsAfter(ctx context.Context, pos image.EventPosition, limit int) ([]*metadatav1.Event, image.EventPosition, error) {
	evs, next, err := db.d.eventsAfter(ctx, pos, limit)
	return evs, next, db.classify(err)
}

// EventPosition implements image.Backend.
func (db *DB) EventPosition(ctx context.Context, since time.Time) (image.EventPosition, error) {
	pos, err := db.d.eventPosition(ctx, since)
	return pos, db.classify(err)
}

// Close implements image.Backend.
func (db *DB) Close() error { return db.d.close() }

// LockCollection implements image.Backend.
func (db *DB) LockCollection(ctx context.Context, wait bool) (func(), bool, error) {
	unlock, held, err := db.d.lockCollection(ctx, wait)
	return unlock, held, db.classify(err)
}

// Ping implements image.Backend.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.read.PingContext(ctx); err != nil {
		return db.classify(err)
	}
	return nil
}

// EventsNotify implements image.Backend.
func (db *DB) EventsNotify() <-chan struct{} { return db.d.eventsNotify() }

// migrate applies the dialect's schema files that have not been applied,
// each in its own transaction, recording them in schema_migrations. The
// caller keeps other processes from migrating meanwhile.
func migrate(ctx context.Context, d dialect) error {
	files, err := fs.Glob(migrations, "migrations/"+d.name()+"/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(files)
	for _, f := range files {
		base := f[strings.LastIndexByte(f, '/')+1:]
		version, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return fmt.Errorf("migration %s: name must start with its version number", base)
		}
		body, err := migrations.ReadFile(f)
		if err != nil {
			return err
		}
		pool, opts := d.writer()
		tx, err := pool.BeginTx(ctx, opts)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)`); err != nil {
			_ = tx.Rollback()
			return fmt.Errorf("creating schema_migrations: %w", err)
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations WHERE version = $1`, version).Scan(&n); err != nil {
			_ = tx.Rollback()
			return err
		}
		if n > 0 {
			_ = tx.Rollback()
			continue
		}
		if _, err := tx.ExecContext(ctx, string(body)); err != nil {
			_ = tx.Rollback()
			return fmt.Errorf("migration %s: %w", base, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)`, version, time.Now().UnixNano()); err != nil {
			_ = tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migration %s: %w", base, err)
		}
	}
	return nil
}
