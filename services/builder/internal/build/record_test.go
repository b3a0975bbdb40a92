package build

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/strata-build/strata/services/builder/internal/image"
)

var updateRecords = flag.Bool("update-records", false, "rewrite testdata/records from the builds")

// recordCases are the parity suite's Dockerfiles and the benchmark
// workloads (with small contexts): what a build records for them — cache
// keys, history, configs, the files of every layer — must stay the same
// whatever is reorganised inside the builder.
var recordCases = []struct {
	name, dockerfile string
	files            []ctxFile
	// volatile files have content that changes run to run (random bytes):
	// their content is not recorded.
	volatile []string
	// fromHashes says the history hashes of COPY --from cover the mtimes
	// of files RUN made, which change run to run: they are left out.
	fromHashes bool
}{
	{name: "seed", dockerfile: `FROM busybox
LABEL maintainer="NGINX Docker Maintainers <docker-maint@nginx.com>"
ENV NGINX_VERSION=1.17.4
ENV NJS_VERSION=0.3.5
ENV PKG_RELEASE=1~buster
RUN set -x && echo "nginx:x:101:101:nginx:/nonexistent:/bin/false" >> /etc/passwd && echo "nginx:x:101:" >> /etc/group && mkdir -p /var/log/nginx && echo ok > /var/log/nginx/install.log
RUN ln -sf /dev/stdout /var/log/nginx/access.log && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 80
STOPSIGNAL SIGTERM
CMD ["nginx", "-g", "daemon off;"]
`},
	{name: "copy", dockerfile: `FROM busybox
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
`, files: []ctxFile{
		{path: "dir", dir: true, mode: 0o755, mtime: 1e18},
		{path: "dir/a.txt", body: "a\n", mtime: 1e18},
		{path: "dir/run.sh", body: "#!/bin/sh\necho hi\n", mode: 0o755, mtime: 1e18},
		{path: "dir/sub", dir: true, mode: 0o755, mtime: 1e18},
		{path: "dir/sub/b", body: "b\n", mtime: 1e18},
		{path: "dir/l", link: "a.txt", mtime: 1e18},
		{path: "f.txt", body: "f\n", mtime: 1e18},
		{path: "g.txt", body: "g\n", mtime: 1e18},
		{path: "empty", dir: true, mode: 0o755, mtime: 1e18},
		{path: "archive.tar", body: smallArchive(), mtime: 1e18},
	}},
	{name: "config", dockerfile: `FROM busybox
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
`},
	{name: "multistage", dockerfile: `FROM busybox AS build
RUN mkdir /out && echo built > /out/artifact && ln -s artifact /out/link
FROM busybox
COPY --from=build /out /opt/
COPY --from=0 /etc/passwd /passwd
CMD ["/bin/sh"]
`, fromHashes: true},
	{name: "bench-files", dockerfile: `FROM busybox
ENV APP=/app LANG=C.UTF-8
RUN mkdir -p /data && dd if=/dev/urandom of=/data/blob bs=1k count=200 2>/dev/null
RUN mkdir -p /data/small && i=0; while [ $i -lt 20 ]; do echo "line $i" > /data/small/f$i; i=$((i+1)); done
COPY . /app
WORKDIR /app
LABEL org.opencontainers.image.title=bench
CMD ["sh"]
`, files: []ctxFile{
		{path: "src", dir: true, mode: 0o755, mtime: 1e18},
		{path: "src/d1", dir: true, mode: 0o755, mtime: 1e18},
		{path: "src/d1/f1.go", body: "package d1\n", mtime: 1e18},
		{path: "src/d1/f2.go", body: "package d1 // 2\n", mtime: 1e18},
		{path: "big.bin", body: strings.Repeat("\x00\x01\x02", 5000), mtime: 1e18},
	}, volatile: []string{"data/blob"}},
	{name: "bench-app", dockerfile: `FROM busybox AS build
WORKDIR /src
COPY deps/ ./deps/
RUN find deps -type f -exec cat {} + | md5sum > /deps.sum
COPY . .
RUN mkdir -p /out \
 && find src -name '*.c' -exec sed -i 's/^int /long /' {} + \
 && tar -cf - src include | gzip -1 > /out/app.tgz \
 && cp /deps.sum /out/deps.sum
FROM busybox
COPY --from=build /out/ /app/
COPY --from=build /src/include/ /usr/include/app/
COPY --from=build /src/assets/ /usr/share/app/
ENV APP_HOME=/app
CMD ["sh"]
`, files: []ctxFile{
		{path: "deps", dir: true, mode: 0o755, mtime: 1e18},
		{path: "deps/lib.txt", body: "dependency\n", mtime: 1e18},
		{path: "src", dir: true, mode: 0o755, mtime: 1e18},
		{path: "src/main.c", body: "int main() { return 0; }\n", mtime: 1e18},
		{path: "include", dir: true, mode: 0o755, mtime: 1e18},
		{path: "include/app.h", body: "int f(void);\n", mtime: 1e18},
		{path: "assets", dir: true, mode: 0o755, mtime: 1e18},
		{path: "assets/logo.png", body: "\x89PNG", mtime: 1e18},
	}, volatile: []string{"app/app.tgz"}, fromHashes: true},
}

