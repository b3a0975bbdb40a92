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
