-- What `docker images` filters on, kept on the image row so that a page of
-- the list reads no other table: how many references and tags point at the
-- image, how many images name it as their parent, and its labels as JSON
-- ('' when none).
ALTER TABLE images ADD COLUMN ref_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE images ADD COLUMN tag_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE images ADD COLUMN child_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE images ADD COLUMN labels TEXT NOT NULL DEFAULT '';
UPDATE images SET
  ref_count = (SELECT COUNT(*) FROM refs r WHERE r.image_id = images.id),
  tag_count = (SELECT COUNT(*) FROM refs r WHERE r.image_id = images.id AND r.is_tag = 1),
  child_count = (SELECT COUNT(*) FROM images c WHERE c.parent = images.id),
  labels = COALESCE((SELECT json_group_object(l.key, l.value) FROM labels l WHERE l.image_id = images.id HAVING COUNT(*) > 0), '');