func smallArchive() string {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "top/", Typeflag: tar.TypeDir, Mode: 0o750, Uid: 7, Gid: 8})
	tw.WriteHeader(&tar.Header{Name: "top/x", Typeflag: tar.TypeReg, Mode: 0o640, Uid: 7, Gid: 8, Size: 2})
	tw.Write([]byte("x\n"))
	tw.Close()
	return buf.String()
}

// stepRecord is what a build recorded for one step's image.
type stepRecord struct {
	CacheKey  string         `json:"cache_key"`
	CreatedBy string         `json:"created_by"`
	Empty     bool           `json:"empty_layer"`
	Config    map[string]any `json:"config"`
	Files     []string       `json:"layer_files,omitempty"`
}

// TestBuildRecordsStayTheSame builds each case with the real sandbox and
// compares what it recorded with testdata/records (go test -run
// TestBuildRecordsStayTheSame -update-records rewrites them). Times,
// container IDs and mtimes are left out; cache keys, history, configs and
// the files of every layer (path, type, mode, owner, content) are not.
func TestBuildRecordsStayTheSame(t *testing.T) {
	for _, tc := range recordCases {
		t.Run(tc.name, func(t *testing.T) {
			e := newRuncEnv(t)
			res, _ := e.mustBuild(tc.dockerfile, e.context(tc.files))
			got := e.records(e.image(res.ImageID), tc.volatile)
			if tc.fromHashes {
				for i := range got {
					got[i].CreatedBy = copyHash.ReplaceAllString(got[i].CreatedBy, "$1:…")
					b, _ := json.Marshal(got[i].Config)
					must(t, json.Unmarshal(copyHash.ReplaceAll(b, []byte("$1:…")), &got[i].Config))
				}
			}
			path := filepath.Join("testdata", "records", tc.name+".json")
			if *updateRecords {
				b, _ := json.MarshalIndent(got, "", "  ")
				must(t, os.MkdirAll(filepath.Dir(path), 0o755))
				must(t, os.WriteFile(path, append(b, '\n'), 0o644))
				return
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update-records to write it)", err)
			}
			var want []stepRecord
			must(t, json.Unmarshal(b, &want))
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("the build's records changed (-before +now):\n%s", d)
			}
		})
	}
}

var copyHash = regexp.MustCompile(`(file|dir|multi):[0-9a-f]{64}`)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// records walks the image and its parents back to the base and returns a
// record per built step, the first step first.
func (e *env) records(img *image.Image, volatile []string) []stepRecord {
	e.t.Helper()
	keys := map[string]string{}
	for k, r := range e.index.records {
		keys[r.GetImageId()] = k
	}
	var out []stepRecord
	for img != nil {
		key, ok := keys[string(img.ID())]
		if !ok {
			break // the base image
		}
		h := img.Config.History[len(img.Config.History)-1]
		cfg := img.Config.Clone()
		cfg.Created, cfg.Container, cfg.History = time.Time{}, "", nil
		for _, c := range []*image.ContainerConfig{cfg.Config, cfg.ContainerConfig} {
			if c != nil {
				c.Hostname, c.Image = "", ""
			}
		}
		b, err := json.Marshal(cfg)
		must(e.t, err)
		r := stepRecord{CacheKey: key, CreatedBy: h.CreatedBy, Empty: h.EmptyLayer}
		must(e.t, json.Unmarshal(b, &r.Config))
		// Diff IDs cover mtimes; the layers' files are compared below.
		if ids, ok := r.Config["rootfs"].(map[string]any)["diff_ids"].([]any); ok {
			for i := range ids {
				ids[i] = "…"
			}
		}
		if !h.EmptyLayer {
			r.Files = e.layerFiles(img.Layers()[len(img.Layers())-1], volatile)
		}
		out = append(out, r)
		parent := e.index.images[string(img.ID())].GetParent()
		img = nil
		if parent != "" {
			img = e.image(parent)
		}
	}
	slices.Reverse(out)
	return out
}

// layerFiles lists a layer's entries as "path type mode uid:gid content".
func (e *env) layerFiles(l image.Layer, volatile []string) []string {
	rc, err := e.blobs.Open(context.Background(), l.Blob.Digest)
	must(e.t, err)
	defer rc.Close()
	gz, err := gzip.NewReader(rc)
	must(e.t, err)
	tr := tar.NewReader(gz)
	var out []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		must(e.t, err)
		name := strings.TrimSuffix(h.Name, "/")
		line := fmt.Sprintf("%s %c %o %d:%d", name, h.Typeflag, h.Mode, h.Uid, h.Gid)
		switch h.Typeflag {
		case tar.TypeReg:
			if slices.Contains(volatile, name) {
				line += " (content varies)"
				break
			}
			sum := sha256.New()
			io.Copy(sum, tr)
			line += " " + hex.EncodeToString(sum.Sum(nil))[:16]
		case tar.TypeSymlink, tar.TypeLink:
			line += " -> " + h.Linkname
		}
		out = append(out, line)
	}
	return out
}
