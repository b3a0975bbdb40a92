package build

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/strata-build/strata/lib/errdefs"
)

// An ADD download that takes longer than the builder allows fails, naming
// the URL and the setting, whatever the server does to keep it alive.
func TestAddDownloadTimeout(t *testing.T) {
	e := newEnv(t)
	e.importBase("busybox:latest", busyboxLike())
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("#!/bin/sh\n"))
		w.(http.Flusher).Flush()
		select { // a body that never ends
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	e.b.URLPolicy.AllowPrivate = true
	e.b.DownloadTimeout = 300 * time.Millisecond
	t0 := time.Now()
	_, _, err := e.build("FROM busybox\nADD "+srv.URL+"/slow.sh /\n", nil)
	if !errors.Is(err, errdefs.ErrDeadlineExceeded) || !strings.Contains(err.Error(), srv.URL+"/slow.sh") || !strings.Contains(err.Error(), "--download-timeout") {
		t.Errorf("ADD of a download that never ends: %v, want DEADLINE_EXCEEDED naming the URL and --download-timeout", err)
	}
	if d := time.Since(t0); d > 10*time.Second {
		t.Errorf("the build took %v to give up", d)
	}
}

// A redirect cannot lead ADD from an allowed address to a refused one: the
// check is on every connection.
func TestAddRedirectToPrivateIsRefused(t *testing.T) {
	e := newEnv(t)
	e.importBase("busybox:latest", busyboxLike())
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("secret")) }))
	defer target.Close()
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, strings.Replace(target.URL, "127.0.0.1", "localhost", 1)+"/meta-data", http.StatusFound)
	}))
	defer front.Close()
	// The front server's own address is allowed; the redirect's is not.
	if err := e.b.URLPolicy.ParseAllowList(strings.TrimPrefix(front.URL, "http://")); err != nil {
		t.Fatal(err)
	}
	_, _, err := e.build("FROM busybox\nADD "+front.URL+"/x /\n", nil)
	if !errors.Is(err, errdefs.ErrPermissionDenied) || !strings.Contains(err.Error(), "localhost") {
		t.Errorf("ADD redirected to loopback: %v, want PERMISSION_DENIED naming the address", err)
	}
}
