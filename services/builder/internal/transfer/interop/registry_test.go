package interop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/harness"
	"github.com/strata-build/strata/services/builder/internal/transfer"
)

// recorder collects progress updates.
type recorder struct {
	mu      sync.Mutex
	updates []transfer.Update
}

func (r *recorder) progress(u transfer.Update) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.updates = append(r.updates, u)
}

// final returns the last action reported for each blob.
func (r *recorder) final() map[string]transfer.Action {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]transfer.Action{}
	for _, u := range r.updates {
		out[u.ID] = u.Action
	}
	return out
}

func (r *recorder) count(a transfer.Action) int {
	n := 0
	for _, act := range r.final() {
		if act == a {
			n++
		}
	}
	return n
}

// Strata pushes; crane and Docker pull what it pushed. Crane pushes;
// Strata pulls it, and a second pull moves no layer bytes. A push of a
// pulled image to another repository mounts its layers.
func TestRegistryPushPull(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	reg := harness.StartRegistry(t)
	crane := harness.Tool(t, "crane")
	rootfs := busyboxRootfs(t)

	ref := reg + "/strata/busybox:1"
	id := e.importBusybox(t, rootfs, ref, `CMD ["/bin/sh", "-c", "echo pushed by strata"]`)
	var pushed recorder
	res, err := e.svc.Push(ctx, ref, transfer.PushOptions{}, pushed.progress)
	if err != nil {
		t.Fatalf("Push: %v", err)
	}
	img, _ := e.images.Get(ctx, ref)
	if res.ManifestDigest != img.ManifestDescriptor().Digest || res.BytesSent == 0 {
		t.Errorf("Push = %+v, want manifest %s and bytes sent", res, img.ManifestDescriptor().Digest)
	}
	if got := strings.TrimSpace(run(t, nil, crane, "digest", ref)); got != res.ManifestDigest.String() {
		t.Errorf("crane digest %s = %s, want %s", ref, got, res.ManifestDigest)
	}
	run(t, nil, crane, "validate", "--remote", ref)
	run(t, nil, crane, "pull", ref, filepath.Join(t.TempDir(), "crane.tar"))
	if again, err := e.svc.Push(ctx, ref, transfer.PushOptions{}, nil); err != nil || again.BytesSent != 0 {
		t.Errorf("second Push = %+v, %v; want no bytes sent (the registry has every blob)", again, err)
	}

	t.Cleanup(func() { _ = runQuiet("docker", "rmi", "-f", ref) })
	docker(t, "pull", "-q", ref)
	if got := strings.TrimSpace(docker(t, "image", "inspect", "--format", "{{.Id}}", ref)); got != id.String() {
		t.Errorf("docker pull %s gives image %s, want Strata's %s", ref, got, id)
	}
	if got := docker(t, "run", "--rm", ref); got != "pushed by strata\n" {
		t.Errorf("docker run %s prints %q", ref, got)
	}

	// crane pushes an image `docker save` wrote; Strata pulls it.
	name, dockerID := dockerImage(t, rootfs)
	saved := filepath.Join(t.TempDir(), "docker.tar")
	docker(t, "save", "-o", saved, name)
	craneRef := reg + "/crane/app:1"
	run(t, nil, crane, "push", saved, craneRef)
	var first recorder
	pulled, err := e.svc.Pull(ctx, craneRef, transfer.PullOptions{}, first.progress)
	if err != nil {
		t.Fatalf("Pull(%s): %v", craneRef, err)
	}
	craneDigest := strings.TrimSpace(run(t, nil, crane, "digest", craneRef))
	if pulled.ImageID != dockerID || pulled.ManifestDigest.String() != craneDigest || pulled.BytesFetched == 0 {
		t.Errorf("Pull = %+v, want image %s, manifest %s and bytes fetched", pulled, dockerID, craneDigest)
	}
	if first.count(transfer.ActionDone) < 2 {
		t.Errorf("first pull finished %d layers, want 2: %v", first.count(transfer.ActionDone), first.final())
	}
	var second recorder
	again, err := e.svc.Pull(ctx, craneRef, transfer.PullOptions{}, second.progress)
	if err != nil {
		t.Fatal(err)
	}
	if again.BytesFetched != 0 || second.count(transfer.ActionDownloading) != 0 || second.count(transfer.ActionExists) != 2 {
		t.Errorf("second pull fetched %d bytes, progress %v; want nothing moved", again.BytesFetched, second.final())
	}
	rec, _ := e.images.Get(ctx, craneRef)
	if want := "localhost"; !strings.HasPrefix(rec.Record.GetRepoDigests()[0], want) {
		t.Errorf("repo digests = %v", rec.Record.GetRepoDigests())
	}

	// The pulled image came from crane/app: pushing it to another
	// repository of the registry mounts its layers.
	other := reg + "/mounted/app:1"
	e.tag(t, craneRef, other)
	var mounted recorder
	if _, err := e.svc.Push(ctx, other, transfer.PushOptions{}, mounted.progress); err != nil {
		t.Fatalf("Push(%s): %v", other, err)
	}
	if mounted.count(transfer.ActionMounted) < 2 || mounted.count(transfer.ActionUploading) != 0 {
		t.Errorf("push to another repository: %v, want the layers mounted", mounted.final())
	}
	run(t, nil, crane, "validate", "--remote", other)
}

