-- A page of `docker images` reads only this index: the image rows hold the
-- config and manifest bytes and would cost a page read each.
CREATE INDEX images_list ON images (created, id) INCLUDE (ref_count, tag_count, child_count, parent, size, manifest_digest, labels);
DROP INDEX images_created;
