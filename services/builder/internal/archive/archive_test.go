package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/lib/compression"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/transfer"
)

// importTwo imports two images, one of them under two tags.
func importTwo(t testing.TB, f *fixture) (digest.Digest, digest.Digest) {
	t.Helper()
	ctx := context.Background()
	a, err := f.svc.Import(ctx, bytes.NewReader(rootfs(t)), ImportOptions{Reference: "busybox:latest"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.images.PutImage(ctx, putTag(f, a.ImageID, "localhost:5000/team/bb:1")); err != nil {
		t.Fatal(err)
	}
	b, err := f.svc.Import(ctx, bytes.NewReader(makeTar(t, entry{name: "hello", body: "hi\n"})), ImportOptions{Reference: "hello:2", Changes: []string{"CMD [\"/hello\"]"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return a.ImageID, b.ImageID
}

func TestSaveLoadRoundTrip(t *testing.T) {
	for _, format := range []SaveFormat{FormatDocker, FormatOCI} {
		t.Run([]string{"docker", "oci"}[format], func(t *testing.T) {
			ctx := context.Background()
			src := newFixture(t)
			a, b := importTwo(t, src)
			var archive bytes.Buffer
			if err := src.svc.Save(ctx, []string{"busybox", "localhost:5000/team/bb:1", "hello:2"}, format, &archive); err != nil {
				t.Fatalf("Save: %v", err)
			}
			dst := newFixture(t)
			loaded, err := dst.svc.Load(ctx, bytes.NewReader(archive.Bytes()), nil)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			want := []LoadedImage{
				{ImageID: a, Tags: []string{"busybox:latest", "localhost:5000/team/bb:1"}},
				{ImageID: b, Tags: []string{"hello:2"}},
			}
			if diff := cmp.Diff(want, loaded); diff != "" {
				t.Errorf("Load (-want +got):\n%s", diff)
			}
			for _, id := range []digest.Digest{a, b} {
				s, _ := src.svc.images.Get(ctx, id.String())
				d, err := dst.svc.images.Get(ctx, id.String())
				if err != nil {
					t.Fatalf("image %s not loaded: %v", id, err)
				}
				if s.ManifestDescriptor().Digest != d.ManifestDescriptor().Digest || !cmp.Equal(s.Layers(), d.Layers()) {
					t.Errorf("image %s: loaded manifest %s layers %v, saved %s %v", id,
						d.ManifestDescriptor().Digest, d.Layers(), s.ManifestDescriptor().Digest, s.Layers())
				}
			}
		})
	}
}

func TestSaveUnknownImageWritesNothing(t *testing.T) {
	f := newFixture(t)
	importTwo(t, f)
	var out bytes.Buffer
	err := f.svc.Save(context.Background(), []string{"busybox", "nope:1"}, FormatDocker, &out)
	if !errdefs.IsNotFound(err) || out.Len() != 0 {
		t.Errorf("Save(unknown) = %v with %d bytes written, want NOT_FOUND and nothing", err, out.Len())
	}
}

// rewrite copies a tar archive, letting edit change or drop entries.
func rewrite(t *testing.T, archive []byte, edit func(hdr *tar.Header, body []byte) ([]byte, bool)) []byte {
	t.Helper()
	var out bytes.Buffer
	tr, tw := tar.NewReader(bytes.NewReader(archive)), tar.NewWriter(&out)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		body, keep := edit(hdr, body)
		if !keep {
			continue
		}
		hdr.Size = int64(len(body))
		tw.WriteHeader(hdr)
		tw.Write(body)
	}
	tw.Close()
	return out.Bytes()
}

func TestLoadRefusesBadArchives(t *testing.T) {
	ctx := context.Background()
	src := newFixture(t)
	importTwo(t, src)
	var buf bytes.Buffer
	if err := src.svc.Save(ctx, []string{"busybox", "hello:2"}, FormatDocker, &buf); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	isLayer := func(hdr *tar.Header, body []byte) bool {
		return strings.HasPrefix(hdr.Name, "blobs/") && len(body) > 0 && body[0] == 0x1f
	}
	for _, tc := range []struct {
		name    string
		archive []byte
		kind    error
		msg     string
	}{
		{"truncated", good[:len(good)*2/3], errdefs.ErrInvalidArgument, "truncated"},
		{"layer does not match its digest", rewrite(t, good, func(hdr *tar.Header, body []byte) ([]byte, bool) {
			if isLayer(hdr, body) {
				return gzipped(t, makeTar(t, entry{name: "evil", body: "x"})), true
			}
			return body, true
		}), errdefs.ErrInvalidArgument, "does not match its digest"},
		{"missing layer", rewrite(t, good, func(hdr *tar.Header, body []byte) ([]byte, bool) {
			return body, !isLayer(hdr, body)
		}), errdefs.ErrInvalidArgument, "lacks"},
		{"no manifest", rewrite(t, good, func(hdr *tar.Header, body []byte) ([]byte, bool) {
			return body, hdr.Name != "manifest.json" && hdr.Name != "index.json"
		}), errdefs.ErrInvalidArgument, "neither manifest.json nor index.json"},
		{"unsafe entry", rewrite(t, good, func(hdr *tar.Header, body []byte) ([]byte, bool) {
			if hdr.Name == "oci-layout" {
				hdr.Name = "../../oci-layout"
			}
			return body, true
		}), errdefs.ErrInvalidArgument, "climbs out"},
		{"decompression bomb", rewrite(t, good, func(hdr *tar.Header, body []byte) ([]byte, bool) {
			if isLayer(hdr, body) {
				return gzipped(t, make([]byte, 64<<20)), true
			}
			return body, true
		}), errdefs.ErrResourceExhausted, "decompression bombs"},
		{"manifest changed", rewrite(t, good, func(hdr *tar.Header, body []byte) ([]byte, bool) {
			if hdr.Name == "manifest.json" {
				return body, false // load through index.json and the OCI manifests
			}
			return bytes.ReplaceAll(body, []byte("application/vnd.oci.image.layer.v1.tar+gzip"), []byte("application/x-unknown")), true
		}), errdefs.ErrInvalidArgument, "does not match its digest"},
		{"too many documents", withEntries(t, good, 20, func(i int) (*tar.Header, []byte) {
			return &tar.Header{Name: fmt.Sprintf("extra/%d.json", i), Typeflag: tar.TypeReg, Mode: 0o644}, []byte("{}")
		}), errdefs.ErrResourceExhausted, "--max-archive-documents"},
		{"too many links", withEntries(t, good, 20, func(i int) (*tar.Header, []byte) {
			return &tar.Header{Name: fmt.Sprintf("extra/%d", i), Typeflag: tar.TypeSymlink, Linkname: "oci-layout"}, nil
		}), errdefs.ErrResourceExhausted, "--max-archive-documents"},
		{"documents too large", withEntries(t, good, 3, func(i int) (*tar.Header, []byte) {
			return &tar.Header{Name: fmt.Sprintf("extra/%d.json", i), Typeflag: tar.TypeReg, Mode: 0o644}, append([]byte("["), bytes.Repeat([]byte(" "), 64<<10)...)
		}), errdefs.ErrResourceExhausted, "--max-archive-document-bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := newLimitedFixture(t, transfer.Limits{Limits: compression.Limits{ExpansionFloor: 1 << 20, MaxExpansion: 100},
				MaxArchiveDocuments: 15, MaxArchiveDocumentBytes: 128 << 10})
			_, err := dst.svc.Load(ctx, bytes.NewReader(tc.archive), nil)
			if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Load(%s) = %v, want %v saying %q", tc.name, err, tc.kind, tc.msg)
			}
			if dst.images.Count() != 0 {
				t.Errorf("a refused load recorded %d images", dst.images.Count())
			}
		})
	}
}