// faultProxy stands between Strata and the registry and can fail or
// corrupt what the registry answers.
type faultProxy struct {
	addr  string
	fault atomic.Pointer[func(w http.ResponseWriter, r *http.Request) bool]
}

func startProxy(t *testing.T, registry string) *faultProxy {
	t.Helper()
	target, _ := url.Parse("http://" + registry)
	rp := httputil.NewSingleHostReverseProxy(target)
	p := &faultProxy{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f := p.fault.Load(); f != nil && (*f)(w, r) {
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	p.addr = strings.TrimPrefix(srv.URL, "http://")
	return p
}

func (p *faultProxy) set(f func(w http.ResponseWriter, r *http.Request) bool) { p.fault.Store(&f) }

func isBlobGet(r *http.Request) bool {
	return r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:")
}

// Registry failures become clear errors; transient ones are retried; a
// failed pull records nothing.
func TestRegistryFaults(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	reg := harness.StartRegistry(t)
	proxy := startProxy(t, reg)
	rootfs := busyboxRootfs(t)
	e.importBusybox(t, rootfs, reg+"/faults/bb:1")
	if _, err := e.svc.Push(ctx, reg+"/faults/bb:1", transfer.PushOptions{}, nil); err != nil {
		t.Fatal(err)
	}
	through := proxy.addr + "/faults/bb:1"

	t.Run("404", func(t *testing.T) {
		_, err := e.svc.Pull(ctx, reg+"/faults/nope:1", transfer.PullOptions{}, nil)
		if !errdefs.IsNotFound(err) {
			t.Errorf("Pull(unknown) = %v, want NOT_FOUND", err)
		}
	})
	t.Run("401", func(t *testing.T) {
		proxy.set(func(w http.ResponseWriter, r *http.Request) bool {
			w.Header().Set("WWW-Authenticate", `Basic realm="strata-test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return true
		})
		_, err := e.svc.Pull(ctx, through, transfer.PullOptions{Auth: transfer.Auth{Username: "u", Password: "wrong"}}, nil)
		if !errors.Is(err, errdefs.ErrUnauthenticated) {
			t.Errorf("Pull(401) = %v, want UNAUTHENTICATED", err)
		}
	})
	t.Run("credentials", func(t *testing.T) {
		fresh := newEnv(t)
		proxy.set(func(w http.ResponseWriter, r *http.Request) bool {
			if u, p, ok := r.BasicAuth(); ok && u == "strata" && p == "s3cret" {
				return false
			}
			w.Header().Set("WWW-Authenticate", `Basic realm="strata-test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return true
		})
		if _, err := fresh.svc.Pull(ctx, through, transfer.PullOptions{Auth: transfer.Auth{Username: "strata", Password: "s3cret"}}, nil); err != nil {
			t.Errorf("Pull with the registry's credentials = %v", err)
		}
	})
	t.Run("push retried after 5xx", func(t *testing.T) {
		var failures atomic.Int32
		proxy.set(func(w http.ResponseWriter, r *http.Request) bool {
			if (r.Method == http.MethodPatch || r.Method == http.MethodPut) && strings.Contains(r.URL.Path, "/blobs/uploads/") && failures.Add(1) <= 2 {
				w.WriteHeader(http.StatusServiceUnavailable)
				return true
			}
			return false
		})
		e.tag(t, reg+"/faults/bb:1", proxy.addr+"/retried/bb:1")
		if _, err := e.svc.Push(ctx, proxy.addr+"/retried/bb:1", transfer.PushOptions{}, nil); err != nil {
			t.Errorf("Push after two 503s = %v, want it retried to success", err)
		}
		if failures.Load() < 2 {
			t.Errorf("the proxy failed %d uploads, want 2", failures.Load())
		}
		run(t, nil, harness.Tool(t, "crane"), "validate", "--remote", reg+"/retried/bb:1")
	})
	t.Run("5xx then fine", func(t *testing.T) {
		fresh := newEnv(t)
		var failures atomic.Int32
		proxy.set(func(w http.ResponseWriter, r *http.Request) bool {
			if isBlobGet(r) && failures.Add(1) <= 2 {
				w.WriteHeader(http.StatusServiceUnavailable)
				return true
			}
			return false
		})
		if _, err := fresh.svc.Pull(ctx, through, transfer.PullOptions{}, nil); err != nil {
			t.Errorf("Pull after two 503s = %v, want it retried to success", err)
		}
	})
	t.Run("5xx always", func(t *testing.T) {
		fresh := newEnv(t)
		proxy.set(func(w http.ResponseWriter, r *http.Request) bool {
			if isBlobGet(r) {
				w.WriteHeader(http.StatusInternalServerError)
				return true
			}
			return false
		})
		_, err := fresh.svc.Pull(ctx, through, transfer.PullOptions{}, nil)
		if !errdefs.IsUnavailable(err) {
			t.Errorf("Pull(always 500) = %v, want UNAVAILABLE", err)
		}
		if fresh.imageCount(t) != 0 {
			t.Errorf("a failed pull recorded an image")
		}
	})
	t.Run("corrupt layer", func(t *testing.T) {
		fresh := newEnv(t)
		proxy.set(func(w http.ResponseWriter, r *http.Request) bool {
			if !isBlobGet(r) {
				return false
			}
			rec := httptest.NewRecorder()
			rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: reg})
			rp.ServeHTTP(rec, r)
			body := rec.Body.Bytes()
			if len(body) > 4096 { // a layer, not the config
				body = bytes.Clone(body)
				body[len(body)/2] ^= 0xff
			}
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			w.Write(body)
			return true
		})
		_, err := fresh.svc.Pull(ctx, through, transfer.PullOptions{}, nil)
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("Pull(corrupt layer) = %v, want INVALID_ARGUMENT", err)
		}
		if fresh.imageCount(t) != 0 {
			t.Errorf("a pull of a corrupt layer recorded an image")
		}
		img, _ := e.images.Get(ctx, reg+"/faults/bb:1")
		found, err := fresh.blobs.Exists(ctx, []digest.Digest{img.Layers()[0].Blob.Digest})
		if err != nil || len(found) != 0 {
			t.Errorf("the corrupt layer is in the blob store: %v, %v", found, err)
		}
	})
	proxy.set(func(http.ResponseWriter, *http.Request) bool { return false })

	t.Run("index with linux/amd64", func(t *testing.T) {
		img, _ := e.images.Get(ctx, reg+"/faults/bb:1")
		m := img.ManifestDescriptor()
		entry := func(arch string) string {
			return fmt.Sprintf(`{"mediaType":%q,"digest":%q,"size":%d,"platform":{"os":"linux","architecture":%q}}`, m.MediaType, m.Digest, m.Size, arch)
		}
		index := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[` + entry("arm64") + "," + entry("amd64") + `]}`
		putManifest(t, reg, "faults/bb", "multi", "application/vnd.oci.image.index.v1+json", index)
		fresh := newEnv(t)
		res, err := fresh.svc.Pull(ctx, reg+"/faults/bb:multi", transfer.PullOptions{}, nil)
		if err != nil {
			t.Fatalf("Pull(index): %v", err)
		}
		if res.ImageID != img.ID() || res.ManifestDigest != digest.FromString(index) {
			t.Errorf("Pull(index) = %+v, want image %s and the index's digest %s as repo digest", res, img.ID(), digest.FromString(index))
		}
	})
	t.Run("index without linux/amd64", func(t *testing.T) {
		img, _ := e.images.Get(ctx, reg+"/faults/bb:1")
		m := img.ManifestDescriptor()
		index := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":%q,"digest":%q,"size":%d,"platform":{"os":"linux","architecture":"arm64"}}]}`,
			m.MediaType, m.Digest, m.Size)
		putManifest(t, reg, "faults/bb", "arm-only", "application/vnd.oci.image.index.v1+json", index)
		_, err := e.svc.Pull(ctx, reg+"/faults/bb:arm-only", transfer.PullOptions{}, nil)
		if !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "linux/arm64") {
			t.Errorf("Pull(arm64-only index) = %v, want NOT_FOUND listing linux/arm64", err)
		}
	})
}

// putManifest puts a manifest or index into the registry under a tag.
func putManifest(t *testing.T, reg, repo, tag, mediaType, doc string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, "http://"+reg+"/v2/"+repo+"/manifests/"+tag, strings.NewReader(doc))
	req.Header.Set("Content-Type", mediaType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("putting %s:%s: %v", repo, tag, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("putting %s:%s: %s", repo, tag, resp.Status)
	}
}
