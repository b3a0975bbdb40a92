package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/strata-build/strata/lib/harness"
)

// strata build --secret gives RUN --mount=type=secret its secrets, from a
// file and from a variable, and nothing of them is left once the build is
// over: not in the saved image (layers, config, history), the CLI's
// output, or any file of the stack (blobs, the metadata database with its
// events and cache records, the builder's state directory, the services'
// logs).
func TestBuildWithSecrets(t *testing.T) {
	s := startStack(t)
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs.tar")
	if err := os.WriteFile(rootfs, harness.BusyboxRootfs(t), 0o644); err != nil {
		t.Fatal(err)
	}
	s.ok(t, "", "import", rootfs, "busybox")

	fileSecret, envSecret := random(t), random(t)
	// The file the secret comes from is outside the directories scanned.
	srcDir, err := os.MkdirTemp("", "strata-e2e-secret-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(srcDir) })
	src := filepath.Join(srcDir, "npmrc")
	if err := os.WriteFile(src, fileSecret, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("STRATA_E2E_TOKEN", string(envSecret))

	ctx := filepath.Join(dir, "ctx")
	if err := os.Mkdir(ctx, 0o755); err != nil {
		t.Fatal(err)
	}
	df := "FROM busybox\n" +
		`RUN --mount=type=secret,id=npmrc,required sh -c 'test "$(sha256sum < /run/secrets/npmrc | cut -d" " -f1)" = ` + sum(fileSecret) + ` && echo file ok'` + "\n" +
		`RUN --mount=type=secret,id=STRATA_E2E_TOKEN,env=TOKEN sh -c 'test "$(printf %s "$TOKEN" | sha256sum | cut -d" " -f1)" = ` + sum(envSecret) + ` && echo env ok > /env.ok'` + "\n"
	if err := os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	out := s.ok(t, "", "build", "--progress=plain", "--secret", "id=npmrc,src="+src, "--secret", "id=STRATA_E2E_TOKEN", "-t", "secrets:1", ctx)
	if !strings.Contains(out, "file ok") {
		t.Errorf("the file secret's step did not see it:\n%s", out)
	}

	r := s.strata(t, "", "build", "--progress=plain", "--no-cache", "-t", "secrets:2", ctx)
	if r.code == 0 || !strings.Contains(r.stderr, `secret "npmrc" is required`) {
		t.Errorf("build without the required secret: exit %d, stderr %q; want a failure naming npmrc", r.code, r.stderr)
	}
	r = s.strata(t, "", "build", "--secret", "id=npmrc,src="+filepath.Join(srcDir, "nosuch"), ctx)
	if r.code == 0 || !strings.Contains(r.stderr, "npmrc") {
		t.Errorf("build with a missing secret file: exit %d, stderr %q; want a failure naming it", r.code, r.stderr)
	}

	var seen bytes.Buffer
	seen.WriteString(out)
	seen.WriteString(s.ok(t, "", "save", "secrets:1"))
	seen.WriteString(s.ok(t, "", "history", "--no-trunc", "secrets:1"))
	seen.WriteString(s.ok(t, "", "inspect", "secrets:1"))
	for _, v := range [][]byte{fileSecret, envSecret} {
		if bytes.Contains(expand(seen.Bytes()), v) {
			t.Error("a secret is in the build's output, the saved image, its history or inspect")
		}
	}
	// The scan's control: the history row holds the secret's digest, so
	// the blobs and the metadata database must show it.
	control, controls := []byte(sum(fileSecret)), 0
	root := filepath.Dir(t.TempDir())
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		b = expand(b)
		if bytes.Contains(b, control) {
			controls++
		}
		for _, v := range [][]byte{fileSecret, envSecret} {
			if bytes.Contains(b, v) {
				t.Errorf("a secret is in %s", p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if controls < 2 {
		t.Errorf("the scan found the step's history in %d files, want the config blob and the metadata database at least", controls)
	}
}

// expand returns b with what it holds decompressed appended: a gzip
// stream's content, and a tar's entries expanded in turn, so that a layer
// inside a saved image is read too.
func expand(b []byte) []byte {
	out := bytes.Clone(b)
	if gz, err := gzip.NewReader(bytes.NewReader(b)); err == nil {
		if raw, err := io.ReadAll(gz); err == nil {
			out = append(out, expand(raw)...)
		}
	}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		body, _ := io.ReadAll(tr)
		out = append(out, h.Name...)
		out = append(out, expand(body)...)
	}
	return out
}

func random(t *testing.T) []byte {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return []byte("strata-e2e-secret-" + hex.EncodeToString(b))
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
