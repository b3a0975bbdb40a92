package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The parity suite builds the same Dockerfiles from the same busybox
// rootfs with Strata and with the machine's Docker Engine (classic
// builder), and compares what users see: history rows, config fields and
// the final root filesystem.

var parityCases = []struct {
	name       string
	dockerfile string
	files      map[string]string
}{
	{
		name: "seed",
		dockerfile: `ARG BASE
FROM $BASE
LABEL maintainer="NGINX Docker Maintainers <docker-maint@nginx.com>"
ENV NGINX_VERSION=1.17.4
ENV NJS_VERSION=0.3.5
ENV PKG_RELEASE=1~buster
RUN set -x && echo "nginx:x:101:101:nginx:/nonexistent:/bin/false" >> /etc/passwd && echo "nginx:x:101:" >> /etc/group && mkdir -p /var/log/nginx && echo ok > /var/log/nginx/install.log
RUN ln -sf /dev/stdout /var/log/nginx/access.log && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 80
STOPSIGNAL SIGTERM
CMD ["nginx", "-g", "daemon off;"]
`,
	},
	{
		name: "copy",
		dockerfile: `ARG BASE
FROM $BASE
COPY dir /copied/
COPY f.txt /app/
COPY --chown=1:2 f.txt dir/a.txt /multi/
COPY *.txt /glob/
WORKDIR /app
COPY . ./ctx
ADD archive.tar /unpacked/
RUN rm /bin/vi && chmod 600 /etc/group && mkdir -p /var/empty
WORKDIR /var/empty
WORKDIR sub
`,
		files: map[string]string{
			"dir/a.txt":      "a\n",
			"dir/run.sh":     "#!/bin/sh\necho hi\n",
			"dir/sub/b":      "b\n",
			"dir/l -> a.txt": "",
			"f.txt":          "f\n",
			"g.txt":          "g\n",
			".dockerignore":  "ignored\n",
			"ignored/secret": "s\n",
			"empty/":         "",
		},
	},
	{
		name: "config",
		dockerfile: `ARG BASE
FROM $BASE
MAINTAINER someone <s@example.com>
ARG V=1
ARG W
ENV A=$V B="x y" C=${W:-unset}
ENV LEGACY old style
LABEL version=$V "quoted key"=val
EXPOSE 80 53/udp 8000-8001
USER nobody
VOLUME /data ["/logs"]
STOPSIGNAL SIGQUIT
HEALTHCHECK --interval=5m --timeout=3s --retries=3 CMD wget -q -O- http://localhost/ || exit 1
RUN echo "$A $B $C" > /tmp/out
SHELL ["/bin/sh", "-ec"]
ENTRYPOINT ["/bin/echo"]
CMD run --verbose
ONBUILD RUN echo triggered
`,
	},
	{
		name: "multistage",
		dockerfile: `ARG BASE
FROM $BASE AS build
RUN mkdir /out && echo built > /out/artifact && ln -s artifact /out/link
FROM $BASE
COPY --from=build /out /opt/
COPY --from=0 /etc/passwd /passwd
CMD ["/bin/sh"]
`,
	},
}

// hashRE and cutHashRE match the content hashes of COPY and ADD in
// history, whole and truncated: Docker's are a tarsum of the context as its
// daemon received it, which Strata does not reproduce.
var (
	hashRE    = regexp.MustCompile(`(file|dir|multi):[0-9a-f]{64}`)
	cutHashRE = regexp.MustCompile(`(file|dir|multi):[0-9a-f]+`)
)

