package build

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/strata-build/strata/lib/errdefs"
)

// A RUN step given secrets sees them as BuildKit gives them (a file with
// the mount's mode and owner, a variable), and nothing of them is left
// anywhere once the build is over: not in a layer, the config, the
// history, the build's events, a cache record or metadata row, nor in any
// file of the builder's state on disk. The mount points the runner made
// for the files do not show up in the layers either.
func TestRunSecretMounts(t *testing.T) {
	e := newRuncEnv(t)
	fileSecret, envSecret := randomSecret(t), randomSecret(t)
	df := `FROM busybox
RUN --mount=type=secret,id=npmrc --mount=type=secret,id=TOKEN sh -c 'sha256sum /run/secrets/npmrc | cut -d" " -f1 > /file.sum; stat -c "%a %u:%g" /run/secrets/npmrc > /file.stat; ls /run/secrets > /file.ls'
RUN --mount=type=secret,id=npmrc,target=/etc/app/npmrc,mode=0440,uid=1000,gid=1001 stat -c "%a %u:%g" /etc/app/npmrc > /tmp/owned.stat
RUN --mount=type=secret,id=TOKEN,env=TOKEN sh -c 'printf %s "$TOKEN" | sha256sum | cut -d" " -f1 > /env.sum; test ! -e /run/secrets/TOKEN && echo nofile > /env.nofile'
RUN --mount=type=secret,id=npmrc,target=/etc/npmrc cat /etc/npmrc > /dev/null
RUN --mount=type=secret,id=absent --mount=type=secret,id=absent-env,env=ABSENT sh -c 'test ! -e /run/secrets/absent && echo none > /absent; echo "[${ABSENT-unset}]" > /absent.env'
RUN ls -a / > /root.ls
`
	res, rec := e.mustBuild(df, nil, func(r *Request) {
		r.Secrets = map[string][]byte{"npmrc": fileSecret, "TOKEN": envSecret}
	})
	img := e.image(res.ImageID)
	files := e.files(img)
	for path, want := range map[string]string{
		"file.sum":       "-rw-r--r-- 0:0 " + sha256Hex(fileSecret) + "\n",
		"file.stat":      "-rw-r--r-- 0:0 400 0:0\n",
		"tmp/owned.stat": "-rw-r--r-- 0:0 440 1000:1001\n",
		"env.sum":        "-rw-r--r-- 0:0 " + sha256Hex(envSecret) + "\n",
		"env.nofile":     "-rw-r--r-- 0:0 nofile\n",
		"absent":         "-rw-r--r-- 0:0 none\n",
		"absent.env":     "-rw-r--r-- 0:0 []\n", // set, empty, as in BuildKit
	} {
		if got := files[path]; got != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}
	for _, p := range []string{"run", "run/secrets", "run/secrets/npmrc", "etc/app", "etc/app/npmrc", "etc/npmrc"} {
		if _, ok := files[p]; ok {
			t.Errorf("%s is in the image: a secret's mount point leaked into a layer", p)
		}
	}
	// The step with the target under /etc, which the image has: /etc is
	// not in its layer (it was copied up for the mount point only).
	layers := img.Layers()
	for i, l := range layers[1:] {
		for _, entry := range e.layerListing(l) {
			if strings.Contains(entry, "Name:etc/") || strings.Contains(entry, "Name:run/") {
				t.Errorf("layer %d holds %s", i+1, entry)
			}
		}
	}
	if strings.Contains(files["root.ls"], "run") {
		t.Errorf("the next step sees a /run: %q", files["root.ls"])
	}

	e.assertNowhere(t, rec, fileSecret, envSecret)

	// A step that writes beside its secret's file keeps its writes, and
	// only them.
	res, _ = e.mustBuild("FROM busybox\nRUN --mount=type=secret,id=npmrc,target=/etc/npmrc sh -c 'echo x > /etc/written'\n", nil,
		func(r *Request) { r.Secrets = map[string][]byte{"npmrc": fileSecret} })
	layers = e.image(res.ImageID).Layers()
	var names []string
	for _, entry := range e.layerListing(layers[len(layers)-1]) {
		_, rest, _ := strings.Cut(entry, "Name:")
		name, _, _ := strings.Cut(rest, " ")
		names = append(names, name)
	}
	if strings.Join(names, " ") != "etc/ etc/written" {
		t.Errorf("the layer of a step that wrote beside its secret holds %q, want etc/ and etc/written", names)
	}
}