// withEntries returns the archive with n more entries at its start.
func withEntries(t *testing.T, archive []byte, n int, entry func(i int) (*tar.Header, []byte)) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i := range n {
		hdr, body := entry(i)
		hdr.Size = int64(len(body))
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		tw.Write(body)
	}
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		tw.WriteHeader(hdr)
		io.Copy(tw, tr)
	}
	tw.Close()
	return buf.Bytes()
}

// legacyArchive is docker save's output before Docker 25: two images of one
// layer, written once as <id>/layer.tar and linked under the second ID.
func legacyArchive(t testing.TB) (archive []byte, configs [2][]byte, diffID digest.Digest) {
	t.Helper()
	layerTar := makeTar(t, entry{name: "hello", body: "hi\n"})
	diffID = digest.FromBytes(layerTar)
	config := func(cmd string) []byte {
		return []byte(`{"architecture":"amd64","config":{"Cmd":["` + cmd + `"]},"created":"2026-01-01T00:00:00Z","os":"linux","rootfs":{"type":"layers","diff_ids":["` + diffID.String() + `"]}}`)
	}
	c1, c2 := config("one"), config("two")
	manifest := `[{"Config":"` + digest.FromBytes(c1).Encoded() + `.json","RepoTags":["one:1"],"Layers":["aaa/layer.tar"]},` +
		`{"Config":"` + digest.FromBytes(c2).Encoded() + `.json","RepoTags":["two:1"],"Layers":["bbb/layer.tar"]}]`
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	file := func(name string, body []byte) {
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))})
		tw.Write(body)
	}
	file("aaa/layer.tar", layerTar)
	file("aaa/VERSION", []byte("1.0"))
	tw.WriteHeader(&tar.Header{Name: "bbb/layer.tar", Typeflag: tar.TypeSymlink, Linkname: "../aaa/layer.tar"})
	file(digest.FromBytes(c1).Encoded()+".json", c1)
	file(digest.FromBytes(c2).Encoded()+".json", c2)
	file("manifest.json", []byte(manifest))
	tw.Close()
	return buf.Bytes(), [2][]byte{c1, c2}, diffID
}

// docker save (before Docker 25) writes a layer shared under two layer IDs
// once, and the second as a symlink to the first.
func TestLoadFollowsDockerLayerSymlinks(t *testing.T) {
	archive, configs, diffID := legacyArchive(t)
	c1, c2 := configs[0], configs[1]
	f := newFixture(t)
	loaded, err := f.svc.Load(context.Background(), bytes.NewReader(archive), nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := []LoadedImage{{ImageID: digest.FromBytes(c1), Tags: []string{"one:1"}}, {ImageID: digest.FromBytes(c2), Tags: []string{"two:1"}}}
	if diff := cmp.Diff(want, loaded); diff != "" {
		t.Errorf("Load (-want +got):\n%s", diff)
	}
	two, err := f.svc.images.Get(context.Background(), "two:1")
	if err != nil {
		t.Fatal(err)
	}
	if l := two.Layers()[0]; l.DiffID != diffID || l.DiffSize != 3 {
		t.Errorf("two's layer = %+v, want diff ID %s and size 3", l, diffID)
	}
}
