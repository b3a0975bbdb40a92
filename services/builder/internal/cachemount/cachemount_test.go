package cachemount

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func acquire(t *testing.T, s *Store, sp Spec) (string, func()) {
	t.Helper()
	dir, release, err := s.Acquire(context.Background(), sp)
	if err != nil {
		t.Fatalf("Acquire(%+v): %v", sp, err)
	}
	return dir, release
}

func TestCacheSurvivesANewStore(t *testing.T) {
	root := t.TempDir()
	s, err := New(root, 0)
	if err != nil {
		t.Fatal(err)
	}
	dir, release := acquire(t, s, Spec{ID: "/root/.cache", Sharing: Shared})
	if err := os.WriteFile(filepath.Join(dir, "counter"), []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	release()
	s2, err := New(root, 0)
	if err != nil {
		t.Fatal(err)
	}
	dir2, release2 := acquire(t, s2, Spec{ID: "/root/.cache", Sharing: Shared})
	defer release2()
	if b, err := os.ReadFile(filepath.Join(dir2, "counter")); err != nil || string(b) != "1" {
		t.Fatalf("after a restart the cache holds %q, %v; want the counter", b, err)
	}
	if u := s2.Usage(); len(u) != 1 || u[0].ID != "/root/.cache" || u[0].Size != 1 || !u[0].InUse {
		t.Errorf("Usage = %+v", u)
	}
}

func TestNewDirectoryHasModeAndOwner(t *testing.T) {
	s, err := New(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	dir, release := acquire(t, s, Spec{ID: "x", Mode: 0o1770, UID: 123, GID: 456})
	defer release()
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Mode&0o7777 != 0o1770 || st.Uid != 123 || st.Gid != 456 {
		t.Errorf("mode %o owner %d:%d, want 1770 123:456", st.Mode&0o7777, st.Uid, st.Gid)
	}
}

func TestSharing(t *testing.T) {
	s, err := New(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	a, ra := acquire(t, s, Spec{ID: "id", Sharing: Shared})
	b, rb := acquire(t, s, Spec{ID: "id", Sharing: Shared})
	if a != b {
		t.Errorf("two shared steps got %s and %s, want one directory", a, b)
	}
	p, rp := acquire(t, s, Spec{ID: "id", Sharing: Private})
	if p == a || !strings.Contains(p, "private") {
		t.Errorf("a private step while the id is in use got %s, want its own directory", p)
	}
	os.WriteFile(filepath.Join(p, "f"), nil, 0o644)
	rp()
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("the private directory outlives its step: %v", err)
	}
	ra()
	rb()

	l, rl := acquire(t, s, Spec{ID: "id", Sharing: Locked})
	got := make(chan string)
	go func() {
		d, r, err := s.Acquire(context.Background(), Spec{ID: "id", Sharing: Locked})
		if err != nil {
			got <- err.Error()
			return
		}
		r()
		got <- d
	}()
	select {
	case d := <-got:
		t.Fatalf("a second locked step got %s while the first holds the id", d)
	case <-time.After(200 * time.Millisecond):
	}
	rl()
	if d := <-got; d != l {
		t.Errorf("the second locked step got %s, want %s", d, l)
	}

	ctx, cancel := context.WithCancel(context.Background())
	_, rl = acquire(t, s, Spec{ID: "id", Sharing: Locked})
	cancel()
	if _, _, err := s.Acquire(ctx, Spec{ID: "id", Sharing: Locked}); err == nil {
		t.Error("a locked wait outlived its context")
	}
	rl()
}

func TestEvictsLeastRecentlyUsedIdleIDs(t *testing.T) {
	s, err := New(t.TempDir(), 2500)
	if err != nil {
		t.Fatal(err)
	}
	fill := func(id string) string {
		dir, release := acquire(t, s, Spec{ID: id})
		os.WriteFile(filepath.Join(dir, "f"), make([]byte, 1000), 0o644)
		release()
		return dir
	}
	old := fill("old")
	time.Sleep(10 * time.Millisecond)
	mid := fill("mid")
	// "old" in use: it stays, "mid" goes.
	_, rold := acquire(t, s, Spec{ID: "old"})
	time.Sleep(10 * time.Millisecond)
	fill("new")
	if _, err := os.Stat(mid); !os.IsNotExist(err) {
		t.Errorf("mid, the least recently used idle id, was kept over the limit")
	}
	if _, err := os.Stat(filepath.Join(old, "f")); err != nil {
		t.Errorf("old, in use, was evicted: %v", err)
	}
	rold()
	var ids []string
	for _, u := range s.Usage() {
		ids = append(ids, u.ID)
	}
	if strings.Join(ids, ",") != "old,new" {
		t.Errorf("ids held = %v, want old,new", ids)
	}
}

func TestSeedFillsANewDirectoryPerBase(t *testing.T) {
	s, err := New(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	seeds := 0
	seed := func(body string) func(string) error {
		return func(dir string) error {
			seeds++
			return os.WriteFile(filepath.Join(dir, "f"), []byte(body), 0o644)
		}
	}
	a, ra := acquire(t, s, Spec{ID: "id", Base: "one", Seed: seed("one")})
	ra()
	a2, ra2 := acquire(t, s, Spec{ID: "id", Base: "one", Seed: seed("again")})
	ra2()
	b, rb := acquire(t, s, Spec{ID: "id", Base: "two", Seed: seed("two")})
	defer rb()
	if a != a2 || a == b || seeds != 2 {
		t.Errorf("dirs %s %s %s after %d seeds, want the first two the same, seeded once, the third apart", a, a2, b, seeds)
	}
	if got, _ := os.ReadFile(filepath.Join(b, "f")); string(got) != "two" {
		t.Errorf("the second base's directory holds %q", got)
	}
}

// fill acquires id, writes size bytes into it and releases it.
func fill(t *testing.T, s *Store, id string, size int) {
	t.Helper()
	dir, release := acquire(t, s, Spec{ID: id, Sharing: Shared})
	if err := os.WriteFile(filepath.Join(dir, "f"), make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
	release()
}

func ids(us []Usage) []string {
	var out []string
	for _, u := range us {
		out = append(out, u.ID)
	}
	return out
}

func TestPrune(t *testing.T) {
	for _, tc := range []struct {
		name        string
		opts        PruneOptions
		wantRemoved []string // least recently used first
		wantKept    []string // most recently used first
	}{
		{"everything idle", PruneOptions{}, []string{"a", "b", "c"}, []string{"busy"}},
		{"by id", PruneOptions{IDs: []string{"b", "busy", "nope"}}, []string{"b"}, []string{"busy", "c", "a"}},
		{"unused for", PruneOptions{UnusedFor: time.Hour}, []string{"a"}, []string{"busy", "c", "b"}},
		// 400 bytes held (busy's 100 counted): a and b go to reach 200.
		{"keep bytes", PruneOptions{KeepBytes: 250}, []string{"a", "b"}, []string{"busy", "c"}},
		{"keep bytes above the size", PruneOptions{KeepBytes: 1000}, nil, []string{"busy", "c", "b", "a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(t.TempDir(), 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range []string{"a", "b", "c", "busy"} {
				fill(t, s, id, 100)
			}
			s.mu.Lock()
			s.entries["a"].used = time.Now().Add(-2 * time.Hour)
			s.mu.Unlock()
			_, release := acquire(t, s, Spec{ID: "busy", Sharing: Shared})
			defer release()

			removed := s.Prune(tc.opts)
			if got := ids(removed); strings.Join(got, ",") != strings.Join(tc.wantRemoved, ",") {
				t.Errorf("Prune(%+v) removed %v, want %v", tc.opts, got, tc.wantRemoved)
			}
			for _, u := range removed {
				if u.Size != 100 {
					t.Errorf("removed %s of size %d, want 100", u.ID, u.Size)
				}
				if _, err := os.Stat(filepath.Join(s.dir, hashID(u.ID))); !os.IsNotExist(err) {
					t.Errorf("%s's directory is still there (%v)", u.ID, err)
				}
			}
			if got := ids(s.Usage()); strings.Join(got, ",") != strings.Join(tc.wantKept, ",") {
				t.Errorf("after Prune(%+v) Usage lists %v, want %v", tc.opts, got, tc.wantKept)
			}
			if des, _ := os.ReadDir(filepath.Join(s.dir, "private")); len(des) != 0 {
				t.Errorf("the private directory keeps %d pruned directories", len(des))
			}
		})
	}
}

func TestPrunedIDStartsEmpty(t *testing.T) {
	root := t.TempDir()
	s, err := New(root, 0)
	if err != nil {
		t.Fatal(err)
	}
	fill(t, s, "x", 10)
	if got := s.Prune(PruneOptions{}); len(got) != 1 {
		t.Fatalf("Prune removed %v, want x", got)
	}
	dir, release := acquire(t, s, Spec{ID: "x", Sharing: Shared})
	defer release()
	if des, err := os.ReadDir(dir); err != nil || len(des) != 0 {
		t.Errorf("x after the prune holds %d entries (%v), want none", len(des), err)
	}
	s2, err := New(root, 0)
	if err != nil {
		t.Fatal(err)
	}
	if u := s2.Usage(); len(u) != 1 || u[0].Size != 0 {
		t.Errorf("a new store lists %+v, want x empty", u)
	}
}
