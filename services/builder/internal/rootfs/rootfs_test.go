package rootfs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/lib/errdefs"
)

func write(t *testing.T, root, name, body string) {
	t.Helper()
	p := filepath.Join(root, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestReadFileRefusesWhatIsNotARegularFile(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("device nodes need root")
	}
	host := t.TempDir()
	write(t, host, "secret", "host secret\n")
	cases := []struct {
		name  string
		setup func(t *testing.T, p string)
		want  string
	}{
		{"fifo", func(t *testing.T, p string) { must(t, unix.Mkfifo(p, 0o644)) }, "a FIFO"},
		{"char device", func(t *testing.T, p string) { must(t, unix.Mknod(p, unix.S_IFCHR|0o644, int(unix.Mkdev(1, 5)))) }, "a character device"},
		{"directory", func(t *testing.T, p string) { must(t, os.Mkdir(p, 0o755)) }, "a directory"},
		{"too large", func(t *testing.T, p string) { must(t, os.WriteFile(p, make([]byte, 2048), 0o644)) }, "more than the 1024 bytes"},
		{"symlink to a fifo", func(t *testing.T, p string) {
			must(t, unix.Mkfifo(filepath.Join(filepath.Dir(p), "fifo"), 0o644))
			must(t, os.Symlink("fifo", p))
		}, "a FIFO"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			must(t, os.MkdirAll(filepath.Join(root, "etc"), 0o755))
			tc.setup(t, filepath.Join(root, "etc", "group"))
			start := time.Now()
			_, err := ReadFile(root, "/etc/group", 1024)
			if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "/etc/group") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ReadFile = %v, want INVALID_ARGUMENT naming /etc/group and %q", err, tc.want)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("ReadFile took %v", d)
			}
		})
	}
}

func TestReadFileResolvesSymlinksInsideTheRoot(t *testing.T) {
	host := t.TempDir()
	write(t, host, "passwd", "host:x:0:0::/:/bin/sh\n")
	root := t.TempDir()
	write(t, root, host+"/passwd", "image:x:0:0::/:/bin/sh\n")
	must(t, os.MkdirAll(filepath.Join(root, "etc"), 0o755))
	// An absolute link and one that climbs out both land inside the root.
	for _, target := range []string{host + "/passwd", "../../../../../../.." + host + "/passwd"} {
		link := filepath.Join(root, "etc", "passwd")
		os.Remove(link)
		must(t, os.Symlink(target, link))
		b, err := ReadFile(root, "/etc/passwd", 1024)
		if err != nil || !strings.HasPrefix(string(b), "image:") {
			t.Errorf("ReadFile through a link to %s = %q, %v; want the image's file", target, b, err)
		}
	}
	if _, err := ReadFile(root, "/etc/missing", 1024); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadFile of a missing file = %v, want fs.ErrNotExist", err)
	}
}

func TestLookupChown(t *testing.T) {
	root := t.TempDir()
	write(t, root, "etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\nweb:x:33:33::/:/bin/sh\n")
	write(t, root, "etc/group", "root:x:0:\napp:x:1002:\nstaff:x:50:\nweb:x:33:\n")
	for _, tc := range []struct {
		spec     string
		uid, gid int
		err      bool
	}{
		{spec: "1000", uid: 1000, gid: 1000},
		{spec: "1000:50", uid: 1000, gid: 50},
		{spec: "app", uid: 1000, gid: 1002}, // the group named app, as Docker looks it up
		{spec: "app:staff", uid: 1000, gid: 50},
		{spec: "web:0", uid: 33, gid: 0},
		{spec: "nobody", err: true},
		{spec: "app:nogroup", err: true},
		{spec: "a:b:c", err: true},
		{spec: ":50", err: true},
	} {
		uid, gid, err := LookupChown(root, tc.spec)
		if tc.err {
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("LookupChown(%q) = %d, %d, %v; want INVALID_ARGUMENT", tc.spec, uid, gid, err)
			}
			continue
		}
		if err != nil || uid != tc.uid || gid != tc.gid {
			t.Errorf("LookupChown(%q) = %d, %d, %v; want %d, %d", tc.spec, uid, gid, err, tc.uid, tc.gid)
		}
	}
}

func TestLookupUser(t *testing.T) {
	root := t.TempDir()
	write(t, root, "etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n")
	write(t, root, "etc/group", "root:x:0:\napp:x:1001:\nextra:x:7:app\n")
	for _, tc := range []struct {
		spec string
		want User
	}{
		{"", User{UID: 0, GID: 0, Home: "/root"}},
		{"app", User{UID: 1000, GID: 1001, Sgids: []uint32{7}, Home: "/home/app"}},
		{"4242", User{UID: 4242, GID: 0, Home: "/"}},
	} {
		u, err := LookupUser(root, tc.spec)
		if err != nil || u.UID != tc.want.UID || u.GID != tc.want.GID || u.Home != tc.want.Home || len(u.Sgids) != len(tc.want.Sgids) {
			t.Errorf("LookupUser(%q) = %+v, %v; want %+v", tc.spec, u, err, tc.want)
		}
	}
	if _, err := LookupUser(root, "ghost"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("LookupUser(ghost) = %v, want INVALID_ARGUMENT", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
