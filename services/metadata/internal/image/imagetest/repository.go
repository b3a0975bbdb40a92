package imagetest

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/metadata/internal/image"
)

// Artifact returns an OCI artifact manifest with the empty config and one
// layer of the given artifact type, with subject when it is not nil.
func Artifact(t testing.TB, artifactType string, subject *metadatav1.Manifest, note string) *metadatav1.Manifest {
	t.Helper()
	empty := ocispec.DescriptorEmptyJSON
	m := ocispec.Manifest{
		MediaType: ocispec.MediaTypeImageManifest, ArtifactType: artifactType, Config: empty,
		Layers:      []ocispec.Descriptor{{MediaType: "application/octet-stream", Digest: digest.FromString(note), Size: int64(len(note))}},
		Annotations: map[string]string{"note": note},
	}
	m.SchemaVersion = 2
	if subject != nil {
		m.Subject = &ocispec.Descriptor{MediaType: subject.GetMediaType(), Digest: digest.Digest(subject.GetDigest()), Size: int64(len(subject.GetContent()))}
	}
	return document(t, m, m.MediaType)
}

// Index returns an OCI index of the manifests with their platforms.
func Index(t testing.TB, manifests []*metadatav1.Manifest, platforms []string) *metadatav1.Manifest {
	t.Helper()
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex}
	idx.SchemaVersion = 2
	for i, m := range manifests {
		os, arch, _ := strings.Cut(platforms[i], "/")
		p := &ocispec.Platform{OS: os, Architecture: arch}
		idx.Manifests = append(idx.Manifests, ocispec.Descriptor{MediaType: m.GetMediaType(), Digest: digest.Digest(m.GetDigest()), Size: int64(len(m.GetContent())), Platform: p})
	}
	return document(t, idx, idx.MediaType)
}

func document(t testing.TB, v any, mediaType string) *metadatav1.Manifest {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return &metadatav1.Manifest{Digest: digest.FromBytes(b).String(), MediaType: mediaType, Content: b}
}

// ImageManifest returns the manifest of a fixture image, as a client pushes
// it.
func ImageManifest(img *metadatav1.Image) *metadatav1.Manifest {
	return &metadatav1.Manifest{Digest: img.GetManifest().GetDigest(), MediaType: img.GetManifest().GetMediaType(), Content: img.GetManifestBytes()}
}

func putManifest(t *testing.T, s image.Store, repo string, m *metadatav1.Manifest, opts image.ManifestOptions) *metadatav1.Manifest {
	t.Helper()
	out, err := s.PutManifest(context.Background(), repo, m, opts)
	if err != nil {
		t.Fatalf("PutManifest(%s, %s, %v) = %v", repo, m.GetDigest(), opts.Tags, err)
	}
	return out
}

func getManifest(t *testing.T, s image.Store, repo, ref string) *metadatav1.Manifest {
	t.Helper()
	m, err := s.GetManifest(context.Background(), repo, ref)
	if err != nil {
		t.Fatalf("GetManifest(%s, %s) = %v", repo, ref, err)
	}
	return m
}

func tags(t *testing.T, s image.Store, repo string, n int, last string) ([]string, bool) {
	t.Helper()
	out, more, err := s.ListTags(context.Background(), repo, n, last)
	if err != nil {
		t.Fatalf("ListTags(%s, %d, %q) = %v", repo, n, last, err)
	}
	return out, more
}

