package archive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/lib/compression"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/image"
	"github.com/strata-build/strata/services/builder/internal/transfer"
)

type entry struct {
	name, body, link string
	typ              byte
}

func makeTar(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		hdr := &tar.Header{Name: e.name, Typeflag: typ, Mode: 0o755, Linkname: e.link, Size: int64(len(e.body)), ModTime: time.Unix(0, 0)}
		if typ != tar.TypeReg {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func rootfs(t testing.TB) []byte {
	return makeTar(t,
		entry{name: "./", typ: tar.TypeDir},
		entry{name: "./bin/", typ: tar.TypeDir},
		entry{name: "./bin/busybox", body: "#!/not/really\n"},
		entry{name: "./bin/sh", link: "busybox", typ: tar.TypeSymlink},
		entry{name: "./bin/ls", link: "bin/busybox", typ: tar.TypeLink},
		entry{name: "./etc/", typ: tar.TypeDir},
		entry{name: "./etc/passwd", body: "root:x:0:0:root:/root:/bin/sh\n"},
	)
}

func gzipped(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

func zstded(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

func TestImportRecordsTheImageDockerImportWould(t *testing.T) {
	plain := rootfs(t)
	created := time.Date(2026, 11, 27, 5, 25, 25, 900887929, time.UTC)
	for name, input := range map[string][]byte{"plain": plain, "gzip": gzipped(t, plain), "zstd": zstded(t, plain)} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, WithClock(func() time.Time { return created }))
			ctx := context.Background()
			var updates []transfer.Update
			res, err := f.svc.Import(ctx, bytes.NewReader(input), ImportOptions{Reference: "busybox"}, func(u transfer.Update) { updates = append(updates, u) })
			if err != nil {
				t.Fatalf("Import: %v", err)
			}
			if res.Reference != "busybox:latest" {
				t.Errorf("Reference = %q, want busybox:latest", res.Reference)
			}
			img, err := f.svc.images.Get(ctx, "busybox:latest")
			if err != nil {
				t.Fatal(err)
			}
			if img.ID() != res.ImageID {
				t.Errorf("tag points at %s, import returned %s", img.ID(), res.ImageID)
			}
			// The layer is the tarball as given: its diff ID is the digest of
			// the uncompressed bytes, as Docker's.
			want := &image.Config{
				Architecture: "amd64", OS: "linux", Comment: "Imported from -", Created: created,
				Config: &image.ContainerConfig{}, ContainerConfig: &image.ContainerConfig{},
				History: []image.History{{Created: created, Comment: "Imported from -"}},
				RootFS:  image.RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.FromBytes(plain)}},
			}
			wantBytes, _ := want.Marshal()
			if got := img.Record.GetConfig(); !bytes.Equal(got, wantBytes) {
				t.Errorf("config =\n%s\nwant\n%s", got, wantBytes)
			}
			// busybox 14 bytes + passwd 30 bytes + symlink target 7; the hard link adds nothing.
			if got := img.Record.GetSize(); got != 14+30+7 {
				t.Errorf("size = %d, want %d", got, 14+30+7)
			}
			if l := img.Layers()[0]; l.Blob.MediaType != image.MediaTypeOCILayerGzip {
				t.Errorf("layer media type = %s", l.Blob.MediaType)
			}
			if len(updates) == 0 || updates[len(updates)-1].Action != transfer.ActionDone {
				t.Errorf("progress = %v, want it to end with done", updates)
			}
		})
	}
}

// The --change instructions make the config Docker makes from the same
// changes (captured from `docker import -c … -m "my msg"`).
func TestImportChangesMatchDocker(t *testing.T) {
	dockerJSON, err := os.ReadFile("../image/testdata/docker-import-changes.json")
	if err != nil {
		t.Fatal(err)
	}
	docker, err := image.ParseConfig(dockerJSON)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t)
	res, err := f.svc.Import(context.Background(), bytes.NewReader(rootfs(t)), ImportOptions{
		Changes: []string{
			`CMD ["/bin/sh","-c","echo hi"]`, `ENTRYPOINT ["/bin/busybox"]`, `ENV A=1 B="two words"`,
			`EXPOSE 80 53/udp`, `LABEL x=y "a b"=c`, `USER nobody`, `WORKDIR /tmp`, `VOLUME /data`, `ONBUILD RUN echo`,
		},
		Message: "my msg",
	}, nil)
	if err != nil {
		t.Fatalf("Import: %v", err)
	}
	img, err := f.svc.images.Get(context.Background(), res.ImageID.String())
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(img.Config.Config)
	want, _ := json.Marshal(docker.Config)
	if !bytes.Equal(got, want) {
		t.Errorf("config.config =\n%s\nDocker's\n%s", got, want)
	}
	if img.Config.Comment != "my msg" || img.Config.History[0].Comment != "my msg" || img.Config.History[0].CreatedBy != "" {
		t.Errorf("comment %q history %+v, want the message and no created_by", img.Config.Comment, img.Config.History)
	}
}

