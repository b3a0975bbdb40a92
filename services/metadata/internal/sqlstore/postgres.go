package sqlstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
)

// migrateLock is the advisory lock key that replicas take to migrate the
// schema.
const migrateLock = 0x5354524d // "STRM"

// collectLock is the advisory lock key that a replica holds while it
// collects garbage.
const collectLock = 0x53545247 // "STRG"

// eventsChannel is the LISTEN/NOTIFY channel that tells replicas an event
// was appended.
const eventsChannel = "strata_events"

// postgresDialect runs writers SERIALIZABLE (retrying serialization
// failures), so that Docker's multi-step rules (delete unless a child
// exists, no image for a blob being collected) hold across replicas, and
// those that write every row they decide on (tag moves) REPEATABLE READ;
// it wakes watchers of every replica with LISTEN/NOTIFY.
type postgresDialect struct {
	db      *sql.DB
	cfg     *pgx.ConnConfig
	log     *slog.Logger
	cancel  context.CancelFunc
	wg      sync.WaitGroup // listen and notify
	pending chan struct{}  // a notification is due

	mu     sync.Mutex
	notify chan struct{} // closed and replaced on each notification
}

// OpenPostgres connects to PostgreSQL and applies the schema migrations
// (under an advisory lock, so replicas starting together apply them once).
func OpenPostgres(ctx context.Context, dsn string, log *slog.Logger) (*DB, error) {
	// pgxpool's parser takes pgx's DSN and its pool settings, of which the
	// pool uses pool_max_conns (default: 4, or the number of CPUs if
	// more). A few connections serve best: PostgreSQL runs a process per
	// busy connection, and more of them than cores only queue for the CPU
	// with locks held, where requests queued for a connection wait cheaply.
	pcfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parsing the PostgreSQL DSN: %w", err)
	}
	cfg := pcfg.ConnConfig
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(int(pcfg.MaxConns))
	db.SetMaxIdleConns(int(pcfg.MaxConns))
	db.SetConnMaxIdleTime(5 * time.Minute)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connecting to PostgreSQL at %s:%d: %w", cfg.Host, cfg.Port, err)
	}
	lctx, cancel := context.WithCancel(context.Background())
	d := &postgresDialect{db: db, cfg: cfg, log: log, cancel: cancel, pending: make(chan struct{}, 1), notify: make(chan struct{})}
	if err := d.migrate(ctx); err != nil {
		cancel()
		db.Close()
		return nil, fmt.Errorf("migrating the PostgreSQL schema: %w", err)
	}
	d.wg.Add(2)
	go func() {
		defer d.wg.Done()
		d.listen(lctx)
	}()
	go func() {
		defer d.wg.Done()
		d.notifyReplicas(lctx)
	}()
	return &DB{d: d, read: db, log: log}, nil
}

// migrate applies the migrations while holding migrateLock on a
// connection of its own, so that replicas starting together migrate one
// after the other. The lock is taken before the migrations' transactions
// begin: a transaction that took it itself would read from a snapshot of
// its first statement, taken while it waited, and miss the migrations the
// holder applied meanwhile.
func (d *postgresDialect) migrate(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, d.cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background()) // lets go of the lock
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrateLock); err != nil {
		return err
	}
	return migrate(ctx, d)
}

func (d *postgresDialect) name() string { return "postgres" }

func (d *postgresDialect) writer() (*sql.DB, *sql.TxOptions) {
	return d.db, &sql.TxOptions{Isolation: sql.LevelSerializable}
}

// rowWriter runs REPEATABLE READ: PostgreSQL rolls back a transaction
// that writes a row a concurrent one has written (serialization_failure,
// retried).
func (d *postgresDialect) rowWriter() (*sql.DB, *sql.TxOptions) {
	return d.db, &sql.TxOptions{Isolation: sql.LevelRepeatableRead}
}

func (d *postgresDialect) reader() (*sql.DB, *sql.TxOptions) {
	return d.db, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true}
}

func (d *postgresDialect) driverPrepares() bool { return true }

func (d *postgresDialect) retryable(err error) bool {
	var e *pgconn.PgError
	if errors.As(err, &e) {
		switch e.Code {
		case "40001", "40P01": // serialization_failure, deadlock_detected
			return true
		}
	}
	return false
}

// unavailable reports errors of a connection that failed or broke (an EOF
// in the middle of a reply is the commonest), and PostgreSQL's own
// connection errors (class 08) and refusals while it shuts down or starts.
func (d *postgresDialect) unavailable(err error) bool {
	var ne net.Error
	var ce *pgconn.ConnectError
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return strings.HasPrefix(pe.Code, "08") || pe.Code == "57P01" || pe.Code == "57P02" || pe.Code == "57P03"
	}
	return errors.As(err, &ne) || errors.As(err, &ce) || errors.Is(err, sql.ErrConnDone) || errors.Is(err, driver.ErrBadConn) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || pgconn.SafeToRetry(err)
}

// lockCollection takes the session-level advisory lock collectLock on a
// connection of its own, outside the pool: a collection runs many
// transactions and blob store calls, and must not hold one of the pool's
// few connections meanwhile. Closing the connection, or losing it,
// releases the lock.
func (d *postgresDialect) lockCollection(ctx context.Context, wait bool) (func(), bool, error) {
	conn, err := pgx.ConnectConfig(ctx, d.cfg)
	if err != nil {
		return nil, false, err
	}
	held := true
	if wait {
		_, err = conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, collectLock)
	} else {
		err = conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, collectLock).Scan(&held)
	}
	if err != nil || !held {
		conn.Close(context.Background())
		return nil, false, err
	}
	return func() { conn.Close(context.Background()) }, true, nil
}

// listen keeps a LISTEN connection open and turns notifications into wakes.
func (d *postgresDialect) listen(ctx context.Context) {
	for ctx.Err() == nil {
		conn, err := pgx.ConnectConfig(ctx, d.cfg)
		if err == nil {
			_, err = conn.Exec(ctx, "LISTEN "+eventsChannel)
			for err == nil {
				_, err = conn.WaitForNotification(ctx)
				if err == nil {
					d.wake()
				}
			}
			conn.Close(context.Background())
		}
		if ctx.Err() != nil {
			return
		}
		d.log.Warn("listening for events of other replicas failed; retrying", "error", err.Error())
		d.wake() // watchers poll until the listener is back
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

func (d *postgresDialect) wake() {
	d.mu.Lock()
	close(d.notify)
	d.notify = make(chan struct{})
	d.mu.Unlock()
}

func (d *postgresDialect) eventsNotify() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.notify
}

func (d *postgresDialect) close() error {
	d.cancel()
	d.wg.Wait()
	return d.db.Close()
}
