package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/metadata/internal/image"
)

// The event log is the events table, in sequence (seq) order. Where writers
// take turns (SQLite), sequence numbers commit in order and a position is
// the last sequence number read. On PostgreSQL, concurrent writers commit
// sequence numbers out of order; rather than make every writer take one
// lock until it commits, each event records its transaction (xid) and a
// position says which transactions' events were read, as a snapshot (see
// pgPosition).

const eventColumns = `seq, time, action, image_id, reference, attributes, actor, via`

// scanEvents reads rows of eventColumns followed by extra columns, which
// are scanned into extra on every row. It returns the events and the
// sequence number of the last.
func scanEvents(rows *sql.Rows, extra ...any) ([]*metadatav1.Event, int64, error) {
	defer rows.Close()
	var out []*metadatav1.Event
	var seq int64
	for rows.Next() {
		var at int64
		var action int32
		var attrs string
		ev := &metadatav1.Event{}
		dest := append([]any{&seq, &at, &action, &ev.ImageId, &ev.Reference, &attrs, &ev.Actor, &ev.Via}, extra...)
		if err := rows.Scan(dest...); err != nil {
			return nil, 0, err
		}
		ev.Time, ev.Action = stamp(at), metadatav1.EventAction(action)
		if attrs != "{}" && attrs != "" {
			if err := json.Unmarshal([]byte(attrs), &ev.Attributes); err != nil {
				return nil, 0, errdefs.Internal("event %d: attributes do not decode: %v", seq, err)
			}
		}
		out = append(out, ev)
	}
	return out, seq, rows.Err()
}

func badPosition(pos image.EventPosition) error {
	return errdefs.Internal("event log position %q does not decode", string(pos))
}

// SQLite: a position is the last sequence number read.

func (d *sqliteDialect) eventsAfter(ctx context.Context, pos image.EventPosition, limit int) ([]*metadatav1.Event, image.EventPosition, error) {
	after, err := strconv.ParseInt(string(pos), 10, 64)
	if err != nil {
		return nil, pos, badPosition(pos)
	}
	rows, err := d.read.QueryContext(ctx, `SELECT `+eventColumns+` FROM events WHERE seq > $1 ORDER BY seq LIMIT $2`, after, limit)
	if err != nil {
		return nil, pos, err
	}
	evs, last, err := scanEvents(rows)
	if err != nil || len(evs) == 0 {
		return nil, pos, err
	}
	return evs, image.EventPosition(strconv.FormatInt(last, 10)), nil
}

func (d *sqliteDialect) eventPosition(ctx context.Context, since time.Time) (image.EventPosition, error) {
	var last int64
	var err error
	if since.IsZero() {
		err = d.read.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM events`).Scan(&last)
	} else {
		err = d.read.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM events WHERE time < $1`, since.UnixNano()).Scan(&last)
	}
	return image.EventPosition(strconv.FormatInt(last, 10)), err
}

// pgPosition is a position in PostgreSQL's event log. Read are: the events
// of the transactions visible in the snapshot lo (none when lo is empty)
// or with a sequence number up to after; and, when hi is set, the events
// with a sequence number up to after among those of the transactions
// visible in hi but not in lo. Events are read a snapshot at a time: those
// of the transactions that committed between two snapshots, in sequence
// order, then the next snapshot's. Every event is read once, and an event
// whose transaction committed before another began comes first.
type pgPosition struct {
	lo, hi string // pg_snapshot text, "xmin:xmax:xip,…"
	after  int64
}

func parsePGPosition(pos image.EventPosition) (pgPosition, error) {
	f := strings.Split(string(pos), ";")
	if len(f) != 3 {
		return pgPosition{}, badPosition(pos)
	}
	after, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return pgPosition{}, badPosition(pos)
	}
	return pgPosition{lo: f[0], hi: f[1], after: after}, nil
}

func (p pgPosition) encode() image.EventPosition {
	return image.EventPosition(p.lo + ";" + p.hi + ";" + strconv.FormatInt(p.after, 10))
}

func (d *postgresDialect) eventsAfter(ctx context.Context, pos image.EventPosition, limit int) ([]*metadatav1.Event, image.EventPosition, error) {
	p, err := parsePGPosition(pos)
	if err != nil {
		return nil, pos, err
	}
	where := []string{"seq > $1"}
	args := []any{p.after}
	if p.lo != "" {
		args = append(args, p.lo)
		where = append(where, "xid >= pg_snapshot_xmin($2::pg_snapshot) AND NOT pg_visible_in_snapshot(xid, $2::pg_snapshot)")
	}
	if p.hi != "" {
		args = append(args, p.hi)
		where = append(where, "pg_visible_in_snapshot(xid, $"+strconv.Itoa(len(args))+"::pg_snapshot)")
	}
	args = append(args, limit)
	// Without hi, the statement's own snapshot bounds what it reads: it
	// sees the transactions that pg_current_snapshot() shows committed.
	rows, err := d.db.QueryContext(ctx, `SELECT `+eventColumns+`, pg_current_snapshot()::text FROM events WHERE `+
		strings.Join(where, " AND ")+` ORDER BY seq LIMIT $`+strconv.Itoa(len(args)), args...)
	if err != nil {
		return nil, pos, err
	}
	var now string
	evs, last, err := scanEvents(rows, &now)
	if err != nil {
		return nil, pos, err
	}
	hi := p.hi
	if hi == "" {
		hi = now
	}
	switch {
	case len(evs) == limit: // more may follow in this snapshot
		return evs, pgPosition{lo: p.lo, hi: hi, after: last}.encode(), nil
	case len(evs) > 0 || p.hi != "" || p.lo == "":
		return evs, pgPosition{lo: hi}.encode(), nil
	default: // nothing committed since lo
		return nil, pos, nil
	}
}

func (d *postgresDialect) eventPosition(ctx context.Context, since time.Time) (image.EventPosition, error) {
	if since.IsZero() {
		var now string
		err := d.db.QueryRowContext(ctx, `SELECT pg_current_snapshot()::text`).Scan(&now)
		return pgPosition{lo: now}.encode(), err
	}
	var before int64
	err := d.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM events WHERE time < $1`, since.UnixNano()).Scan(&before)
	return pgPosition{after: before}.encode(), err
}

// notifyReplicas wakes the watchers of every replica after commits that appended
// events. A NOTIFY inside those transactions would make their commits take
// turns (PostgreSQL holds a lock on its notification queue from a
// notifying transaction's commit to its end); sent afterwards, one NOTIFY
// covers the commits made while the previous one was being sent.
func (d *postgresDialect) notifyReplicas(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.pending:
		}
		if _, err := d.db.ExecContext(ctx, `SELECT pg_notify($1, '')`, eventsChannel); err != nil && ctx.Err() == nil {
			d.log.Warn("telling other replicas of new events failed; their watchers poll", "error", err.Error())
		}
	}
}

func (d *postgresDialect) committed(events bool) {
	if !events {
		return
	}
	select {
	case d.pending <- struct{}{}:
	default: // a notification is due already
	}
}
