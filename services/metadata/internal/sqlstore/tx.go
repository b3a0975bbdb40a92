package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/metadata/internal/image"
)

// txn implements image.Tx. Queries use $N placeholders, which both
// PostgreSQL and modernc.org/sqlite bind by number.
type txn struct {
	// tx is the transaction; nil for a single statement on the pool.
	tx *sql.Tx
	q  queryer // tx, or the pool
	d  dialect
	// stmts prepares the fixed queries; nil where the driver caches
	// prepared statements itself (pgx).
	stmts *stmtCache
	// statements counts the statements run, which a single-statement read
	// checks.
	statements int
	// appended records that the transaction appended events.
	appended bool
}

// queryer is what *sql.Tx and *sql.DB share.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// The fixed queries run as prepared statements once prepared (see
// stmtCache); until then, and for queries built at run time (direct),
// unprepared.

// prepared returns the prepared statement of q for this transaction, or nil.
func (t *txn) prepared(ctx context.Context, q string) *sql.Stmt {
	t.statements++
	if t.stmts == nil {
		return nil
	}
	st := t.stmts.get(q)
	if st == nil || t.tx == nil {
		return st
	}
	return t.tx.StmtContext(ctx, st)
}

func (t *txn) queryRow(ctx context.Context, q string, a ...any) *sql.Row {
	if st := t.prepared(ctx, q); st != nil {
		return st.QueryRowContext(ctx, a...)
	}
	return t.q.QueryRowContext(ctx, q, a...)
}

func (t *txn) query(ctx context.Context, q string, a ...any) (*sql.Rows, error) {
	if st := t.prepared(ctx, q); st != nil {
		return st.QueryContext(ctx, a...)
	}
	return t.q.QueryContext(ctx, q, a...)
}

func (t *txn) exec(ctx context.Context, q string, a ...any) (sql.Result, error) {
	if st := t.prepared(ctx, q); st != nil {
		return st.ExecContext(ctx, a...)
	}
	return t.q.ExecContext(ctx, q, a...)
}

// direct returns what runs a query built at run time, which is not worth
// preparing.
func (t *txn) direct() queryer {
	t.statements++
	return t.q
}

var _ image.Tx = (*txn)(nil)

func nanos(ts *timestamppb.Timestamp) int64 {
	if ts == nil {
		return 0
	}
	return ts.AsTime().UnixNano()
}

func stamp(n int64) *timestamppb.Timestamp {
	if n == 0 {
		return nil
	}
	return timestamppb.New(time.Unix(0, n))
}

// in returns "($k, $k+1, …)" for n values starting at placeholder k.
func in(k, n int) string {
	var b strings.Builder
	b.WriteByte('(')
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "$%d", k+i)
	}
	b.WriteByte(')')
	return b.String()
}

func args(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// chunks splits a long list so that no statement binds too many values.
func chunks(ss []string, n int) [][]string {
	var out [][]string
	for len(ss) > n {
		out = append(out, ss[:n])
		ss = ss[n:]
	}
	if len(ss) > 0 {
		out = append(out, ss)
	}
	return out
}

const chunk = 1000

// padded repeats the last value of a list up to the next of a few sizes, so
// that "IN (…)" queries come in few shapes and stay prepared.
func padded(ss []string) []string {
	for _, n := range []int{1, 4, 16, 64, 128, 256, 512, chunk} {
		if len(ss) <= n {
			out := make([]string, n) // a copy: ss may share an array with the caller's next chunk
			copy(out, ss)
			for i := len(ss); i < n; i++ {
				out[i] = ss[len(ss)-1]
			}
			return out
		}
	}
	return ss
}

func (t *txn) Image(ctx context.Context, id string) (*metadatav1.Image, error) {
	img, _, err := t.ImageAndRefs(ctx, id)
	return img, err
}

func (t *txn) ImageAndRefs(ctx context.Context, id string) (*metadatav1.Image, []image.Ref, error) {
	row := t.queryRow(ctx, `SELECT id, record, recorded_at, last_tag_time, refs FROM images WHERE id = $1`, id)
	return scanImage(row, id)
}

func (t *txn) ImageByName(ctx context.Context, name string) (*metadatav1.Image, []image.Ref, error) {
	row := t.queryRow(ctx, `SELECT i.id, i.record, i.recorded_at, i.last_tag_time, i.refs FROM refs r JOIN images i ON i.id = r.image_id WHERE r.name = $1`, name)
	return scanImage(row, name)
}

// scanImage reads an image row (id, record, recorded_at, last_tag_time,
// refs); what names the image it.
func scanImage(row *sql.Row, what string) (*metadatav1.Image, []image.Ref, error) {
	var id string
	var rec []byte
	var recorded, tagged int64
	var refs string
	err := row.Scan(&id, &rec, &recorded, &tagged, &refs)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, errdefs.NotFound("No such image: %s", what).WithReason("IMAGE_NOT_FOUND").WithDetail("image", what)
	}
	if err != nil {
		return nil, nil, err
	}
	img := &metadatav1.Image{}
	if err := proto.Unmarshal(rec, img); err != nil {
		return nil, nil, errdefs.Internal("image %s: stored record does not decode: %v", id, err)
	}
	img.RecordedAt, img.LastTagTime = stamp(recorded), stamp(tagged)
	list, err := parseRefs(id, refs)
	return img, list, err
}

