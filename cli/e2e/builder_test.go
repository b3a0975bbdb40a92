package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/strata-build/strata/lib/harness"
)

// strata builder du lists a build's cache mount with its size, and
// strata builder prune removes it, printing what it reclaimed; the next
// build's cache mount starts empty.
func TestBuilderDuAndPrune(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("the builder needs root for overlay mounts and runc")
	}
	s := startStack(t)
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs.tar")
	if err := os.WriteFile(rootfs, harness.BusyboxRootfs(t), 0o644); err != nil {
		t.Fatal(err)
	}
	s.ok(t, "", "import", rootfs, "busybox")
	ctx := filepath.Join(dir, "ctx")
	if err := os.Mkdir(ctx, 0o755); err != nil {
		t.Fatal(err)
	}
	df := "FROM busybox\n" +
		`RUN --mount=type=cache,id=gocache,target=/c sh -c 'n=$(cat /c/n 2>/dev/null || echo 0); echo $((n+1)) > /c/n; head -c 99998 /dev/zero > /c/blob; echo "count=$((n+1))"'` + "\n"
	if err := os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	build := func(want string) {
		t.Helper()
		if out := s.ok(t, "", "build", "--no-cache", "--progress=plain", ctx); !strings.Contains(out, want) {
			t.Errorf("build printed no %s:\n%s", want, out)
		}
	}
	build("count=1")
	build("count=2")

	// 99,998 bytes of blob and "2\n": 100kB.
	du := s.ok(t, "", "builder", "du")
	if ok, _ := regexp.MatchString(`^ID\s+RECLAIMABLE\s+SIZE\s+LAST ACCESSED\ngocache\s+true\s+100kB\s+(Less than a second|\d+ seconds) ago\n\nReclaimable:\s+100kB\nTotal:\s+100kB\n$`, du); !ok {
		t.Errorf("builder du =\n%s", du)
	}

	if r := s.strata(t, "n\n", "builder", "prune"); r.code != 0 || !strings.HasSuffix(r.stdout, "Are you sure you want to continue? [y/N] ") {
		t.Errorf("builder prune answered no: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	prune := s.ok(t, "", "builder", "prune", "-f")
	if ok, _ := regexp.MatchString(`^ID\s+RECLAIMABLE\s+SIZE\s+LAST ACCESSED\ngocache\s+true\s+100kB\s+.* ago\nTotal:\t100kB\n$`, prune); !ok {
		t.Errorf("builder prune -f =\n%s", prune)
	}
	if got, want := s.ok(t, "", "builder", "du"), "Reclaimable:\t0B\nTotal:\t\t0B\n"; got != want {
		t.Errorf("builder du after the prune = %q, want %q", got, want)
	}
	if got, want := s.ok(t, "", "builder", "prune", "-f"), "Total:\t0B\n"; got != want {
		t.Errorf("builder prune -f of nothing = %q, want %q", got, want)
	}
	build("count=1")
}
