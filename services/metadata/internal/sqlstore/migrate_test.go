package sqlstore

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/strata-build/strata/lib/harness"
	"github.com/strata-build/strata/services/metadata/internal/image"
	"github.com/strata-build/strata/services/metadata/internal/image/imagetest"
)

// testBackfill checks that migration 0002's backfill computes the counters
// and labels that the store keeps up to date itself.
func testBackfill(t *testing.T, db *DB) {
	ctx := context.Background()
	s := image.New(db, image.Options{})
	chain := imagetest.Chain(t, 2)
	for i, img := range chain {
		opts := image.PutOptions{}
		if i != 1 {
			opts.Tags = []string{fmt.Sprintf("t:%d", i), fmt.Sprintf("u:%d", i)}
		}
		if _, err := s.PutImage(ctx, img, opts); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.PutImage(ctx, imagetest.Make(t, imagetest.Step{LayerSize: 1, Labels: map[string]string{"a": "b"}}), image.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	snapshot := func() [][]string {
		pool, _ := db.d.reader()
		rows, err := pool.QueryContext(ctx, `SELECT id, ref_count, tag_count, child_count, labels, refs FROM images ORDER BY id`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out [][]string
		for rows.Next() {
			var id, labels, refList string
			var refs, tags, children int
			if err := rows.Scan(&id, &refs, &tags, &children, &labels, &refList); err != nil {
				t.Fatal(err)
			}
			if labels != "" { // compare as JSON: PostgreSQL spaces it differently
				var m map[string]string
				if err := json.Unmarshal([]byte(labels), &m); err != nil {
					t.Fatalf("labels %q: %v", labels, err)
				}
				labels = fmt.Sprint(m)
			}
			out = append(out, []string{id, fmt.Sprint(refs, tags, children), labels, refList})
		}
		return out
	}
	before := snapshot()
	pool, _ := db.d.writer()
	if _, err := pool.ExecContext(ctx, `UPDATE images SET ref_count = 0, tag_count = 0, child_count = 0, labels = '', refs = ''`); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"0002_list_columns.sql", "0004_image_refs.sql"} {
		body, err := migrations.ReadFile("migrations/" + db.d.name() + "/" + m)
		if err != nil {
			t.Fatal(err)
		}
		update := string(body)[strings.Index(string(body), "UPDATE images SET"):]
		update = update[:strings.Index(update, ";")+1]
		if _, err := pool.ExecContext(ctx, update); err != nil {
			t.Fatalf("backfill of %s: %v", m, err)
		}
	}
	if diff := cmp.Diff(before, snapshot()); diff != "" {
		t.Errorf("backfilled columns differ from the maintained ones (-maintained +backfilled):\n%s", diff)
	}

	// The manifests migration gives every reference its repository and
	// manifest, as SetRef does.
	if _, err := s.PutImage(ctx, chain[1], image.PutOptions{RepoDigests: []string{"localhost:5000/team/app@" + chain[1].GetManifest().GetDigest()},
		Tags: []string{"localhost:5000/team/app:v1.2-rc_3"}}); err != nil {
		t.Fatal(err)
	}
	refsNow := func() [][]string {
		pool, _ := db.d.reader()
		rows, err := pool.QueryContext(ctx, `SELECT name, repository, digest FROM refs ORDER BY name`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out [][]string
		for rows.Next() {
			var n, r, d string
			if err := rows.Scan(&n, &r, &d); err != nil {
				t.Fatal(err)
			}
			out = append(out, []string{n, r, d})
		}
		return out
	}
	before = refsNow()
	if _, err := pool.ExecContext(ctx, `UPDATE refs SET repository = '', digest = ''`); err != nil {
		t.Fatal(err)
	}
	// The migration that added the columns backfills them.
	found, _ := fs.Glob(migrations, "migrations/"+db.d.name()+"/*_manifests.sql")
	if len(found) != 1 {
		t.Fatalf("migrations named *_manifests.sql: %v, want one", found)
	}
	body, err := migrations.ReadFile(found[0])
	if err != nil {
		t.Fatal(err)
	}
	for rest := string(body); strings.Contains(rest, "UPDATE refs SET"); {
		rest = rest[strings.Index(rest, "UPDATE refs SET"):]
		update := rest[:strings.Index(rest, ";")+1]
		rest = rest[len(update):]
		if _, err := pool.ExecContext(ctx, update); err != nil {
			t.Fatalf("backfill of refs: %v", err)
		}
	}
	if diff := cmp.Diff(before, refsNow()); diff != "" {
		t.Errorf("backfilled references differ from the maintained ones (-maintained +backfilled):\n%s", diff)
	}
}

func TestBackfillSQLite(t *testing.T) {
	testBackfill(t, newSQLite(t, filepath.Join(t.TempDir(), "m.db")))
}

func TestBackfillPostgres(t *testing.T) {
	pg := harness.StartPostgres(t)
	testBackfill(t, newPostgres(t, pg.DSN))
}