func TestDockerParity(t *testing.T) {
	if _, err := exec.LookPath("docker"); err != nil {
		t.Fatal("docker not found: the parity suite needs the Docker Engine (make deps)")
	}
	s := startStack(t)
	rootfs := rootfsTar(t)
	base := fmt.Sprintf("strata-parity-busybox:%d", os.Getpid())
	docker(t, nil, "import", rootfs, base)
	t.Cleanup(func() { exec.Command("docker", "rmi", "-f", base).Run() })
	s.ok(t, "", "import", rootfs, base)

	for _, tc := range parityCases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, tc.files)
			if tc.files != nil {
				writeArchive(t, filepath.Join(dir, "archive.tar"))
			}
			if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(tc.dockerfile), 0o644); err != nil {
				t.Fatal(err)
			}
			tag := fmt.Sprintf("strata-parity-%s:%d", tc.name, os.Getpid())
			dockerBuild(t, dir, tag, base)
			t.Cleanup(func() { exec.Command("docker", "rmi", "-f", tag).Run() })
			s.ok(t, dir, "build", "-q", "--build-arg", "BASE="+base, "-t", tag, ".")

			// History, column by column but for IDs and times.
			format := "{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"
			want := hashRE.ReplaceAllString(docker(t, nil, "history", "--no-trunc", "-H=false", "--format", format, tag), "$1:<hash>")
			got := hashRE.ReplaceAllString(s.ok(t, "", "history", "--no-trunc", "-H=false", "--format", format, tag), "$1:<hash>")
			if diff := cmp.Diff(strings.Split(want, "\n"), strings.Split(got, "\n")); diff != "" {
				t.Errorf("history (-docker +strata):\n%s", diff)
			}
			// And as the default table shows them: CREATED BY cut to 45
			// characters, sizes for humans.
			want = cutHashRE.ReplaceAllString(docker(t, nil, "history", "--format", format, tag), "$1:<hash>")
			got = cutHashRE.ReplaceAllString(s.ok(t, "", "history", "--format", format, tag), "$1:<hash>")
			if diff := cmp.Diff(strings.Split(want, "\n"), strings.Split(got, "\n")); diff != "" {
				t.Errorf("history, truncated and human (-docker +strata):\n%s", diff)
			}

			dockerImg := readArchive(t, dockerSave(t, tag))
			strataImg := readArchive(t, s.save(t, tag))
			for _, key := range []string{"Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Volumes", "Labels", "StopSignal", "Healthcheck", "Shell", "OnBuild", "ArgsEscaped"} {
				if d, g := string(dockerImg.config[key]), string(strataImg.config[key]); d != g {
					t.Errorf("config %s: docker %s, strata %s", key, d, g)
				}
			}
			if diff := cmp.Diff(dockerImg.top, strataImg.top); diff != "" {
				t.Errorf("image config (-docker +strata):\n%s", diff)
			}
			if d, g := dockerImg.emptyLayers, strataImg.emptyLayers; !cmp.Equal(d, g) {
				t.Errorf("history empty_layer flags: docker %v, strata %v", d, g)
			}
			if diff := cmp.Diff(dockerImg.files, strataImg.files); diff != "" {
				t.Errorf("root filesystem (-docker +strata):\n%s", diff)
			}
		})
	}
}

func docker(t *testing.T, stdin []byte, args ...string) string {
	t.Helper()
	cmd := exec.Command("docker", args...)
	cmd.Env = append(os.Environ(), "TZ=UTC", "DOCKER_BUILDKIT=0")
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("docker %v (the parity suite needs the Docker Engine): %v\n%s", args, err, stderr.String())
	}
	return string(b)
}

func dockerBuild(t *testing.T, dir, tag, base string) {
	t.Helper()
	cmd := exec.Command("docker", "build", "-q", "--build-arg", "BASE="+base, "-t", tag, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
}

func dockerSave(t *testing.T, tag string) []byte {
	t.Helper()
	return []byte(docker(t, nil, "save", tag))
}

func (s *stack) save(t *testing.T, tag string) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), "image.tar")
	s.ok(t, "", "save", "-o", p, tag)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeArchive writes a small tar for ADD to extract.
