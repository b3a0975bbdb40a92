package transfer_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/archive"
	"github.com/strata-build/strata/services/builder/internal/egress"
	"github.com/strata-build/strata/services/builder/internal/image"
	"github.com/strata-build/strata/services/builder/internal/transfer"
	"github.com/strata-build/strata/services/builder/internal/transfer/transfertest"
)

// Pull and push reach registries on loopback (and other special-purpose
// addresses) only when the builder allows them.
func TestRegistryEgress(t *testing.T) {
	var hits int
	registry := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits++
		http.NotFound(w, r)
	}))
	defer registry.Close()
	host := strings.TrimPrefix(registry.URL, "http://")
	port := host[strings.LastIndex(host, ":")+1:]
	ctx := context.Background()

	refused, images := newService(t, transfer.WithEgress(egress.Policy{Allow: "--allow-private-registries"}))
	if _, err := archive.New(refused, images.blobs, images.store).Import(ctx, bytes.NewReader(rootfs(t)), archive.ImportOptions{Reference: host + "/team/app:1"}, nil); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{host + "/team/app:1", "localhost:" + port + "/team/app:1"} {
		_, err := refused.Pull(ctx, ref, transfer.PullOptions{}, nil)
		if !errors.Is(err, errdefs.ErrPermissionDenied) || !strings.Contains(err.Error(), "127.0.0.1") || !strings.Contains(err.Error(), "--allow-private-registries") {
			t.Errorf("Pull(%s) = %v, want PERMISSION_DENIED naming the address and the flag", ref, err)
		}
	}
	_, err := refused.Push(ctx, host+"/team/app:1", transfer.PushOptions{}, nil)
	if !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Errorf("Push to %s = %v, want PERMISSION_DENIED", host, err)
	}
	if hits != 0 {
		t.Errorf("the loopback registry got %d requests, want none", hits)
	}

	for name, p := range map[string]egress.Policy{
		"loopback range allowed": {Prefixes: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}},
		"the registry allowed":   {Hosts: []string{host}},
		"private allowed":        {AllowPrivate: true},
	} {
		f, _ := newService(t, transfer.WithEgress(p))
		before := hits
		_, err := f.Pull(ctx, host+"/team/app:1", transfer.PullOptions{}, nil)
		if errors.Is(err, errdefs.ErrPermissionDenied) || hits == before {
			t.Errorf("%s: Pull(%s) = %v after %d requests; want the registry asked", name, host, err, hits-before)
		}
	}
}

type stores struct {
	blobs *transfertest.Blobs
	store *image.Store
}

func newService(t testing.TB, opts ...transfer.Option) (*transfer.Service, stores) {
	t.Helper()
	blobs := transfertest.NewBlobs()
	st := stores{blobs: blobs, store: image.NewStore(blobs, transfertest.NewImages())}
	return transfer.New(blobs, st.store, slog.New(slog.DiscardHandler), opts...), st
}

// rootfs is a root filesystem tarball of one file.
func rootfs(t testing.TB) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	body := []byte("#!/not/really\n")
	if err := tw.WriteHeader(&tar.Header{Name: "bin/sh", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(body))}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
