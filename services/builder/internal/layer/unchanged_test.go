package layer

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestUnchanged(t *testing.T) {
	mtime := time.Unix(1700000000, 123456789)
	write := func(root, name, body string, when time.Time) {
		t.Helper()
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, when, when); err != nil {
			t.Fatal(err)
		}
	}
	lower := t.TempDir()
	write(lower, "dir/foo", "bar\n", mtime)
	for _, tc := range []struct {
		name  string
		upper func(dir string)
		want  bool
	}{
		{"nothing", func(string) {}, true},
		{"the same file again", func(d string) { write(d, "dir/foo", "bar\n", mtime) }, true},
		{"the same file, its mtime in seconds (from a layer tar)", func(d string) { write(d, "dir/foo", "bar\n", mtime.Truncate(time.Second)) }, true},
		{"other content of the same size and mtime", func(d string) { write(d, "dir/foo", "baz\n", mtime) }, false},
		{"another mtime", func(d string) { write(d, "dir/foo", "bar\n", mtime.Add(time.Second)) }, false},
		{"a new file", func(d string) { write(d, "dir/new", "bar\n", mtime) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			upper := t.TempDir()
			tc.upper(upper)
			if got, err := Unchanged(upper, lower); err != nil || got != tc.want {
				t.Errorf("Unchanged = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}