func writeArchive(t *testing.T, p string) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range []struct {
		name, body string
		mode       int64
		dir        bool
	}{{name: "top/", dir: true, mode: 0o750}, {name: "top/x", body: "x\n", mode: 0o640}, {name: "y", body: "y\n", mode: 0o755}} {
		h := &tar.Header{Name: f.name, Mode: f.mode, Uid: 7, Gid: 8}
		if f.dir {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.body))
		}
		tw.WriteHeader(h)
		tw.Write([]byte(f.body))
	}
	tw.Close()
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// savedImage is what the comparison needs of a docker-archive.
type savedImage struct {
	config      map[string]json.RawMessage
	top         map[string]string // author, os, architecture, history[i].author
	emptyLayers []bool
	files       map[string]string
}

// readArchive reads a docker-archive of one image: its config fields, the
// empty_layer flags of its history, and its layers applied in order
// (whiteouts honoured) as "path: type mode uid:gid content-hash link".
func readArchive(t *testing.T, archive []byte) savedImage {
	t.Helper()
	members := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		members[path.Clean(h.Name)] = b
	}
	var manifest []struct {
		Config string
		Layers []string
	}
	if err := json.Unmarshal(members["manifest.json"], &manifest); err != nil || len(manifest) != 1 {
		t.Fatalf("manifest.json: %v (%d images)", err, len(manifest))
	}
	var cfg struct {
		Config       map[string]json.RawMessage `json:"config"`
		Author       string                     `json:"author"`
		OS           string                     `json:"os"`
		Architecture string                     `json:"architecture"`
		History      []struct {
			EmptyLayer bool   `json:"empty_layer"`
			Author     string `json:"author"`
		} `json:"history"`
	}
	if err := json.Unmarshal(members[path.Clean(manifest[0].Config)], &cfg); err != nil {
		t.Fatal(err)
	}
	img := savedImage{config: cfg.Config, files: map[string]string{},
		top: map[string]string{"author": cfg.Author, "os": cfg.OS, "architecture": cfg.Architecture}}
	for i, h := range cfg.History {
		img.emptyLayers = append(img.emptyLayers, h.EmptyLayer)
		img.top[fmt.Sprintf("history[%d].author", i)] = h.Author
	}
	for _, l := range manifest[0].Layers {
		data := members[path.Clean(l)]
		var r io.Reader = bytes.NewReader(data)
		if bytes.HasPrefix(data, []byte{0x1f, 0x8b}) {
			gz, err := gzip.NewReader(r)
			if err != nil {
				t.Fatal(err)
			}
			r = gz
		}
		applyLayer(t, img.files, r)
	}
	return img
}

func applyLayer(t *testing.T, files map[string]string, r io.Reader) {
	t.Helper()
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		name := path.Clean("/" + h.Name)
		dir, base := path.Split(name)
		if base == ".wh..wh..opq" {
			for p := range files {
				if strings.HasPrefix(p, dir) {
					delete(files, p)
				}
			}
			continue
		}
		if strings.HasPrefix(base, ".wh.") {
			gone := path.Join(dir, strings.TrimPrefix(base, ".wh."))
			for p := range files {
				if p == gone || strings.HasPrefix(p, gone+"/") {
					delete(files, p)
				}
			}
			continue
		}
		if name == "/" {
			continue // the root's own entry: Docker's import has one, layers of builds do not
		}
		b, _ := io.ReadAll(tr)
		sum := sha256.Sum256(b)
		kind := map[byte]string{tar.TypeDir: "dir", tar.TypeSymlink: "symlink", tar.TypeLink: "hardlink", tar.TypeReg: "file"}[h.Typeflag]
		v := fmt.Sprintf("%s %04o %d:%d", kind, h.Mode&0o7777, h.Uid, h.Gid)
		switch h.Typeflag {
		case tar.TypeReg:
			v += " " + hex.EncodeToString(sum[:8])
		case tar.TypeSymlink, tar.TypeLink:
			v += " -> " + h.Linkname
		}
		files[name] = v
	}
}
