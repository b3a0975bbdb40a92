-- Images, keyed by image ID (the config digest). record holds the
-- protobuf-encoded metadatav1.Image; the other columns are what queries
-- filter and sort on. Times are Unix nanoseconds (0: none).
CREATE TABLE images (
  id              TEXT COLLATE "C" PRIMARY KEY,
  created         BIGINT NOT NULL,
  parent          TEXT COLLATE "C" NOT NULL,
  manifest_digest TEXT COLLATE "C" NOT NULL,
  size            BIGINT NOT NULL,
  recorded_at     BIGINT NOT NULL,
  last_tag_time   BIGINT NOT NULL DEFAULT 0,
  record          BYTEA NOT NULL
);
CREATE INDEX images_created ON images (created, id);
CREATE INDEX images_parent ON images (parent);

-- Tags and repository digests: name is the normalized reference.
CREATE TABLE refs (
  name     TEXT COLLATE "C" PRIMARY KEY,
  familiar TEXT COLLATE "C" NOT NULL,
  image_id TEXT COLLATE "C" NOT NULL,
  is_tag   BIGINT NOT NULL,
  created  BIGINT NOT NULL
);
CREATE INDEX refs_image ON refs (image_id, name);
CREATE INDEX refs_familiar ON refs (familiar);

CREATE TABLE labels (
  image_id TEXT COLLATE "C" NOT NULL,
  key      TEXT COLLATE "C" NOT NULL,
  value    TEXT COLLATE "C" NOT NULL,
  PRIMARY KEY (image_id, key)
);
CREATE INDEX labels_key ON labels (key, value);

CREATE TABLE layers (
  image_id  TEXT COLLATE "C" NOT NULL,
  position  BIGINT NOT NULL,
  chain_id  TEXT COLLATE "C" NOT NULL,
  digest    TEXT COLLATE "C" NOT NULL,
  size      BIGINT NOT NULL,
  diff_size BIGINT NOT NULL,
  PRIMARY KEY (image_id, position)
);
CREATE INDEX layers_chain ON layers (chain_id);

-- Every blob an image needs: manifest, config, layers.
CREATE TABLE blobs (
  digest   TEXT COLLATE "C" NOT NULL,
  image_id TEXT COLLATE "C" NOT NULL,
  PRIMARY KEY (digest, image_id)
);
CREATE INDEX blobs_image ON blobs (image_id);

CREATE TABLE cache_records (
  key         TEXT COLLATE "C" PRIMARY KEY,
  image_id    TEXT COLLATE "C" NOT NULL,
  description TEXT COLLATE "C" NOT NULL,
  size        BIGINT NOT NULL,
  created     BIGINT NOT NULL,
  last_used   BIGINT NOT NULL
);
CREATE INDEX cache_records_image ON cache_records (image_id);
CREATE INDEX cache_records_used ON cache_records (last_used, key);

CREATE TABLE events (
  seq        BIGSERIAL PRIMARY KEY,
  time       BIGINT NOT NULL,
  action     BIGINT NOT NULL,
  image_id   TEXT COLLATE "C" NOT NULL,
  reference  TEXT COLLATE "C" NOT NULL,
  attributes TEXT COLLATE "C" NOT NULL
);
CREATE INDEX events_time ON events (time);

-- Blobs garbage collection is deleting (deleted_at 0) or deleted: an image
-- whose blob check ran before such a deletion finished must not be recorded.
CREATE TABLE gc_marks (
  digest    TEXT COLLATE "C" PRIMARY KEY,
  marked_at BIGINT NOT NULL,
  deleted_at BIGINT NOT NULL DEFAULT 0
);
