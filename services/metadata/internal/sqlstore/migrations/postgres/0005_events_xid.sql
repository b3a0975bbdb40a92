-- The transaction that appended each event: watchers read the events of
-- the transactions that committed between two snapshots (sqlstore's
-- pgPosition), so that writers need not take turns to append events in
-- commit order.
ALTER TABLE events ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX events_xid ON events (xid);
