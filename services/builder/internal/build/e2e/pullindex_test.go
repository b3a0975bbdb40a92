package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/lib/harness"
)

// sourceRegistry starts a distribution registry on port 80 of a loopback
// address other than 127.0.0.1 and returns its host ("127.0.0.N"). A
// reference to it has no port, so the Docker repository Strata records a
// pull under ("127.0.0.N/app") is one strata-registry can serve.
func sourceRegistry(t *testing.T) string {
	t.Helper()
	host := ""
	for n := 2; n < 32 && host == ""; n++ {
		h := fmt.Sprintf("127.0.0.%d", n)
		if l, err := net.Listen("tcp", h+":80"); err == nil {
			l.Close()
			host = h
		}
	}
	if host == "" {
		t.Skip("no loopback address has port 80 free")
	}
	dir := t.TempDir()
	cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s:80\n",
		filepath.Join(dir, "data"), host)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	harness.Start(t, nil, harness.Tool(t, "registry"), "serve", cfgPath)
	harness.WaitFor(t, "registry", 30*time.Second, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+"/v2/", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /v2/: %s", resp.Status)
		}
		return nil
	})
	return host
}

// platformImage is a small random image of one platform.
func platformImage(t *testing.T, arch string) v1.Image {
	t.Helper()
	img, err := random.Image(2048, 2)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

// attestation is a manifest as BuildKit attaches to an index for an
// image's provenance: no image (its layer is an in-toto document).
func attestation(t *testing.T) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.OCIConfigJSON), types.OCIManifestSchema1),
		static.NewLayer([]byte(`{"_type":"https://in-toto.io/Statement/v0.1"}`), "application/vnd.in-toto+json"))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func insecureRef(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func rawManifest(t *testing.T, ref name.Reference) (*remote.Descriptor, []byte) {
	t.Helper()
	d, err := remote.Get(ref)
	if err != nil {
		t.Fatalf("GET %s: %v", ref, err)
	}
	return d, d.Manifest
}

// `strata pull --all-platforms` keeps an index whole: every platform's
// image is pulled and recorded, and strata-registry serves the very index
// with all its children; the tag stands for the linux/amd64 image. A pull
// without the flag still records one image, with the index's digest as its
// repository digest; an index over the limit is refused.
func TestPullAllPlatforms(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("the builder needs root; port 80 too")
	}
	src := sourceRegistry(t)
	s := &stack{Stack: harness.StartStack(t, harness.StackOptions{Registry: true})}
	s.home = filepath.Join(s.Dir, "home")

	amd64, arm64 := platformImage(t, "amd64"), platformImage(t, "arm64")
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: amd64, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm64, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
		mutate.IndexAddendum{Add: attestation(t), Descriptor: v1.Descriptor{
			Platform:    &v1.Platform{OS: "unknown", Architecture: "unknown"},
			Annotations: map[string]string{"vnd.docker.reference.type": "attestation-manifest"},
		}},
	)
	for _, repo := range []string{"multi", "single"} {
		if err := remote.WriteIndex(insecureRef(t, src+"/"+repo+":v1"), idx); err != nil {
			t.Fatal(err)
		}
	}
	srcDesc, srcIndex := rawManifest(t, insecureRef(t, src+"/multi:v1"))
	amd64ID, err := amd64.ConfigName()
	if err != nil {
		t.Fatal(err)
	}

	// Without the flag: one image, the index's digest its repository digest.
	s.ok(t, "", "pull", "--insecure", src+"/single:v1")
	if out := s.ok(t, "", "images", "-q", "--no-trunc"); strings.TrimSpace(out) != amd64ID.String() {
		t.Errorf("after a pull without --all-platforms, strata images -q lists %q, want the amd64 image %s alone", out, amd64ID)
	}
	if out := s.ok(t, "", "inspect", "--format", "{{json .RepoDigests}}", src+"/single:v1"); !strings.Contains(out, src+"/single@"+srcDesc.Digest.String()) {
		t.Errorf("RepoDigests of the image pulled from an index: %s, want the index's digest %s", out, srcDesc.Digest)
	}

	out := s.ok(t, "", "pull", "--insecure", "--all-platforms", src+"/multi:v1")
	if !strings.Contains(out, "Digest: "+srcDesc.Digest.String()) {
		t.Errorf("strata pull --all-platforms printed:\n%s\nwant the index's digest %s", out, srcDesc.Digest)
	}
	if out := s.ok(t, "", "inspect", "--format", "{{json .RepoDigests}}", src+"/multi:v1"); !strings.Contains(out, src+"/multi@"+srcDesc.Digest.String()) {
		t.Errorf("RepoDigests of the amd64 image of an index pulled whole: %s, want the index's digest %s", out, srcDesc.Digest)
	}
	// The arm64 image is there by its repository digest alone, as an image
	// of a pushed index is.
	arm64ID, err := arm64.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{src + "/multi:<none> " + arm64ID.String(), src + "/multi:v1 " + amd64ID.String()}
	slices.Sort(want)
	got := strings.Split(strings.TrimSpace(s.ok(t, "", "images", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}", src+"/multi")), "\n")
	if slices.Sort(got); !slices.Equal(got, want) {
		t.Errorf("strata images shows %q, want the tag for the amd64 image: %q", got, want)
	}

	// Pulling it again changes nothing.
	if out := s.ok(t, "", "pull", "--insecure", "--all-platforms", src+"/multi:v1"); !strings.Contains(out, "Image is up to date") {
		t.Errorf("a second pull --all-platforms printed:\n%s", out)
	}

	// strata-registry serves the index as the source does, and each child
	// with all its blobs (validate reads and checks every one).
	served := insecureRef(t, s.RegistryAddr+"/"+src+"/multi:v1")
	desc, content := rawManifest(t, served)
	if desc.Digest != srcDesc.Digest || desc.MediaType != srcDesc.MediaType || !bytes.Equal(content, srcIndex) {
		t.Fatalf("strata-registry serves %s (%s), want the source's index %s (%s) byte for byte", desc.Digest, desc.MediaType, srcDesc.Digest, srcDesc.MediaType)
	}
	if out, err := exec.Command(harness.Tool(t, "crane"), "manifest", "--insecure", served.String()).Output(); err != nil || !bytes.Equal(out, srcIndex) {
		t.Errorf("crane manifest through strata-registry: %v\n%s\nwant:\n%s", err, out, srcIndex)
	}
	servedIdx, err := desc.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := servedIdx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range im.Manifests {
		img, err := servedIdx.Image(m.Digest)
		if err != nil {
			t.Fatalf("child %s: %v", m.Digest, err)
		}
		if m.Platform.OS == "unknown" {
			// The attestation: its manifest and its blob, as pushed.
			_, b := rawManifest(t, served.Context().Digest(m.Digest.String()))
			_, want := rawManifest(t, insecureRef(t, src+"/multi@"+m.Digest.String()))
			if !bytes.Equal(b, want) {
				t.Errorf("attestation %s served as:\n%s\nwant:\n%s", m.Digest, b, want)
			}
			mf, err := img.Manifest()
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range mf.Layers {
				layer, err := remote.Layer(served.Context().Digest(l.Digest.String()))
				if err != nil {
					t.Fatal(err)
				}
				rc, err := layer.Compressed()
				if err != nil {
					t.Fatal(err)
				}
				b, err := io.ReadAll(rc)
				rc.Close()
				if err != nil || digest.FromBytes(b).String() != l.Digest.String() {
					t.Errorf("attestation blob %s as strata-registry serves it: %v, digest %s", l.Digest, err, digest.FromBytes(b))
				}
			}
			continue
		}
		if err := validate.Image(img); err != nil {
			t.Errorf("child %s (%v) as strata-registry serves it: %v", m.Digest, m.Platform, err)
		}
	}

	// An index over the limit is refused, naming it.
	var many []mutate.IndexAddendum
	for i := range 65 {
		many = append(many, mutate.IndexAddendum{Add: amd64, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: "linux", Architecture: "amd64", Variant: fmt.Sprint("v", i)},
		}})
	}
	if err := remote.WriteIndex(insecureRef(t, src+"/many:v1"), mutate.AppendManifests(empty.Index, many...)); err != nil {
		t.Fatal(err)
	}
	r := s.strata(t, "", "pull", "--insecure", "--all-platforms", src+"/many:v1")
	if r.code == 0 || !strings.Contains(r.stderr, "65 manifests, over the limit of 64") {
		t.Errorf("pull --all-platforms of a 65-entry index: exit %d, %q; want a refusal naming the limit", r.code, r.stderr)
	}
}
