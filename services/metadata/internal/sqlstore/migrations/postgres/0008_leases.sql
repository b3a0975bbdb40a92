-- Leases, as containerd's: garbage collection keeps the blobs a lease holds
-- until it is deleted or expires (Unix nanoseconds).
CREATE TABLE leases (
  id      TEXT COLLATE "C" PRIMARY KEY,
  created BIGINT NOT NULL,
  expires BIGINT NOT NULL
);
CREATE INDEX leases_expires ON leases (expires);
CREATE TABLE lease_blobs (
  lease_id TEXT COLLATE "C" NOT NULL,
  digest   TEXT COLLATE "C" NOT NULL,
  PRIMARY KEY (lease_id, digest)
);
CREATE INDEX lease_blobs_digest ON lease_blobs (digest);