func TestImportShellFormChanges(t *testing.T) {
	cc := &image.ContainerConfig{}
	if err := applyChanges(cc, []string{"CMD echo hi", "ENTRYPOINT /bin/sh", "STOPSIGNAL SIGKILL", "ENV P=/x", "WORKDIR $P", "WORKDIR y"}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cc.Cmd, "|"); got != "/bin/sh|-c|echo hi" {
		t.Errorf("Cmd = %q", got)
	}
	if got := strings.Join(cc.Entrypoint, "|"); got != "/bin/sh|-c|/bin/sh" {
		t.Errorf("Entrypoint = %q", got)
	}
	if cc.StopSignal != "SIGKILL" || cc.WorkingDir != "/x/y" {
		t.Errorf("StopSignal %q WorkingDir %q", cc.StopSignal, cc.WorkingDir)
	}
	for _, bad := range []string{"RUN echo", "FROM busybox", "COPY a b", "EXPOSE 80/xyz", "NOTANINSTRUCTION x"} {
		if err := applyChanges(&image.ContainerConfig{}, []string{bad}); !errdefs.IsInvalidArgument(err) {
			t.Errorf("applyChanges(%q) = %v, want INVALID_ARGUMENT", bad, err)
		}
	}
}

// zstdWindowBomb is a zstd frame whose header declares a 2 GiB window.
var zstdWindowBomb = []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0xa8, 0x01, 0x00, 0x00}

func TestImportRefusesBadInput(t *testing.T) {
	good := gzipped(t, rootfs(t))
	zeros := gzipped(t, make([]byte, 64<<20))
	limits := transfer.Limits{Limits: compression.Limits{ExpansionFloor: 1 << 20, MaxExpansion: 100}}
	for _, tc := range []struct {
		name  string
		input []byte
		kind  error
		msg   string
	}{
		{"dot-dot name", makeTar(t, entry{name: "../../../../tmp/pwn", body: "x"}), errdefs.ErrInvalidArgument, "climbs out"},
		{"dot-dot inside", makeTar(t, entry{name: "./a/../../b", body: "x"}), errdefs.ErrInvalidArgument, "climbs out"},
		{"absolute name", makeTar(t, entry{name: "/etc/passwd", body: "x"}), errdefs.ErrInvalidArgument, "absolute"},
		{"hard link out", makeTar(t, entry{name: "x", link: "../../etc/passwd", typ: tar.TypeLink}), errdefs.ErrInvalidArgument, "hard link"},
		{"hard link absolute", makeTar(t, entry{name: "x", link: "/etc/shadow", typ: tar.TypeLink}), errdefs.ErrInvalidArgument, "hard link"},
		{"truncated gzip", good[:len(good)/2], errdefs.ErrInvalidArgument, ""},
		{"corrupt gzip", append(append([]byte{}, good[:20]...), bytes.Repeat([]byte{0xff}, 200)...), errdefs.ErrInvalidArgument, ""},
		{"truncated tar", rootfs(t)[:700], errdefs.ErrInvalidArgument, "unexpected EOF"},
		{"not a tar", bytes.Repeat([]byte("hello world "), 100), errdefs.ErrInvalidArgument, ""},
		{"xz", []byte{0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 1, 2, 3}, errdefs.ErrInvalidArgument, "xz"},
		{"gzip bomb", zeros, errdefs.ErrResourceExhausted, "expands more than 100-fold"},
		{"zstd window bomb", zstdWindowBomb, errdefs.ErrResourceExhausted, "window"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newLimitedFixture(t, limits)
			_, err := f.svc.Import(context.Background(), bytes.NewReader(tc.input), ImportOptions{Reference: "bad:1"}, nil)
			if !errors.Is(err, tc.kind) {
				t.Fatalf("Import(%s) = %v, want %v", tc.name, err, tc.kind)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("Import(%s) = %q, want it to say %q", tc.name, err, tc.msg)
			}
			if f.images.Count() != 0 || f.blobs.Count() != 0 {
				t.Errorf("a refused import left %d images and %d blobs", f.images.Count(), f.blobs.Count())
			}
		})
	}
}

func TestImportRefusesBadOptionsBeforeReading(t *testing.T) {
	for _, opts := range []ImportOptions{
		{Reference: "Not/Valid"},
		{Changes: []string{"RUN rm -rf /"}},
		{Platform: "linux"},
	} {
		f := newFixture(t)
		r := &countReader{r: bytes.NewReader(rootfs(t))}
		if _, err := f.svc.Import(context.Background(), r, opts, nil); !errdefs.IsInvalidArgument(err) {
			t.Errorf("Import(%+v) = %v, want INVALID_ARGUMENT", opts, err)
		}
		if r.n != 0 {
			t.Errorf("Import(%+v) read %d bytes before refusing its options", opts, r.n)
		}
	}
}
