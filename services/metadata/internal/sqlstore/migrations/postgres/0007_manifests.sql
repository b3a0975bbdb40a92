-- What a registry serves besides images: manifests and indexes by digest as
-- they were pushed (content as sent; size, subject, artifact type and
-- annotations for the referrers API), the ID of the image a manifest is
-- ('' when none), and what each one needs: blobs (its config and layers) and,
-- for an index, manifests. A manifest row lives while a reference or an index
-- points at it. Manifests of images recorded otherwise (built, imported,
-- pulled) are read from their image's record (images.manifest_digest).
CREATE TABLE manifests (
  digest        TEXT COLLATE "C" PRIMARY KEY,
  media_type    TEXT COLLATE "C" NOT NULL,
  artifact_type TEXT COLLATE "C" NOT NULL,
  subject       TEXT COLLATE "C" NOT NULL,
  image_id      TEXT COLLATE "C" NOT NULL,
  annotations   TEXT COLLATE "C" NOT NULL,
  size          BIGINT NOT NULL,
  content       BYTEA NOT NULL,
  created       BIGINT NOT NULL
);
CREATE INDEX manifests_subject ON manifests (subject, digest);
CREATE TABLE manifest_needs (
  manifest    TEXT COLLATE "C" NOT NULL,
  digest      TEXT COLLATE "C" NOT NULL,
  is_manifest BIGINT NOT NULL,
  PRIMARY KEY (manifest, digest)
);
CREATE INDEX manifest_needs_digest ON manifest_needs (digest);
CREATE INDEX images_manifest ON images (manifest_digest);

-- Blobs pushed to, or mounted into, a repository.
CREATE TABLE repo_blobs (
  repository TEXT COLLATE "C" NOT NULL,
  digest     TEXT COLLATE "C" NOT NULL,
  created    BIGINT NOT NULL,
  PRIMARY KEY (repository, digest)
);
CREATE INDEX repo_blobs_digest ON repo_blobs (digest);

-- Each reference's repository ("docker.io/library/nginx") and the manifest it
-- points at: a tag's is its image's manifest (or the manifest pushed under
-- it), a repository digest's is the digest it names. A reference of a
-- manifest that is no image has image_id ''.
ALTER TABLE refs ADD COLUMN repository TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE refs ADD COLUMN digest TEXT COLLATE "C" NOT NULL DEFAULT '';
UPDATE refs SET repository = split_part(name, '@', 1), digest = split_part(name, '@', 2) WHERE is_tag = 0;
-- A tag is "repository:tag", and a tag holds only [A-Za-z0-9_.-].
UPDATE refs SET
  repository = left(rtrim(name, 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-'),
    length(rtrim(name, 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-')) - 1),
  digest = COALESCE((SELECT manifest_digest FROM images WHERE id = refs.image_id), '')
  WHERE is_tag = 1;
CREATE INDEX refs_repository ON refs (repository, digest);
CREATE INDEX refs_digest ON refs (digest);
