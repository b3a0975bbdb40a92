-- The references of each image, kept on its row as lines of
-- "name<TAB>familiar<TAB>is_tag" sorted by name ('' when none; references
-- hold neither tabs nor newlines), so that a page of `docker images` needs no
-- lookup per image.
ALTER TABLE images ADD COLUMN refs TEXT NOT NULL DEFAULT '';
UPDATE images SET refs = COALESCE((
  SELECT string_agg(r.name || E'\t' || r.familiar || E'\t' || r.is_tag, E'\n' ORDER BY r.name)
  FROM refs r WHERE r.image_id = images.id), '');
DROP INDEX images_list;
CREATE INDEX images_list ON images (created, id) INCLUDE (ref_count, tag_count, child_count, parent, size, manifest_digest, labels, refs);
