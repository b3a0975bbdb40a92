-- Leases, as containerd's: garbage collection keeps the blobs a lease holds
-- until it is deleted or expires (Unix nanoseconds).
CREATE TABLE leases (
  id      TEXT PRIMARY KEY,
  created INTEGER NOT NULL,
  expires INTEGER NOT NULL
);
CREATE INDEX leases_expires ON leases (expires);
CREATE TABLE lease_blobs (
  lease_id TEXT NOT NULL,
  digest   TEXT NOT NULL,
  PRIMARY KEY (lease_id, digest)
);
CREATE INDEX lease_blobs_digest ON lease_blobs (digest);
