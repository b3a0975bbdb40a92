package image

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/errdefs"
)

// Docker's own configs, from `docker import` and `docker build` (classic
// builder, Docker 20.10): parsing and marshalling them again must give the
// same bytes, or images Strata makes the way Docker does would get other IDs.
func TestConfigRoundTripsDockerBytes(t *testing.T) {
	for name, id := range map[string]digest.Digest{
		"docker-import.json":         "sha256:7dd81a8cfbe9664fc01be54b7e109e95c638c29de151c60f80c23e427d778c79",
		"docker-import-changes.json": "sha256:bf24704e1b1fa4237ca51112755e890fcde26615cbbb71de57e0b51b00c13705",
		"docker-build.json":          "sha256:da6972833d418faaae5a8cb67ba162013521138e308e868f35231344528a0084",
	} {
		t.Run(name, func(t *testing.T) {
			want, err := os.ReadFile("testdata/" + name)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := ParseConfig(want)
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			got, err := cfg.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Marshal(ParseConfig(%s)) =\n%s\nwant\n%s", name, got, want)
			}
			if digest.FromBytes(got) != id {
				t.Errorf("digest = %s, want Docker's image ID %s", digest.FromBytes(got), id)
			}
		})
	}
}

// The config `docker import` writes, built field by field, is byte for byte
// Docker's: the shape import (and build's scratch) relies on.
func TestImportShapedConfigIsDockers(t *testing.T) {
	created, _ := time.Parse(time.RFC3339Nano, "2026-11-27T05:25:25.900887929Z")
	empty := &ContainerConfig{}
	cfg := &Config{
		Architecture:    "amd64",
		Comment:         "Imported from -",
		Config:          empty,
		ContainerConfig: empty.Clone(),
		Created:         created,
		DockerVersion:   "20.10.24+dfsg1",
		History:         []History{{Created: created, Comment: "Imported from -"}},
		OS:              "linux",
		RootFS:          RootFS{Type: "layers", DiffIDs: []digest.Digest{"sha256:a8ba2ac8552bfb5d40deeba25d7c57d977fc4bface0ed11ed772bbbfe0bb07fc"}},
	}
	got, err := cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile("testdata/docker-import.json")
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("config differs from Docker's (-docker +strata):\n%s", diff)
	}
}

func TestCloneIsDeep(t *testing.T) {
	want, _ := os.ReadFile("testdata/docker-import-changes.json")
	cfg, err := ParseConfig(want)
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Clone()
	c.Config.Env[0] = "CHANGED=1"
	c.Config.Labels["x"] = "changed"
	c.Config.ExposedPorts["1/tcp"] = struct{}{}
	c.History[0].Comment = "changed"
	c.RootFS.DiffIDs[0] = "sha256:0000"
	got, _ := cfg.Marshal()
	if !bytes.Equal(got, want) {
		t.Errorf("changing a clone changed the original:\n%s", got)
	}
}

type memBlobs map[digest.Digest][]byte

func (m memBlobs) Put(_ context.Context, desc ocispec.Descriptor, p []byte) error {
	if digest.FromBytes(p) != desc.Digest || int64(len(p)) != desc.Size {
		return errdefs.InvalidArgument("blob does not match %s", desc.Digest)
	}
	m[desc.Digest] = p
	return nil
}

// recordingImages records PutImage calls; the tests use no other method
// (the embedded nil client panics).
type recordingImages struct {
	metadatav1.ImageServiceClient
	put []*metadatav1.PutImageRequest
}

func (r *recordingImages) PutImage(_ context.Context, in *metadatav1.PutImageRequest, _ ...grpc.CallOption) (*metadatav1.PutImageResponse, error) {
	r.put = append(r.put, in)
	return &metadatav1.PutImageResponse{Image: in.GetImage()}, nil
}

func (r *recordingImages) GetImage(context.Context, *metadatav1.GetImageRequest, ...grpc.CallOption) (*metadatav1.GetImageResponse, error) {
	if len(r.put) == 0 {
		return nil, errdefs.NotFound("no image")
	}
	return &metadatav1.GetImageResponse{Image: r.put[len(r.put)-1].GetImage()}, nil
}

func testLayer(diffID string) Layer {
	return Layer{
		Blob: ocispec.Descriptor{
			MediaType: MediaTypeOCILayerGzip,
			Digest:    digest.FromString("blob of " + diffID),
			Size:      100,
		},
		DiffID:   digest.FromString(diffID),
		DiffSize: 40,
	}
}