// A step that swaps its secret's mount point, or a directory above it,
// for a symlink to a host directory must not make the builder remove what
// the host holds there when it takes the mount point out of the layer:
// the host directory holds what the stubs were (an empty file in an empty
// directory), which a removal that followed the symlink would take.
func TestSecretStubRemovalStaysInTheLayer(t *testing.T) {
	e := newRuncEnv(t)
	for _, tc := range []struct{ name, target, swap string }{
		{"a directory made for the mount point", "/x/y/npmrc", "/x"},
		{"the mount point's own directory", "/x/y/npmrc", "/x/y"},
		// The image's own directories cannot be renamed (overlayfs
		// refuses): a directory made in one.
		{"the mount point's own directory in the image's", "/tmp/y/npmrc", "/tmp/y"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host := t.TempDir()
			if err := os.MkdirAll(filepath.Join(host, "y"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(host, "y", "npmrc"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			// host stands for the swapped directory: for .../y its y is
			// the mount point's directory.
			link := host
			if strings.HasSuffix(tc.swap, "/y") {
				link = filepath.Join(host, "y")
				if err := os.WriteFile(filepath.Join(link, "keep"), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			df := "FROM busybox\nRUN --mount=type=secret,id=npmrc,target=" + tc.target +
				" sh -c 'test -s " + tc.target + " && /bin/mv " + tc.swap + " /moved && /bin/ln -s " + link + " " + tc.swap + "'\n"
			if _, _, err := e.build(df, nil, func(r *Request) { r.Secrets = map[string][]byte{"npmrc": []byte("s3cret")} }); err != nil {
				t.Fatal(err)
			}
			for _, p := range []string{"y/npmrc", "y"} {
				if _, err := os.Stat(filepath.Join(host, p)); err != nil {
					t.Errorf("the host's %s, where the step's symlink led, was removed: %v", p, err)
				}
			}
		})
	}
}

func TestRunRequiredSecretMissingFails(t *testing.T) {
	e := newRuncEnv(t)
	_, _, err := e.build("FROM busybox\nRUN --mount=type=secret,id=npmrc,required=true cat /run/secrets/npmrc\n", nil,
		func(r *Request) { r.Secrets = map[string][]byte{"other": []byte("x")} })
	if err == nil {
		t.Fatal("a build without a required secret succeeded")
	}
	var de *errdefs.Error
	if !strings.Contains(err.Error(), `secret "npmrc" is required`) || !errdefs.IsInvalidArgument(err) || !errors.As(err, &de) || de.Reason() != "SECRET_NOT_FOUND" {
		t.Errorf("build error = %v, want INVALID_ARGUMENT SECRET_NOT_FOUND naming npmrc", err)
	}
	if !strings.Contains(err.Error(), "Dockerfile:2") {
		t.Errorf("build error = %v, want the Dockerfile line", err)
	}
}

// assertNowhere fails when any of values is in what the build left: every
// blob (layers decompressed), every image and cache record, every event,
// or any file under the test's directories (the snapshots, the context
// store, the sandbox's state).
func (e *env) assertNowhere(t *testing.T, rec *recorder, values ...[]byte) {
	t.Helper()
	check := func(what string, b []byte) {
		for _, v := range values {
			if bytes.Contains(b, v) {
				t.Errorf("a secret is in %s", what)
			}
		}
	}
	e.blobs.mu.Lock()
	for d, b := range e.blobs.blobs {
		check("blob "+d.String(), b)
		if gz, err := gzip.NewReader(bytes.NewReader(b)); err == nil {
			raw, _ := io.ReadAll(gz)
			check("layer "+d.String(), raw)
			tr := tar.NewReader(bytes.NewReader(raw))
			for {
				h, err := tr.Next()
				if err != nil {
					break
				}
				check("the name of an entry of layer "+d.String(), []byte(h.Name+h.Linkname))
			}
		}
	}
	e.blobs.mu.Unlock()
	e.index.mu.Lock()
	for id, img := range e.index.images {
		b, _ := proto.Marshal(img)
		check("image row "+id, b)
	}
	for k, r := range e.index.records {
		b, _ := proto.Marshal(r)
		check("cache record "+k, b)
	}
	e.index.mu.Unlock()
	for _, ev := range rec.events {
		b, _ := proto.Marshal(ev)
		check("event "+ev.String(), b)
	}
	dir := filepath.Dir(t.TempDir())
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err == nil {
			check("file "+p, b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func randomSecret(t *testing.T) []byte {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return []byte("strata-secret-" + hex.EncodeToString(b))
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