// parseRefs reads the refs column: lines of "name<TAB>familiar<TAB>is_tag".
func parseRefs(id, refs string) ([]image.Ref, error) {
	var out []image.Ref
	for line := range strings.SplitSeq(refs, "\n") {
		if line == "" {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != 3 {
			return nil, errdefs.Internal("image %s: stored reference %q does not decode", id, line)
		}
		out = append(out, image.Ref{Name: f[0], Familiar: f[1], ImageID: id, IsTag: f[2] != "0"})
	}
	return out, nil
}

func (t *txn) ImageIDsWithPrefix(ctx context.Context, hexPrefix string, limit int) ([]string, error) {
	lo := "sha256:" + hexPrefix
	rows, err := t.query(ctx, `SELECT id FROM images WHERE id >= $1 AND id < $2 ORDER BY id LIMIT $3`, lo, lo+"g", limit)
	if err != nil {
		return nil, err
	}
	return scanStrings(rows)
}

func scanStrings(rows *sql.Rows) ([]string, error) {
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

func (t *txn) InsertImage(ctx context.Context, n image.NewImage) error {
	img := proto.Clone(n.Image).(*metadatav1.Image)
	recorded := nanos(img.GetRecordedAt())
	img.RepoTags, img.RepoDigests, img.LastTagTime, img.RecordedAt = nil, nil, nil, nil
	rec, err := proto.MarshalOptions{Deterministic: true}.Marshal(img)
	if err != nil {
		return err
	}
	labels := ""
	if len(img.GetLabels()) > 0 {
		b, err := json.Marshal(img.GetLabels())
		if err != nil {
			return err
		}
		labels = string(b)
	}
	// child_count counts children recorded before their parent (after a
	// forced delete of the parent, and its return).
	res, err := t.exec(ctx, `INSERT INTO images (id, created, parent, manifest_digest, size, recorded_at, last_tag_time, record, labels, child_count)
		VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8, (SELECT COUNT(*) FROM images c WHERE c.parent = $1)) ON CONFLICT (id) DO NOTHING`,
		img.GetId(), nanos(img.GetCreated()), img.GetParent(), img.GetManifest().GetDigest(), img.GetSize(), recorded, rec, labels)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return err // n == 0: the image is recorded already, with its indexes
	}
	id := img.GetId()
	if p := img.GetParent(); p != "" {
		if _, err := t.exec(ctx, `UPDATE images SET child_count = child_count + 1 WHERE id = $1`, p); err != nil {
			return err
		}
	}
	// One multi-row statement per table: a build records an image per step.
	var rows [][]any
	for k, v := range img.GetLabels() {
		rows = append(rows, []any{id, k, v})
	}
	if err := t.insertRows(ctx, "labels (image_id, key, value)", rows, ""); err != nil {
		return err
	}
	rows = rows[:0]
	for i, l := range img.GetLayers() {
		rows = append(rows, []any{id, i, n.ChainIDs[i], l.GetDigest(), l.GetSize(), l.GetDiffSize()})
	}
	if err := t.insertRows(ctx, "layers (image_id, position, chain_id, digest, size, diff_size)", rows, ""); err != nil {
		return err
	}
	rows = rows[:0]
	seen := map[string]bool{}
	for _, d := range n.Blobs {
		if !seen[d] {
			seen[d] = true
			rows = append(rows, []any{d, id})
		}
	}
	if err := t.insertRows(ctx, "blobs (digest, image_id)", rows, ""); err != nil {
		return err
	}
	return nil
}

// insertRows inserts rows into "table (columns)", a few hundred per
// statement, each statement ending with suffix (an ON CONFLICT clause).
func (t *txn) insertRows(ctx context.Context, table string, rows [][]any, suffix string) error {
	const perStatement = 200
	for len(rows) > 0 {
		n := min(len(rows), perStatement)
		var b strings.Builder
		var a []any
		b.WriteString("INSERT INTO " + table + " VALUES ")
		for i, r := range rows[:n] {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(in(len(a)+1, len(r)))
			a = append(a, r...)
		}
		b.WriteString(suffix)
		if _, err := t.direct().ExecContext(ctx, b.String(), a...); err != nil {
			return err
		}
		rows = rows[n:]
	}
	return nil
}

func (t *txn) DeleteImage(ctx context.Context, id string) error {
	if _, err := t.exec(ctx, `UPDATE images SET child_count = child_count - 1 WHERE id = (SELECT parent FROM images WHERE id = $1)`, id); err != nil {
		return err
	}
	for _, q := range []string{
		`DELETE FROM labels WHERE image_id = $1`,
		`DELETE FROM layers WHERE image_id = $1`,
		`DELETE FROM blobs WHERE image_id = $1`,
		`DELETE FROM images WHERE id = $1`,
	} {
		if _, err := t.exec(ctx, q, id); err != nil {
			return err
		}
	}
	return nil
}

func (t *txn) exists(ctx context.Context, q string, a ...any) (bool, error) {
	var one int
	err := t.direct().QueryRowContext(ctx, q, a...).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

func (t *txn) HasChildren(ctx context.Context, id string) (bool, error) {
	return t.exists(ctx, `SELECT 1 FROM images WHERE parent = $1 LIMIT 1`, id)
}

func (t *txn) ChainIDs(ctx context.Context, id string) ([]string, []int64, error) {
	rows, err := t.query(ctx, `SELECT chain_id, diff_size FROM layers WHERE image_id = $1 ORDER BY position`, id)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var chains []string
	var sizes []int64
	for rows.Next() {
		var c string
		var s int64
		if err := rows.Scan(&c, &s); err != nil {
			return nil, nil, err
		}
		chains, sizes = append(chains, c), append(sizes, s)
	}
	return chains, sizes, rows.Err()
}

func (t *txn) ChainInUse(ctx context.Context, chainID string) (bool, error) {
	return t.exists(ctx, `SELECT 1 FROM layers WHERE chain_id = $1 LIMIT 1`, chainID)
}

func (t *txn) Resolve(ctx context.Context, name string) (string, error) {
	var id string
	err := t.queryRow(ctx, `SELECT image_id FROM refs WHERE name = $1 AND image_id <> ''`, name).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", errdefs.NotFound("No such image: %s", name).WithReason("IMAGE_NOT_FOUND")
	}
	return id, err
}

func (t *txn) Refs(ctx context.Context, ids []string) (map[string][]image.Ref, error) {
	out := make(map[string][]image.Ref, len(ids))
	for _, c := range chunks(ids, chunk) {
		c = padded(c)
		rows, err := t.query(ctx, `SELECT name, familiar, image_id, is_tag FROM refs WHERE image_id IN `+in(1, len(c))+` ORDER BY name`, args(c)...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var r image.Ref
			var tag int
			if err := rows.Scan(&r.Name, &r.Familiar, &r.ImageID, &tag); err != nil {
				rows.Close()
				return nil, err
			}
			r.IsTag = tag != 0
			out[r.ImageID] = append(out[r.ImageID], r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (t *txn) SetRef(ctx context.Context, r image.Ref, now time.Time) (string, error) {
	var prev, prevDigest string
	err := t.queryRow(ctx, `SELECT image_id, digest FROM refs WHERE name = $1`, r.Name).Scan(&prev, &prevDigest)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return "", err
	}
	tag := 0
	if r.IsTag {
		tag = 1
	}
	// The name determines familiar, is_tag and repository: a move changes
	// the image and the manifest (and SQLite then leaves the index of
	// familiar names alone).
	_, err = t.exec(ctx, `INSERT INTO refs (name, familiar, image_id, is_tag, created, repository, digest) VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (name) DO UPDATE SET image_id = excluded.image_id, created = excluded.created, digest = excluded.digest`,
		r.Name, r.Familiar, r.ImageID, tag, now.UnixNano(), r.Repository, r.Digest)
	if err != nil {
		return "", err
	}
	if prevDigest != r.Digest {
		if err := t.forgetManifest(ctx, prevDigest); err != nil {
			return "", err
		}
	}
	if prev == r.ImageID && !r.IsTag {
		return prev, nil // the image's references are what they were
	}
	var tagged int64
	if r.IsTag {
		tagged = now.UnixNano()
	}
	return prev, t.refColumns(ctx, r.ImageID, prev, tagged)
}

// forgetManifest removes the pushed manifest d when no reference and no
// index points at it any more, and then the manifests only it listed.
func (t *txn) forgetManifest(ctx context.Context, d string) error {
	if d == "" {
		return nil
	}
	if used, err := t.exists(ctx, `SELECT 1 FROM refs WHERE digest = $1 LIMIT 1`, d); err != nil || used {
		return err
	}
	if listed, err := t.exists(ctx, `SELECT 1 FROM manifest_needs WHERE digest = $1 AND is_manifest = 1 LIMIT 1`, d); err != nil || listed {
		return err
	}
	rows, err := t.query(ctx, `SELECT digest FROM manifest_needs WHERE manifest = $1 AND is_manifest = 1`, d)
	if err != nil {
		return err
	}
	children, err := scanStrings(rows)
	if err != nil {
		return err
	}
	for _, q := range []string{`DELETE FROM manifest_needs WHERE manifest = $1`, `DELETE FROM manifests WHERE digest = $1`} {
		if _, err := t.exec(ctx, q, d); err != nil {
			return err
		}
	}
	for _, c := range children {
		if err := t.forgetManifest(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

// refColumns recomputes the reference columns (refs, ref_count, tag_count)
// of images a and b ("" for none) from the refs table, in one statement,
// and sets the last tag time of a to tagged unless it is 0. Every change of
// references writes the rows of the images it concerns: transactions that
// change references of one image conflict (see image.Backend.UpdateRows).
func (t *txn) refColumns(ctx context.Context, a, b string, tagged int64) error {
	_, err := t.exec(ctx, `UPDATE images SET
		refs = COALESCE((SELECT string_agg(r.name || $3 || r.familiar || $3 || r.is_tag, $4 ORDER BY r.name) FROM refs r WHERE r.image_id = images.id), ''),
		ref_count = (SELECT COUNT(*) FROM refs r WHERE r.image_id = images.id),
		tag_count = (SELECT COUNT(*) FROM refs r WHERE r.image_id = images.id AND r.is_tag = 1),
		last_tag_time = CASE WHEN images.id = $1 AND CAST($5 AS BIGINT) <> 0 THEN CAST($5 AS BIGINT) ELSE images.last_tag_time END
		WHERE id IN ($1, $2)`, a, b, "\t", "\n", tagged)
	return err
}

func (t *txn) DeleteRef(ctx context.Context, name string) (string, error) {
	var id, d string
	err := t.queryRow(ctx, `DELETE FROM refs WHERE name = $1 RETURNING image_id, digest`, name).Scan(&id, &d)
	if errors.Is(err, sql.ErrNoRows) {
		return "", errdefs.NotFound("No such image: %s", name).WithReason("TAG_NOT_FOUND")
	}
	if err != nil {
		return "", err
	}
	if err := t.forgetManifest(ctx, d); err != nil {
		return "", err
	}
	return id, t.refColumns(ctx, id, "", 0)
}

func scanRefs(rows *sql.Rows) ([]image.Ref, error) {
	defer rows.Close()
	var out []image.Ref
	for rows.Next() {
		var r image.Ref
		var tag int
		if err := rows.Scan(&r.Name, &r.Familiar, &r.ImageID, &tag, &r.Repository, &r.Digest); err != nil {
			return nil, err
		}
		r.IsTag = tag != 0
		out = append(out, r)
	}
	return out, rows.Err()
}

const refColumnList = `name, familiar, image_id, is_tag, repository, digest`

func (t *txn) Ref(ctx context.Context, name string) (image.Ref, error) {
	rows, err := t.query(ctx, `SELECT `+refColumnList+` FROM refs WHERE name = $1`, name)
	if err != nil {
		return image.Ref{}, err
	}
	refs, err := scanRefs(rows)
	if err != nil {
		return image.Ref{}, err
	}
	if len(refs) == 0 {
		return image.Ref{}, errdefs.NotFound("No such image: %s", name).WithReason("TAG_NOT_FOUND")
	}
	return refs[0], nil
}

func (t *txn) RepositoryRefs(ctx context.Context, repository, digest string) ([]image.Ref, error) {
	rows, err := t.query(ctx, `SELECT `+refColumnList+` FROM refs WHERE repository = $1 AND digest = $2 ORDER BY name`, repository, digest)
	if err != nil {
		return nil, err
	}
	return scanRefs(rows)
}

func (t *txn) Tags(ctx context.Context, repository, after string, limit int) ([]string, error) {
	prefix := repository + ":"
	rows, err := t.query(ctx, `SELECT name FROM refs WHERE repository = $1 AND is_tag = 1 AND name > $2 ORDER BY name LIMIT $3`,
		repository, prefix+after, limit)
	if err != nil {
		return nil, err
	}
	names, err := scanStrings(rows)
	for i, n := range names {
		names[i] = strings.TrimPrefix(n, prefix)
	}
	return names, err
}

func (t *txn) HasRepository(ctx context.Context, repository string) (bool, error) {
	if ok, err := t.exists(ctx, `SELECT 1 FROM refs WHERE repository = $1 LIMIT 1`, repository); err != nil || ok {
		return ok, err
	}
	return t.exists(ctx, `SELECT 1 FROM repo_blobs WHERE repository = $1 LIMIT 1`, repository)
}

func (t *txn) InsertManifest(ctx context.Context, n image.NewManifest) error {
	m := n.Manifest
	annotations := "{}"
	if len(m.GetAnnotations()) > 0 {
		b, err := json.Marshal(m.GetAnnotations())
		if err != nil {
			return err
		}
		annotations = string(b)
	}
	res, err := t.exec(ctx, `INSERT INTO manifests (digest, media_type, artifact_type, subject, image_id, annotations, size, content, created)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (digest) DO NOTHING`,
		m.GetDigest(), m.GetMediaType(), m.GetArtifactType(), m.GetSubject(), m.GetImageId(), annotations,
		len(m.GetContent()), m.GetContent(), n.Created.UnixNano())
	if err != nil {
		return err
	}
	if k, err := res.RowsAffected(); err != nil || k == 0 {
		return err // recorded already, with what it needs
	}
	var rows [][]any
	seen := map[string]bool{}
	for _, list := range []struct {
		digests    []string
		isManifest int
	}{{n.Blobs, 0}, {n.Manifests, 1}} {
		for _, d := range list.digests {
			if !seen[d] {
				seen[d] = true
				rows = append(rows, []any{m.GetDigest(), d, list.isManifest})
			}
		}
	}
	return t.insertRows(ctx, "manifest_needs (manifest, digest, is_manifest)", rows, "")
}

func (t *txn) Manifest(ctx context.Context, d string) (*metadatav1.Manifest, error) {
	m := &metadatav1.Manifest{}
	var annotations string
	err := t.queryRow(ctx, `SELECT digest, media_type, artifact_type, subject, image_id, annotations, content FROM manifests WHERE digest = $1`, d).
		Scan(&m.Digest, &m.MediaType, &m.ArtifactType, &m.Subject, &m.ImageId, &annotations, &m.Content)
	if err == nil {
		m.Size = int64(len(m.Content))
		if err := json.Unmarshal([]byte(annotations), &m.Annotations); err != nil {
			return nil, errdefs.Internal("manifest %s: stored annotations do not decode: %v", d, err)
		}
		return m, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return nil, err
	}
	// The manifest of an image recorded by a build, an import, a load or
	// a pull.
	var id string
	var rec []byte
	err = t.queryRow(ctx, `SELECT id, record FROM images WHERE manifest_digest = $1 LIMIT 1`, d).Scan(&id, &rec)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errdefs.NotFound("manifest %s not found", d).WithReason("MANIFEST_UNKNOWN").WithDetail("digest", d)
	}
	if err != nil {
		return nil, err
	}
	img := &metadatav1.Image{}
	if err := proto.Unmarshal(rec, img); err != nil {
		return nil, errdefs.Internal("image %s: stored record does not decode: %v", id, err)
	}
	m = &metadatav1.Manifest{Digest: d, MediaType: img.GetManifest().GetMediaType(), Content: img.GetManifestBytes(), ImageId: id, Size: int64(len(img.GetManifestBytes()))}
	if m.MediaType == "" {
		var doc struct {
			MediaType string `json:"mediaType"`
		}
		_ = json.Unmarshal(m.Content, &doc)
		m.MediaType = doc.MediaType
	}
	return m, nil
}

func (t *txn) Referrers(ctx context.Context, repository, subject, artifactType string) ([]*metadatav1.Manifest, error) {
	q := `SELECT m.digest, m.media_type, m.artifact_type, m.annotations, m.size FROM manifests m
		WHERE m.subject = $1 AND EXISTS (SELECT 1 FROM refs r WHERE r.repository = $2 AND r.digest = m.digest)`
	a := []any{subject, repository}
	if artifactType != "" {
		q += ` AND m.artifact_type = $3`
		a = append(a, artifactType)
	}
	rows, err := t.query(ctx, q+` ORDER BY m.digest`, a...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*metadatav1.Manifest
	for rows.Next() {
		m := &metadatav1.Manifest{Subject: subject}
		var annotations string
		if err := rows.Scan(&m.Digest, &m.MediaType, &m.ArtifactType, &annotations, &m.Size); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(annotations), &m.Annotations); err != nil {
			return nil, errdefs.Internal("manifest %s: stored annotations do not decode: %v", m.Digest, err)
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

func (t *txn) LinkBlob(ctx context.Context, repository, digest string, now time.Time) error {
	_, err := t.exec(ctx, `INSERT INTO repo_blobs (repository, digest, created) VALUES ($1, $2, $3) ON CONFLICT (repository, digest) DO NOTHING`,
		repository, digest, now.UnixNano())
	return err
}

func (t *txn) UnlinkBlob(ctx context.Context, repository, digest string) error {
	res, err := t.exec(ctx, `DELETE FROM repo_blobs WHERE repository = $1 AND digest = $2`, repository, digest)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		if err == nil {
			err = errdefs.NotFound("blob %s not found in repository %s", digest, repository).WithReason("BLOB_UNKNOWN").
				WithDetail("digest", digest).WithDetail("repository", repository)
		}
		return err
	}
	return nil
}

func (t *txn) HasBlob(ctx context.Context, repository, digest string) (bool, error) {
	for _, q := range []string{
		`SELECT 1 FROM repo_blobs WHERE repository = $1 AND digest = $2`,
		`SELECT 1 FROM refs WHERE repository = $1 AND digest = $2 LIMIT 1`,
		`SELECT 1 FROM blobs b JOIN refs r ON r.image_id = b.image_id WHERE b.digest = $2 AND r.repository = $1 LIMIT 1`,
		`SELECT 1 FROM manifest_needs n JOIN refs r ON r.digest = n.manifest WHERE n.digest = $2 AND r.repository = $1 LIMIT 1`,
	} {
		if ok, err := t.exists(ctx, q, repository, digest); err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

func (t *txn) ListImages(ctx context.Context, q image.ListQuery) ([]image.ListRow, error) {
	var where []string
	var a []any
	arg := func(v any) string {
		a = append(a, v)
		return fmt.Sprintf("$%d", len(a))
	}
	if q.After != nil {
		where = append(where, fmt.Sprintf("(i.created, i.id) < (%s, %s)", arg(q.After.Created), arg(q.After.ID)))
	}
	if q.CreatedBefore != nil {
		where = append(where, "i.created < "+arg(q.CreatedBefore.UnixNano()))
	}
	if q.CreatedAfter != nil {
		where = append(where, "i.created > "+arg(q.CreatedAfter.UnixNano()))
	}
	for _, l := range q.Labels {
		c := "EXISTS (SELECT 1 FROM labels l WHERE l.image_id = i.id AND l.key = " + arg(l.Key)
		if l.HasValue {
			c += " AND l.value = " + arg(l.Value)
		}
		where = append(where, c+")")
	}
	const (
		hasChild = "i.child_count > 0"
		hasRef   = "i.ref_count > 0"
		hasTag   = "i.tag_count > 0"
	)
	if q.Heads {
		where = append(where, "i.child_count = 0")
	}
	if q.HasRef {
		where = append(where, hasRef)
	}
	if q.HasTag {
		where = append(where, hasTag)
	}
	if q.NoTag {
		where = append(where, "i.tag_count = 0")
	}
	if q.TopLevel {
		where = append(where, "("+hasRef+" OR i.child_count = 0)")
	}
	if q.RefPrefix != "" {
		where = append(where, fmt.Sprintf("EXISTS (SELECT 1 FROM refs r WHERE r.image_id = i.id AND r.familiar >= %s AND r.familiar < %s)", arg(q.RefPrefix), arg(q.RefPrefix+"\x7f")))
	}
	stmt := `SELECT i.id, i.parent, i.created, i.size, i.manifest_digest, i.labels, i.refs FROM images i`
	if len(where) > 0 {
		stmt += " WHERE " + strings.Join(where, " AND ")
	}
	stmt += " ORDER BY i.created DESC, i.id DESC LIMIT " + arg(q.Limit)
	// Without label conditions the query comes in a few shapes, worth
	// preparing (a page of `docker images` is one of them); with them, in
	// as many as there are label lists.
	var rows *sql.Rows
	var err error
	if len(q.Labels) == 0 {
		rows, err = t.query(ctx, stmt, a...)
	} else {
		rows, err = t.direct().QueryContext(ctx, stmt, a...)
	}
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []image.ListRow
	for rows.Next() {
		var r image.ListRow
		var labels, refs string
		if err := rows.Scan(&r.ID, &r.Parent, &r.Created, &r.Size, &r.ManifestDigest, &labels, &refs); err != nil {
			return nil, err
		}
		if r.Refs, err = parseRefs(r.ID, refs); err != nil {
			return nil, err
		}
		if labels != "" {
			if err := json.Unmarshal([]byte(labels), &r.Labels); err != nil {
				return nil, errdefs.Internal("image %s: stored labels do not decode: %v", r.ID, err)
			}
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

func (t *txn) Labels(ctx context.Context, ids []string) (map[string]map[string]string, error) {
	out := map[string]map[string]string{}
	for _, c := range chunks(ids, chunk) {
		rows, err := t.direct().QueryContext(ctx, `SELECT image_id, key, value FROM labels WHERE image_id IN `+in(1, len(c)), args(c)...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var id, k, v string
			if err := rows.Scan(&id, &k, &v); err != nil {
				rows.Close()
				return nil, err
			}
			if out[id] == nil {
				out[id] = map[string]string{}
			}
			out[id][k] = v
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (t *txn) AppendEvent(ctx context.Context, ev *metadatav1.Event) error {
	t.appended = true
	attrs := "{}"
	if len(ev.GetAttributes()) > 0 {
		b, err := json.Marshal(ev.GetAttributes())
		if err != nil {
			return err
		}
		attrs = string(b)
	}
	_, err := t.exec(ctx, `INSERT INTO events (time, action, image_id, reference, attributes, actor, via) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		nanos(ev.GetTime()), int(ev.GetAction()), ev.GetImageId(), ev.GetReference(), attrs, ev.GetActor(), ev.GetVia())
	return err
}

func (t *txn) PruneEvents(ctx context.Context, before time.Time) (int64, error) {
	res, err := t.exec(ctx, `DELETE FROM events WHERE time < $1`, before.UnixNano())
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (t *txn) PutCacheRecord(ctx context.Context, r *metadatav1.CacheRecord, replaces string) error {
	_, err := t.exec(ctx, `INSERT INTO cache_records (key, image_id, description, size, created, last_used) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (key) DO UPDATE SET image_id = excluded.image_id, description = excluded.description, size = excluded.size, created = excluded.created, last_used = excluded.last_used
		WHERE cache_records.image_id IN (excluded.image_id, $7) OR NOT EXISTS (SELECT 1 FROM images WHERE images.id = cache_records.image_id)`,
		r.GetKey(), r.GetImageId(), r.GetDescription(), r.GetSize(), nanos(r.GetCreated()), nanos(r.GetLastUsed()), replaces)
	return err
}

func scanCache(rows *sql.Rows) ([]*metadatav1.CacheRecord, error) {
	defer rows.Close()
	var out []*metadatav1.CacheRecord
	for rows.Next() {
		r := &metadatav1.CacheRecord{}
		var created, used int64
		if err := rows.Scan(&r.Key, &r.ImageId, &r.Description, &r.Size, &created, &used); err != nil {
			return nil, err
		}
		r.Created, r.LastUsed = stamp(created), stamp(used)
		out = append(out, r)
	}
	return out, rows.Err()
}

func (t *txn) CacheRecords(ctx context.Context, keys []string) ([]*metadatav1.CacheRecord, error) {
	var out []*metadatav1.CacheRecord
	for _, c := range chunks(keys, chunk) {
		rows, err := t.direct().QueryContext(ctx, `SELECT c.key, c.image_id, c.description, c.size, c.created, c.last_used
			FROM cache_records c JOIN images i ON i.id = c.image_id WHERE c.key IN `+in(1, len(c)), args(c)...)
		if err != nil {
			return nil, err
		}
		recs, err := scanCache(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, recs...)
	}
	return out, nil
}

func (t *txn) TouchCacheRecords(ctx context.Context, keys []string, at time.Time) error {
	for _, c := range chunks(keys, chunk) {
		a := append([]any{at.UnixNano()}, args(c)...)
		if _, err := t.direct().ExecContext(ctx, `UPDATE cache_records SET last_used = $1 WHERE key IN `+in(2, len(c)), a...); err != nil {
			return err
		}
	}
	return nil
}

func (t *txn) ListCacheRecords(ctx context.Context, after *image.CachePosition, limit int) ([]*metadatav1.CacheRecord, error) {
	q := `SELECT key, image_id, description, size, created, last_used FROM cache_records`
	a := []any{limit}
	if after != nil {
		q += ` WHERE last_used < $2 OR (last_used = $2 AND key < $3)`
		a = append(a, after.LastUsed, after.Key)
	}
	rows, err := t.direct().QueryContext(ctx, q+` ORDER BY last_used DESC, key DESC LIMIT $1`, a...)
	if err != nil {
		return nil, err
	}
	return scanCache(rows)
}

func (t *txn) DeleteCacheRecords(ctx context.Context, before time.Time) ([]string, error) {
	q, a := `DELETE FROM cache_records RETURNING key`, []any{}
	if !before.IsZero() {
		q, a = `DELETE FROM cache_records WHERE last_used < $1 RETURNING key`, []any{before.UnixNano()}
	}
	rows, err := t.direct().QueryContext(ctx, q, a...)
	if err != nil {
		return nil, err
	}
	return scanStrings(rows)
}

// referenced selects the blobs something needs that match cond (on the
// column digest): an image's (manifest, config, layers) or a pushed
// manifest's (itself, its config, layers and index entries). UNION makes
// them distinct; the condition is in each part, where the indexes are.
func referenced(cond string) string {
	return `SELECT digest FROM blobs WHERE ` + cond + ` UNION SELECT digest FROM manifest_needs WHERE ` + cond +
		` UNION SELECT digest FROM manifests WHERE ` + cond
}

func (t *txn) ReferencedBlobs(ctx context.Context, after string, limit int) ([]string, error) {
	rows, err := t.query(ctx, referenced(`digest > $1`)+` ORDER BY digest LIMIT $2`, after, limit)
	if err != nil {
		return nil, err
	}
	return scanStrings(rows)
}

func (t *txn) Referenced(ctx context.Context, digests []string) (map[string]bool, error) {
	found, err := t.stringsIn(ctx, digests, nil, func(in string) string { return referenced(`digest IN ` + in) })
	return set(found), err
}

// stringsIn runs the query query makes of an IN list over vals, a chunk
// of vals at a time (a statement's parameters are bounded), with lead's
// arguments before each chunk's, and returns the first column of every
// row.
func (t *txn) stringsIn(ctx context.Context, vals []string, lead []any, query func(in string) string) ([]string, error) {
	var out []string
	for _, c := range chunks(vals, chunk) {
		a := append(append([]any{}, lead...), args(c)...)
		rows, err := t.direct().QueryContext(ctx, query(in(len(lead)+1, len(c))), a...)
		if err != nil {
			return nil, err
		}
		found, err := scanStrings(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, found...)
	}
	return out, nil
}

// set is the set of ss.
func set(ss []string) map[string]bool {
	out := make(map[string]bool, len(ss))
	for _, s := range ss {
		out[s] = true
	}
	return out
}

func (t *txn) Usage(ctx context.Context) (image.Usage, error) {
	var u image.Usage
	const tagged = `SELECT l.chain_id FROM layers l JOIN refs r ON r.image_id = l.image_id AND r.is_tag = 1`
	const taggedBlobs = `SELECT l.digest FROM layers l JOIN refs r ON r.image_id = l.image_id AND r.is_tag = 1`
	queries := []struct {
		q    string
		dest []any
	}{
		{`SELECT COUNT(*) FROM images`, []any{&u.Images}},
		{`SELECT COUNT(DISTINCT image_id) FROM refs WHERE is_tag = 1 AND image_id <> ''`, []any{&u.ActiveImages}},
		{`SELECT COALESCE(SUM(s), 0) FROM (SELECT MAX(diff_size) AS s FROM layers GROUP BY chain_id) t`, []any{&u.ImagesSize}},
		{`SELECT COALESCE(SUM(s), 0) FROM (SELECT MAX(diff_size) AS s FROM layers WHERE chain_id NOT IN (` + tagged + `) GROUP BY chain_id) t`, []any{&u.ImagesReclaimable}},
		{`SELECT COUNT(*), COALESCE(SUM(s), 0) FROM (SELECT MAX(size) AS s FROM layers GROUP BY digest) t`, []any{&u.Layers, &u.LayersSize}},
		{`SELECT COUNT(DISTINCT digest) FROM layers WHERE digest IN (` + taggedBlobs + `)`, []any{&u.ActiveLayers}},
		{`SELECT COALESCE(SUM(s), 0) FROM (SELECT MAX(size) AS s FROM layers WHERE digest NOT IN (` + taggedBlobs + `) GROUP BY digest) t`, []any{&u.LayersReclaimable}},
		{`SELECT COUNT(*), COALESCE(SUM(size), 0) FROM cache_records`, []any{&u.CacheRecords, &u.CacheSize}},
		{`SELECT COUNT(*), COALESCE(SUM(size), 0) FROM cache_records WHERE image_id IN (SELECT image_id FROM refs WHERE is_tag = 1)`, []any{&u.ActiveCacheRecords, &u.CacheReclaimable}},
	}
	for _, q := range queries {
		if err := t.direct().QueryRowContext(ctx, q.q).Scan(q.dest...); err != nil {
			return u, err
		}
	}
	// The last query counted the active records' size; reclaimable is the rest.
	u.CacheReclaimable = u.CacheSize - u.CacheReclaimable
	return u, nil
}

func (t *txn) MarkCollectable(ctx context.Context, digests []string, now time.Time) ([]string, error) {
	refd, err := t.Referenced(ctx, digests)
	if err != nil {
		return nil, err
	}
	leased, err := t.Leased(ctx, digests, now)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, d := range digests {
		if refd[d] || leased[d] {
			continue
		}
		if _, err := t.exec(ctx, `INSERT INTO gc_marks (digest, marked_at, deleted_at) VALUES ($1, $2, 0)
			ON CONFLICT (digest) DO UPDATE SET marked_at = excluded.marked_at, deleted_at = 0`, d, now.UnixNano()); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

func (t *txn) SetCollected(ctx context.Context, digest string, deleted bool, at time.Time) error {
	if !deleted {
		_, err := t.exec(ctx, `DELETE FROM gc_marks WHERE digest = $1 AND deleted_at = 0`, digest)
		return err
	}
	if _, err := t.exec(ctx, `UPDATE gc_marks SET deleted_at = $1 WHERE digest = $2`, at.UnixNano(), digest); err != nil {
		return err
	}
	_, err := t.exec(ctx, `DELETE FROM repo_blobs WHERE digest = $1`, digest)
	return err
}

func (t *txn) Collected(ctx context.Context, digests []string, since time.Time) ([]string, error) {
	return t.stringsIn(ctx, digests, []any{since.UnixNano()}, func(in string) string {
		return `SELECT digest FROM gc_marks WHERE (deleted_at = 0 OR deleted_at >= $1) AND digest IN ` + in
	})
}

func (t *txn) PruneMarks(ctx context.Context, before time.Time) error {
	_, err := t.exec(ctx, `DELETE FROM gc_marks WHERE deleted_at <> 0 AND deleted_at < $1`, before.UnixNano())
	return err
}

func (t *txn) CreateLease(ctx context.Context, id string, created, expires time.Time) error {
	res, err := t.exec(ctx, `INSERT INTO leases (id, created, expires) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING`,
		id, created.UnixNano(), expires.UnixNano())
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		if err == nil {
			err = errdefs.AlreadyExists("lease %q exists", id).WithReason("LEASE_EXISTS").WithDetail("lease", id)
		}
		return err
	}
	return nil
}

func (t *txn) LeaseExpires(ctx context.Context, id string) (time.Time, error) {
	var expires int64
	err := t.queryRow(ctx, `SELECT expires FROM leases WHERE id = $1`, id).Scan(&expires)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, errdefs.NotFound("no lease %q", id).WithReason("LEASE_NOT_FOUND").WithDetail("lease", id)
	}
	return time.Unix(0, expires), err
}

func (t *txn) AddLeaseBlobs(ctx context.Context, id string, digests []string) error {
	rows := make([][]any, 0, len(digests))
	seen := map[string]bool{}
	for _, d := range digests {
		if !seen[d] {
			seen[d] = true
			rows = append(rows, []any{id, d})
		}
	}
	return t.insertRows(ctx, "lease_blobs (lease_id, digest)", rows, " ON CONFLICT (lease_id, digest) DO NOTHING")
}

func (t *txn) DeleteLease(ctx context.Context, id string) error {
	if _, err := t.exec(ctx, `DELETE FROM lease_blobs WHERE lease_id = $1`, id); err != nil {
		return err
	}
	_, err := t.exec(ctx, `DELETE FROM leases WHERE id = $1`, id)
	return err
}

func (t *txn) Leased(ctx context.Context, digests []string, now time.Time) (map[string]bool, error) {
	found, err := t.stringsIn(ctx, digests, []any{now.UnixNano()}, func(in string) string {
		return `SELECT DISTINCT b.digest FROM lease_blobs b JOIN leases l ON l.id = b.lease_id
			WHERE l.expires > $1 AND b.digest IN ` + in
	})
	return set(found), err
}

func (t *txn) PruneLeases(ctx context.Context, now time.Time) (int64, error) {
	if _, err := t.exec(ctx, `DELETE FROM lease_blobs WHERE lease_id IN (SELECT id FROM leases WHERE expires <= $1)`, now.UnixNano()); err != nil {
		return 0, err
	}
	res, err := t.exec(ctx, `DELETE FROM leases WHERE expires <= $1`, now.UnixNano())
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
