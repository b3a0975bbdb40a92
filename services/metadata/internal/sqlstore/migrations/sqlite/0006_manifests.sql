-- What a registry serves besides images: manifests and indexes by digest as
-- they were pushed (content as sent; size, subject, artifact type and
-- annotations for the referrers API), the ID of the image a manifest is
-- ('' when none), and what each one needs: blobs (its config and layers) and,
-- for an index, manifests. A manifest row lives while a reference or an index
-- points at it. Manifests of images recorded otherwise (built, imported,
-- pulled) are read from their image's record (images.manifest_digest).
CREATE TABLE manifests (
  digest        TEXT PRIMARY KEY,
  media_type    TEXT NOT NULL,
  artifact_type TEXT NOT NULL,
  subject       TEXT NOT NULL,
  image_id      TEXT NOT NULL,
  annotations   TEXT NOT NULL,
  size          INTEGER NOT NULL,
  content       BLOB NOT NULL,
  created       INTEGER NOT NULL
);
CREATE INDEX manifests_subject ON manifests (subject, digest);
CREATE TABLE manifest_needs (
  manifest    TEXT NOT NULL,
  digest      TEXT NOT NULL,
  is_manifest INTEGER NOT NULL,
  PRIMARY KEY (manifest, digest)
);
CREATE INDEX manifest_needs_digest ON manifest_needs (digest);
CREATE INDEX images_manifest ON images (manifest_digest);

-- Blobs pushed to, or mounted into, a repository.
CREATE TABLE repo_blobs (
  repository TEXT NOT NULL,
  digest     TEXT NOT NULL,
  created    INTEGER NOT NULL,
  PRIMARY KEY (repository, digest)
);
CREATE INDEX repo_blobs_digest ON repo_blobs (digest);

-- Each reference's repository ("docker.io/library/nginx") and the manifest it
-- points at: a tag's is its image's manifest (or the manifest pushed under
-- it), a repository digest's is the digest it names. A reference of a
-- manifest that is no image has image_id ''.
ALTER TABLE refs ADD COLUMN repository TEXT NOT NULL DEFAULT '';
ALTER TABLE refs ADD COLUMN digest TEXT NOT NULL DEFAULT '';
UPDATE refs SET
  repository = substr(name, 1, instr(name, '@') - 1),
  digest = substr(name, instr(name, '@') + 1)
  WHERE is_tag = 0;
-- A tag is "repository:tag", and a tag holds only [A-Za-z0-9_.-].
UPDATE refs SET
  repository = substr(rtrim(name, 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-'), 1,
    length(rtrim(name, 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-')) - 1),
  digest = COALESCE((SELECT manifest_digest FROM images WHERE id = refs.image_id), '')
  WHERE is_tag = 1;
CREATE INDEX refs_repository ON refs (repository, digest);
CREATE INDEX refs_digest ON refs (digest);
