package plan

import (
	"io/fs"
	"testing"

	mode "github.com/tonistiigi/dchapes-mode"
)

func TestCopyMode(t *testing.T) {
	octal := fs.FileMode(0o750)
	symbolic := func(s string) *Copy {
		set, err := mode.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return &Copy{ChmodSymbolic: s, chmodSet: &set}
	}
	for _, tc := range []struct {
		cp   *Copy
		m    fs.FileMode
		want fs.FileMode
	}{
		{nil, 0o644, 0o644},
		{&Copy{}, fs.ModeDir | 0o755, 0o755},
		{nil, 0o755 | fs.ModeSetuid | fs.ModeSticky, 0o755 | fs.ModeSetuid | fs.ModeSticky},
		{&Copy{Chmod: &octal}, 0o644 | fs.ModeSetgid, 0o750},
		{symbolic("u+x"), 0o644, 0o744},
		{symbolic("go-w"), 0o666, 0o644},
		{symbolic("=r"), 0o755, 0o444},
		{symbolic("a+X"), 0o644, 0o644},
		{symbolic("a+X"), fs.ModeDir | 0o644, 0o755},
		{symbolic("a+X"), 0o744, 0o755},
		{symbolic("u=rwx,g=rx,o="), 0o600, 0o750},
		{symbolic("g+s"), 0o755, 0o755 | fs.ModeSetgid},
	} {
		name := "none"
		if tc.cp != nil && tc.cp.ChmodSymbolic != "" {
			name = tc.cp.ChmodSymbolic
		} else if tc.cp != nil && tc.cp.Chmod != nil {
			name = tc.cp.Chmod.String()
		}
		if got := tc.cp.Mode(tc.m); got != tc.want {
			t.Errorf("--chmod=%s: Mode(%v) = %v, want %v", name, tc.m, got, tc.want)
		}
	}
}

// An octal --chmod keeps its special bits, and the directories a COPY
// creates get its permission bits (0755 otherwise), as BuildKit makes them.
func TestCopyChmodOctal(t *testing.T) {
	for _, tc := range []struct {
		chmod     string
		file, dir fs.FileMode
	}{
		{"", 0o644, 0o755},
		{"0640", 0o640, 0o640},
		{"4755", 0o755 | fs.ModeSetuid, 0o755},
		{"1777", 0o777 | fs.ModeSticky, 0o777},
		{"u+x", 0o744, 0o755},
	} {
		src := "COPY one.txt /x"
		if tc.chmod != "" {
			src = "COPY --chmod=" + tc.chmod + " one.txt /x"
		}
		pl, err := makeGolden([]byte("FROM busybox\n" + src + "\n"))
		if err != nil {
			t.Fatal(err)
		}
		var cp *Copy
		for _, st := range pl.Stages[0].Steps {
			if st.Copy != nil {
				cp = st.Copy
			}
		}
		if got := cp.Mode(0o644); got != tc.file {
			t.Errorf("--chmod=%s: Mode(0644) = %v, want %v", tc.chmod, got, tc.file)
		}
		if got := cp.DirMode(); got != tc.dir {
			t.Errorf("--chmod=%s: DirMode() = %v, want %v", tc.chmod, got, tc.dir)
		}
	}
	if _, err := makeGolden([]byte("FROM busybox\nCOPY --chmod=u+q one.txt /x\n")); err == nil {
		t.Error("--chmod=u+q: no error")
	}
}
