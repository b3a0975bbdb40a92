package layertest

import (
	"io/fs"
	"testing"
)

func TestResolveStaysInTheRoot(t *testing.T) {
	tree := Tree{
		"etc":        {Mode: fs.ModeDir | 0o755},
		"etc/passwd": {Mode: 0o644, Ino: 2},
		"abs":        {Mode: fs.ModeSymlink | 0o777, Target: "/etc"},
		"up":         {Mode: fs.ModeSymlink | 0o777, Target: "../../../etc/passwd"},
		"loop":       {Mode: fs.ModeSymlink | 0o777, Target: "loop"},
		"dangling":   {Mode: fs.ModeSymlink | 0o777, Target: "/nowhere/x"},
	}
	for _, tc := range []struct {
		path   string
		follow bool
		want   string
		exists bool
	}{
		{"abs/passwd", false, "etc/passwd", true},
		{"up", true, "etc/passwd", true},
		{"up", false, "up", true},
		{"/../../etc/./passwd", true, "etc/passwd", true},
		{"loop", true, "loop", false},
		{"dangling", true, "nowhere/x", false},
		{"etc/passwd/x", true, "etc/passwd/x", false},
		{"..", true, "", true},
	} {
		got, ok := tree.Resolve(tc.path, tc.follow)
		if got != tc.want || ok != tc.exists {
			t.Errorf("Resolve(%q, %v) = %q, %v; want %q, %v", tc.path, tc.follow, got, ok, tc.want, tc.exists)
		}
	}
}

func TestParseReport(t *testing.T) {
	report := "2\t41ed\t0\t0\t-\t/\t\n" +
		"11\t41ed\t0\t0\t-\t/etc\t\n" +
		"12\t81a4\t0\t0\t" + sum("inside") + "\t/etc/passwd\t\n" +
		"12\t81a4\t0\t0\t" + sum("inside") + "\t/localpasswd\t\n" +
		"13\ta1ff\t0\t0\t-\t/localetc\t/tmp/host/etc\n" +
		"14\t89ed\t0\t0\t" + sum("su") + "\t/su\t\n"
	tree, err := ParseReport([]byte(report))
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range tree.Verify([]Check{
		IsFile("etc/passwd", "inside"), SameFile("localpasswd", "etc/passwd"),
		IsSymlink("localetc", "/tmp/host/etc"), HasPerm("su", 0o755|fs.ModeSetuid), Absent("etc/shadow"),
	}) {
		t.Error(err)
	}
	if errs := tree.Verify([]Check{IsFile("etc/passwd", "other"), NotSameFile("localpasswd", "etc/passwd")}); len(errs) != 2 {
		t.Errorf("Verify of two false checks gave %d errors, want 2", len(errs))
	}
}
