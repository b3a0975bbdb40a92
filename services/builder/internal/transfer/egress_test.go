package transfer

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/egress"
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

	refused := newFixture(t, WithEgress(egress.Policy{Allow: "--allow-private-registries"}))
	if _, err := refused.svc.Import(ctx, bytes.NewReader(rootfs(t)), ImportOptions{Reference: host + "/team/app:1"}, nil); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{host + "/team/app:1", "localhost:" + port + "/team/app:1"} {
		_, err := refused.svc.Pull(ctx, ref, PullOptions{}, nil)
		if !errors.Is(err, errdefs.ErrPermissionDenied) || !strings.Contains(err.Error(), "127.0.0.1") || !strings.Contains(err.Error(), "--allow-private-registries") {
			t.Errorf("Pull(%s) = %v, want PERMISSION_DENIED naming the address and the flag", ref, err)
		}
	}
	_, err := refused.svc.Push(ctx, host+"/team/app:1", PushOptions{}, nil)
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
		f := newFixture(t, WithEgress(p))
		before := hits
		_, err := f.svc.Pull(ctx, host+"/team/app:1", PullOptions{}, nil)
		if errors.Is(err, errdefs.ErrPermissionDenied) || hits == before {
			t.Errorf("%s: Pull(%s) = %v after %d requests; want the registry asked", name, host, err, hits-before)
		}
	}
}