func TestPutWritesConfigManifestAndRecord(t *testing.T) {
	ctx := context.Background()
	blobs, images := memBlobs{}, &recordingImages{}
	s := NewStore(blobs, images)
	l1, l2 := testLayer("one"), testLayer("two")
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cfg := &Config{
		Architecture: "amd64",
		OS:           "linux",
		Created:      created,
		Config:       &ContainerConfig{Labels: map[string]string{"a": "b"}},
		History: []History{
			{Created: created, Comment: "Imported from -"},
			{Created: created, CreatedBy: "/bin/sh -c #(nop)  ENV A=1", EmptyLayer: true},
			{Created: created, CreatedBy: "/bin/sh -c echo"},
		},
		RootFS: RootFS{Type: "layers", DiffIDs: []digest.Digest{l1.DiffID, l2.DiffID}},
	}
	rec, err := s.Put(ctx, New{
		Config: cfg, Layers: []Layer{l1, l2}, Parent: "sha256:" + string(bytes.Repeat([]byte("a"), 64)),
		Tags: []string{"app:1"}, Action: metadatav1.EventAction_EVENT_ACTION_BUILD,
	})
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	cfgBytes, _ := cfg.Marshal()
	if want := digest.FromBytes(cfgBytes).String(); rec.GetId() != want {
		t.Errorf("image ID = %s, want the config digest %s", rec.GetId(), want)
	}
	if !bytes.Equal(blobs[digest.FromBytes(cfgBytes)], cfgBytes) {
		t.Errorf("config blob not stored")
	}
	mdesc := rec.GetManifest()
	mbytes := blobs[digest.Digest(mdesc.GetDigest())]
	if mbytes == nil || !bytes.Equal(mbytes, rec.GetManifestBytes()) {
		t.Fatalf("manifest blob not stored as recorded")
	}
	m, err := ParseManifest(mbytes, mdesc.GetMediaType())
	if err != nil {
		t.Fatalf("ParseManifest(written manifest): %v", err)
	}
	if m.MediaType != MediaTypeOCIManifest || m.Config.MediaType != MediaTypeOCIConfig {
		t.Errorf("manifest types = %s / config %s, want OCI", m.MediaType, m.Config.MediaType)
	}
	if got := []digest.Digest{m.Layers[0].Digest, m.Layers[1].Digest}; !cmp.Equal(got, []digest.Digest{l1.Blob.Digest, l2.Blob.Digest}) {
		t.Errorf("manifest layers = %v", got)
	}
	if rec.GetSize() != 80 || len(rec.GetLayers()) != 2 || rec.GetLayers()[1].GetDiffSize() != 40 {
		t.Errorf("record size %d layers %v, want 80 and the diff sizes", rec.GetSize(), rec.GetLayers())
	}
	if len(rec.GetHistory()) != 3 || !rec.GetHistory()[1].GetEmptyLayer() || rec.GetLabels()["a"] != "b" {
		t.Errorf("record history/labels = %v / %v", rec.GetHistory(), rec.GetLabels())
	}
	req := images.put[0]
	if req.GetAction() != metadatav1.EventAction_EVENT_ACTION_BUILD || !cmp.Equal(req.GetTags(), []string{"app:1"}) || rec.GetParent() == "" {
		t.Errorf("PutImage request = %v", req)
	}
	got, err := s.Get(ctx, "app:1")
	if err != nil {
		t.Fatal(err)
	}
	if got.ID() != digest.FromBytes(cfgBytes) || !cmp.Equal(got.Layers(), []Layer{l1, l2}) {
		t.Errorf("Get = %v, %v", got.ID(), got.Layers())
	}
}

func TestPutRefusesMismatchedLayers(t *testing.T) {
	l1 := testLayer("one")
	base := func() *Config {
		return &Config{OS: "linux", Architecture: "amd64", RootFS: RootFS{Type: "layers", DiffIDs: []digest.Digest{l1.DiffID}}}
	}
	other := testLayer("other")
	verbatim := func(layers ...ocispec.Descriptor) []byte {
		cfgBytes, _ := base().Marshal()
		b, _ := ociManifest(ocispec.Descriptor{MediaType: MediaTypeOCIConfig, Digest: digest.FromBytes(cfgBytes), Size: int64(len(cfgBytes))},
			[]Layer{{Blob: layers[0]}})
		return b
	}
	for _, tc := range []struct {
		name string
		n    New
	}{
		{"fewer layers than diff IDs", New{Config: base()}},
		{"wrong diff ID", New{Config: base(), Layers: []Layer{other}}},
		{"manifest names another layer", New{Config: base(), Layers: []Layer{l1}, Manifest: verbatim(other.Blob), ManifestMediaType: MediaTypeOCIManifest}},
		{"no config", New{Layers: []Layer{l1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			blobs, images := memBlobs{}, &recordingImages{}
			_, err := NewStore(blobs, images).Put(context.Background(), tc.n)
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("Put = %v, want INVALID_ARGUMENT", err)
			}
			if len(blobs) != 0 || len(images.put) != 0 {
				t.Errorf("a refused image left %d blobs and %d records", len(blobs), len(images.put))
			}
		})
	}
}

func TestParseManifestRefusesAmbiguousAndUnknown(t *testing.T) {
	cfg := `{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:` + hex64("c") + `","size":2}`
	for _, tc := range []struct {
		name, doc, mediaType string
	}{
		{"manifests and layers", `{"schemaVersion":2,"config":` + cfg + `,"layers":[],"manifests":[]}`, ""},
		{"embedded type differs", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":` + cfg + `,"layers":[]}`, MediaTypeDockerManifest},
		{"unknown layer type", `{"schemaVersion":2,"config":` + cfg + `,"layers":[{"mediaType":"application/x-foo","digest":"sha256:` + hex64("d") + `","size":1}]}`, ""},
		{"bad digest", `{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:../../x","size":1},"layers":[]}`, ""},
		{"schema 1", `{"schemaVersion":1,"config":` + cfg + `}`, ""},
		{"an index", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseManifest([]byte(tc.doc), tc.mediaType); !errdefs.IsInvalidArgument(err) {
				t.Errorf("ParseManifest(%s) = %v, want INVALID_ARGUMENT", tc.doc, err)
			}
		})
	}
	if _, err := ParseManifest(bytes.Repeat([]byte(" "), MaxConfigSize+1), ""); !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Errorf("ParseManifest(over the limit) = %v, want RESOURCE_EXHAUSTED", err)
	}
}

func hex64(c string) string { return string(bytes.Repeat([]byte(c), 64)) }
