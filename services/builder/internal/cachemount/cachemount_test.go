package cachemount

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
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
	if p == a {
		t.Errorf("a private step while the id is in use got %s, the shared steps' directory", p)
	}
	rp()
	ra()
	rb()

	// Another id: "id" has two instances now, which two locked steps
	// take at once.
	l, rl := acquire(t, s, Spec{ID: "lk", Sharing: Locked})
	got := make(chan string)
	go func() {
		d, r, err := s.Acquire(context.Background(), Spec{ID: "lk", Sharing: Locked})
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
	_, rl = acquire(t, s, Spec{ID: "lk", Sharing: Locked})
	cancel()
	if _, _, err := s.Acquire(ctx, Spec{ID: "lk", Sharing: Locked}); err == nil {
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
			s.caches["a"].instances[0].used = time.Now().Add(-2 * time.Hour)
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
			if des, _ := os.ReadDir(filepath.Join(s.dir, "trash")); len(des) != 0 {
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

// As in BuildKit, the instance a private step gets while its id is in use
// is kept: a later step of any sharing reuses it when it is free, the
// store lists it, counts it in its size, prunes it, and keeps it across a
// restart.
func TestPrivateInstancesAreKept(t *testing.T) {
	root := t.TempDir()
	s, err := New(root, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, ra := acquire(t, s, Spec{ID: "id", Sharing: Private})
	b, rb := acquire(t, s, Spec{ID: "id", Sharing: Private})
	if a == b {
		t.Fatalf("two private steps at once got one directory, %s", a)
	}
	os.WriteFile(filepath.Join(a, "f"), []byte("a"), 0o644)
	os.WriteFile(filepath.Join(b, "f"), []byte("bb"), 0o644)
	ra()
	time.Sleep(10 * time.Millisecond)
	rb()
	// Free again: the most recently used instance first, whatever the
	// sharing; a second step at once gets the other.
	for _, sh := range []Sharing{Private, Shared, Locked} {
		d, r := acquire(t, s, Spec{ID: "id", Sharing: sh})
		if d != b {
			t.Errorf("a %s step after both ended got %s, want %s, the last used", sh, d, b)
		}
		d2, r2 := acquire(t, s, Spec{ID: "id", Sharing: Private})
		if d2 != a {
			t.Errorf("a private step beside a %s one got %s, want %s", sh, d2, a)
		}
		r2()
		time.Sleep(10 * time.Millisecond)
		r()
	}
	sizes := func(us []Usage) string {
		var out []string
		for _, u := range us {
			out = append(out, u.ID+":"+strconv.FormatInt(u.Size, 10))
		}
		return strings.Join(out, ",")
	}
	if got := sizes(s.Usage()); got != "id:2,id:1" {
		t.Errorf("Usage lists %s, want both instances, the last used first", got)
	}
	s2, err := New(root, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := sizes(s2.Usage()); got != "id:2,id:1" {
		t.Errorf("after a restart Usage lists %s, want both instances", got)
	}
	d, r := acquire(t, s2, Spec{ID: "id", Sharing: Private})
	d2, r2 := acquire(t, s2, Spec{ID: "id", Sharing: Private})
	if d != b || d2 != a {
		t.Errorf("after a restart two private steps got %s and %s, want %s and %s", d, d2, b, a)
	}
	r()
	r2()
	if got := sizes(s2.Prune(PruneOptions{IDs: []string{"id"}})); got != "id:2,id:1" {
		t.Errorf("Prune removed %s, want both instances, the least recently used first", got)
	}
	for _, dir := range []string{a, b} {
		if _, err := os.Stat(filepath.Dir(dir)); !os.IsNotExist(err) {
			t.Errorf("after the prune %s is still there (%v)", dir, err)
		}
	}
	if u := s2.Usage(); len(u) != 0 {
		t.Errorf("after the prune Usage lists %+v", u)
	}
}

// A locked step waits while every instance is in use, by any sharing, and
// takes a free one when there is one.
func TestLockedWaitsForAFreeInstance(t *testing.T) {
	s, err := New(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	a, ra := acquire(t, s, Spec{ID: "id", Sharing: Shared})
	got := make(chan string, 1)
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
		t.Fatalf("a locked step got %s while a shared one uses the id's one instance", d)
	case <-time.After(200 * time.Millisecond):
	}
	ra()
	if d := <-got; d != a {
		t.Errorf("the locked step got %s, want %s", d, a)
	}

	// Two instances (a private step's beside a shared one): a locked step
	// takes the free one at once.
	sh, rs := acquire(t, s, Spec{ID: "id", Sharing: Shared})
	p, rp := acquire(t, s, Spec{ID: "id", Sharing: Private})
	if p == sh {
		t.Fatalf("a private step got %s, which a shared one uses", p)
	}
	rp()
	l, rl := acquire(t, s, Spec{ID: "id", Sharing: Locked})
	if l != p {
		t.Errorf("a locked step got %s, want the free instance %s", l, p)
	}
	rl()
	rs()
}

// The store's size counts every instance: past it the least recently used
// go, one instance at a time.
func TestEvictsInstances(t *testing.T) {
	s, err := New(t.TempDir(), 2500)
	if err != nil {
		t.Fatal(err)
	}
	a, ra := acquire(t, s, Spec{ID: "id", Sharing: Private})
	b, rb := acquire(t, s, Spec{ID: "id", Sharing: Private})
	os.WriteFile(filepath.Join(a, "f"), make([]byte, 1000), 0o644)
	os.WriteFile(filepath.Join(b, "f"), make([]byte, 1000), 0o644)
	ra()
	time.Sleep(10 * time.Millisecond)
	rb()
	fill(t, s, "other", 1000)
	if _, err := os.Stat(a); !os.IsNotExist(err) {
		t.Errorf("the least recently used instance was kept over the limit")
	}
	if _, err := os.Stat(filepath.Join(b, "f")); err != nil {
		t.Errorf("the other instance went too: %v", err)
	}
	if got := len(s.Usage()); got != 2 {
		t.Errorf("Usage lists %d instances, want 2", got)
	}
}
