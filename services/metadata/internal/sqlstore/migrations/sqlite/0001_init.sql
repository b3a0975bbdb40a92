-- Images, keyed by image ID (the config digest). record holds the
-- protobuf-encoded metadatav1.Image; the other columns are what queries
-- filter and sort on. Times are Unix nanoseconds (0: none).
CREATE TABLE images (
  id              TEXT PRIMARY KEY,
  created         INTEGER NOT NULL,
  parent          TEXT NOT NULL,
  manifest_digest TEXT NOT NULL,
  size            INTEGER NOT NULL,
  recorded_at     INTEGER NOT NULL,
  last_tag_time   INTEGER NOT NULL DEFAULT 0,
  record          BLOB NOT NULL
);
CREATE INDEX images_created ON images (created, id);
CREATE INDEX images_parent ON images (parent);

-- Tags and repository digests: name is the normalized reference.
CREATE TABLE refs (
  name     TEXT PRIMARY KEY,
  familiar TEXT NOT NULL,
  image_id TEXT NOT NULL,
  is_tag   INTEGER NOT NULL,
  created  INTEGER NOT NULL
);
CREATE INDEX refs_image ON refs (image_id, name);
CREATE INDEX refs_familiar ON refs (familiar);

CREATE TABLE labels (
  image_id TEXT NOT NULL,
  key      TEXT NOT NULL,
  value    TEXT NOT NULL,
  PRIMARY KEY (image_id, key)
);
CREATE INDEX labels_key ON labels (key, value);

CREATE TABLE layers (
  image_id  TEXT NOT NULL,
  position  INTEGER NOT NULL,
  chain_id  TEXT NOT NULL,
  digest    TEXT NOT NULL,
  size      INTEGER NOT NULL,
  diff_size INTEGER NOT NULL,
  PRIMARY KEY (image_id, position)
);
CREATE INDEX layers_chain ON layers (chain_id);

-- Every blob an image needs: manifest, config, layers.
CREATE TABLE blobs (
  digest   TEXT NOT NULL,
  image_id TEXT NOT NULL,
  PRIMARY KEY (digest, image_id)
);
CREATE INDEX blobs_image ON blobs (image_id);

CREATE TABLE cache_records (
  key         TEXT PRIMARY KEY,
  image_id    TEXT NOT NULL,
  description TEXT NOT NULL,
  size        INTEGER NOT NULL,
  created     INTEGER NOT NULL,
  last_used   INTEGER NOT NULL
);
CREATE INDEX cache_records_image ON cache_records (image_id);
CREATE INDEX cache_records_used ON cache_records (last_used, key);

CREATE TABLE events (
  seq        INTEGER PRIMARY KEY AUTOINCREMENT,
  time       INTEGER NOT NULL,
  action     INTEGER NOT NULL,
  image_id   TEXT NOT NULL,
  reference  TEXT NOT NULL,
  attributes TEXT NOT NULL
);
CREATE INDEX events_time ON events (time);

-- Blobs garbage collection is deleting (deleted_at 0) or deleted: an image
-- whose blob check ran before such a deletion finished must not be recorded.
CREATE TABLE gc_marks (
  digest    TEXT PRIMARY KEY,
  marked_at INTEGER NOT NULL,
  deleted_at INTEGER NOT NULL DEFAULT 0
);