func testRepository(t *testing.T, s image.Store, _ *Clock) {
	ctx := context.Background()
	// An image Strata built is in the registry's repository of its tag.
	built := put(t, s, Make(t, Step{CreatedBy: "built", LayerSize: 10}), "busybox:latest")
	for _, repo := range []string{"busybox", "library/busybox"} {
		m := getManifest(t, s, repo, "latest")
		if string(m.GetContent()) != string(built.GetManifestBytes()) || m.GetDigest() != built.GetManifest().GetDigest() || m.GetImageId() != built.GetId() {
			t.Errorf("GetManifest(%s, latest) = %s (image %q), want the built image's manifest %s", repo, m.GetDigest(), m.GetImageId(), built.GetManifest().GetDigest())
		}
		getManifest(t, s, repo, built.GetManifest().GetDigest())
	}
	_, err := s.GetManifest(ctx, "other", built.GetManifest().GetDigest())
	wantKind(t, "GetManifest of another repository's digest", err, errdefs.ErrNotFound)
	if ok, err := s.HasBlob(ctx, "busybox", built.GetLayers()[0].GetDigest()); err != nil || !ok {
		t.Errorf("HasBlob(busybox, its layer) = %v, %v; want true", ok, err)
	}

	// A pushed image is an image too, with its tag and repository digest.
	pushed := Make(t, Step{CreatedBy: "pushed", LayerSize: 20})
	got := putManifest(t, s, "team/app", ImageManifest(pushed), image.ManifestOptions{Tags: []string{"1.0", "latest"}, Image: pushed})
	if got.GetImageId() != pushed.GetId() || got.GetArtifactType() != "application/vnd.docker.container.image.v1+json" {
		t.Errorf("PutManifest = image %q, artifact type %q; want %s and the config's media type", got.GetImageId(), got.GetArtifactType(), pushed.GetId())
	}
	img := get(t, s, "team/app:1.0")
	wantDigest := "team/app@" + pushed.GetManifest().GetDigest()
	if img.GetId() != pushed.GetId() || !slices.Equal(img.GetRepoTags(), []string{"team/app:1.0", "team/app:latest"}) || !slices.Equal(img.GetRepoDigests(), []string{wantDigest}) {
		t.Errorf("pushed image = %s %v %v, want %s with both tags and %s", img.GetId(), img.GetRepoTags(), img.GetRepoDigests(), pushed.GetId(), wantDigest)
	}
	if l, _ := tags(t, s, "team/app", 0, ""); !slices.Equal(l, []string{"1.0", "latest"}) {
		t.Errorf("ListTags(team/app) = %v", l)
	}
	if l, more := tags(t, s, "team/app", 1, ""); !slices.Equal(l, []string{"1.0"}) || !more {
		t.Errorf("ListTags(team/app, 1) = %v, %v; want [1.0] and more", l, more)
	}
	if l, more := tags(t, s, "team/app", 1, "1.0"); !slices.Equal(l, []string{"latest"}) || more {
		t.Errorf("ListTags(team/app, 1, 1.0) = %v, %v; want [latest] and no more", l, more)
	}
	_, _, err = s.ListTags(ctx, "nobody/here", 0, "")
	wantKind(t, "ListTags of an unknown repository", err, errdefs.ErrNotFound)

	// Artifacts referring to the pushed image, found by the referrers API.
	subject := ImageManifest(pushed)
	sig := Artifact(t, "application/vnd.example.signature", subject, "sig")
	sbom := Artifact(t, "application/vnd.example.sbom", subject, "sbom")
	putManifest(t, s, "team/app", sig, image.ManifestOptions{})
	putManifest(t, s, "team/app", sbom, image.ManifestOptions{Tags: []string{"sbom"}})
	refs, err := s.ListReferrers(ctx, "team/app", subject.GetDigest(), "")
	if err != nil || len(refs) != 2 {
		t.Fatalf("ListReferrers = %v, %v; want 2", refs, err)
	}
	for _, r := range refs {
		if r.GetSubject() != subject.GetDigest() || r.GetSize() == 0 || r.GetAnnotations()["note"] == "" {
			t.Errorf("referrer %+v lacks subject, size or annotations", r)
		}
	}
	refs, err = s.ListReferrers(ctx, "team/app", subject.GetDigest(), "application/vnd.example.sbom")
	if err != nil || len(refs) != 1 || refs[0].GetDigest() != sbom.GetDigest() || refs[0].GetArtifactType() != "application/vnd.example.sbom" {
		t.Errorf("ListReferrers(artifactType sbom) = %v, %v; want the sbom", refs, err)
	}
	if refs, _ := s.ListReferrers(ctx, "other", subject.GetDigest(), ""); len(refs) != 0 {
		t.Errorf("ListReferrers of another repository = %v, want none", refs)
	}
	// The artifact's tag names no image.
	_, err = s.GetImage(ctx, "team/app:sbom")
	wantKind(t, "GetImage of an artifact's tag", err, errdefs.ErrNotFound)

	// An index needs its entries in the repository; its tag stands for its
	// linux/amd64 image.
	arm := Make(t, Step{CreatedBy: "arm", LayerSize: 30})
	idx := Index(t, []*metadatav1.Manifest{ImageManifest(pushed), ImageManifest(arm)}, []string{"linux/amd64", "linux/arm64"})
	_, err = s.PutManifest(ctx, "team/app", idx, image.ManifestOptions{Tags: []string{"multi"}})
	wantKind(t, "PutManifest of an index whose entry is not in the repository", err, errdefs.ErrFailedPrecondition)
	putManifest(t, s, "team/app", ImageManifest(arm), image.ManifestOptions{Image: arm})
	putManifest(t, s, "team/app", idx, image.ManifestOptions{Tags: []string{"multi"}})
	if m := getManifest(t, s, "team/app", "multi"); m.GetDigest() != idx.GetDigest() || m.GetMediaType() != ocispec.MediaTypeImageIndex {
		t.Errorf("GetManifest(multi) = %s %s, want the index", m.GetDigest(), m.GetMediaType())
	}
	if img := get(t, s, "team/app:multi"); img.GetId() != pushed.GetId() {
		t.Errorf("GetImage(team/app:multi) = %s, want the linux/amd64 image %s", img.GetId(), pushed.GetId())
	}

	// A manifest whose content does not match its digest is refused.
	bad := Artifact(t, "application/vnd.example", nil, "bad")
	bad.Digest = digest.FromString("other").String()
	_, err = s.PutManifest(ctx, "team/app", bad, image.ManifestOptions{})
	wantKind(t, "PutManifest with a wrong digest", err, errdefs.ErrInvalidArgument)

	// Blob links.
	blob := digest.FromString("a blob").String()
	if ok, _ := s.HasBlob(ctx, "team/app", blob); ok {
		t.Errorf("HasBlob before LinkBlob = true")
	}
	if err := s.LinkBlob(ctx, "team/app", blob); err != nil {
		t.Fatalf("LinkBlob = %v", err)
	}
	if ok, err := s.HasBlob(ctx, "team/app", blob); err != nil || !ok {
		t.Errorf("HasBlob after LinkBlob = %v, %v", ok, err)
	}
	if ok, _ := s.HasBlob(ctx, "other/app", blob); ok {
		t.Errorf("HasBlob in another repository = true")
	}
	if err := s.UnlinkBlob(ctx, "team/app", blob); err != nil {
		t.Errorf("UnlinkBlob = %v", err)
	}
	wantKind(t, "UnlinkBlob twice", s.UnlinkBlob(ctx, "team/app", blob), errdefs.ErrNotFound)

	// Deletes: a tag, then a digest with the tags pointing at it. What
	// nothing needs any more is no longer referenced.
	if _, err := s.DeleteManifest(ctx, "team/app", "sbom"); err != nil {
		t.Errorf("DeleteManifest(sbom) = %v", err)
	}
	_, err = s.GetManifest(ctx, "team/app", "sbom")
	wantKind(t, "GetManifest of a deleted tag", err, errdefs.ErrNotFound)
	getManifest(t, s, "team/app", sbom.GetDigest())
	untagged, err := s.DeleteManifest(ctx, "team/app", sbom.GetDigest())
	if err != nil || !slices.Equal(untagged, []string{"team/app@" + sbom.GetDigest()}) {
		t.Errorf("DeleteManifest(sbom digest) = %v, %v", untagged, err)
	}
	if refd, _ := s.IsReferenced(ctx, []string{sbom.GetDigest()}); refd[sbom.GetDigest()] {
		t.Errorf("a deleted artifact's manifest is still referenced")
	}
	if refd, _ := s.IsReferenced(ctx, []string{sig.GetDigest()}); !refd[sig.GetDigest()] {
		t.Errorf("a kept artifact's manifest is not referenced")
	}
	untagged, err = s.DeleteManifest(ctx, "team/app", idx.GetDigest())
	if err != nil || !slices.Equal(untagged, []string{"team/app:multi", "team/app@" + idx.GetDigest()}) {
		t.Errorf("DeleteManifest(index digest) = %v, %v", untagged, err)
	}
	_, err = s.DeleteManifest(ctx, "team/app", idx.GetDigest())
	wantKind(t, "DeleteManifest of a deleted digest", err, errdefs.ErrNotFound)
	if l, _ := tags(t, s, "team/app", 0, ""); !slices.Equal(l, []string{"1.0", "latest"}) {
		t.Errorf("ListTags after the deletes = %v", l)
	}
}
