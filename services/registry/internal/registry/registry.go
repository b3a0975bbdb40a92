// Package registry serves the OCI distribution API (v1.1) over Strata's
// services: blobs stream to and from the blob store, and manifests, tags,
// referrers and which repository holds which blob live in the metadata
// service. It keeps no state of its own: an upload is an upload of the
// blob store, named in its URL, so any replica continues any upload.
package registry

import (
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"time"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/auth"
	"github.com/strata-build/strata/lib/blobclient"
	"github.com/strata-build/strata/lib/compression"
	"github.com/strata-build/strata/lib/requestid"
	"github.com/strata-build/strata/lib/version"
)

// routeKind is what a request is about; metrics and the role table key on it.
type routeKind int

const (
	routeUnknown routeKind = iota
	routePing
	routeToken
	routeManifest
	routeBlob
	routeUpload
	routeTags
	routeReferrers
)

func (k routeKind) String() string {
	return [...]string{"unknown", "ping", "token", "manifest", "blob", "upload", "tags", "referrers"}[k]
}

// namePattern is the spec's repository name grammar.
const namePattern = `[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*`

var routePattern = regexp.MustCompile(`^/v2/(` + namePattern + `)/(manifests/|blobs/uploads/|blobs/|tags/list$|referrers/)(.*)$`)

// route splits a path into its kind, repository and the rest (a reference,
// a digest or an upload ID).
func route(path string) (routeKind, string, string) {
	switch path {
	case "/v2/", "/v2":
		return routePing, "", ""
	case "/token":
		return routeToken, "", ""
	}
	m := routePattern.FindStringSubmatch(path)
	if m == nil {
		return routeUnknown, "", ""
	}
	kind := map[string]routeKind{
		"manifests/": routeManifest, "blobs/uploads/": routeUpload, "blobs/": routeBlob, "tags/list": routeTags, "referrers/": routeReferrers,
	}[m[2]]
	return kind, m[1], m[3]
}

// Registry is the distribution API's HTTP handler.
type Registry struct {
	meta    metadatav1.ImageServiceClient
	blobs   *blobclient.Client
	auth    *Auth
	log     *slog.Logger
	metrics *Metrics
	limits  compression.Limits
}

// New returns the handler over the metadata service and the blob store.
func New(meta metadatav1.ImageServiceClient, blobs *blobclient.Client, auth *Auth, log *slog.Logger, metrics *Metrics) *Registry {
	return &Registry{meta: meta, blobs: blobs, auth: auth, log: log, metrics: metrics, limits: compression.Limits{}.WithDefaults()}
}

// statusWriter records what a handler answered.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(p)
	s.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// countingBody counts the request bytes a handler read.
type countingBody struct {
	r interface {
		Read([]byte) (int, error)
		Close() error
	}
	n int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countingBody) Close() error { return c.r.Close() }

func (g *Registry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	id := r.Header.Get("X-Request-Id")
	if !requestid.Valid(id) {
		id = requestid.New()
	}
	h := w.Header()
	h.Set("X-Request-Id", id)
	h.Set(version.Header, version.String())
	h.Set("Docker-Distribution-API-Version", "registry/2.0")
	r = r.WithContext(requestid.With(r.Context(), id))
	sw := &statusWriter{ResponseWriter: w}
	body := &countingBody{r: r.Body}
	r.Body = body
	kind, name, rest := route(r.URL.Path)
	var caller auth.Identity
	defer func() {
		status := sw.status
		if status == 0 {
			status = http.StatusOK
		}
		g.metrics.observe(kind, r.Method, status, time.Since(start), body.n, sw.bytes)
		g.log.InfoContext(r.Context(), "request", "caller", caller.String(), "method", r.Method, "path", r.URL.Path, "route", kind.String(),
			"status", status, "duration", time.Since(start).String(), "bytes_in", body.n, "bytes_out", sw.bytes)
	}()
	switch kind {
	case routeUnknown:
		writeError(sw, newError(http.StatusNotFound, codeNameInvalid, "no such endpoint: "+r.URL.Path))
		return
	case routeToken:
		g.auth.serveToken(sw, r)
		return
	}
	var ok bool
	if caller, ok = g.auth.allow(sw, r, kind, name); !ok {
		return
	}
	switch kind {
	case routePing:
		sw.Header().Set("Content-Type", "application/json")
		_, _ = sw.Write([]byte("{}"))
	case routeManifest:
		g.serveManifest(sw, r, name, rest)
	case routeBlob:
		g.serveBlob(sw, r, name, rest)
	case routeUpload:
		g.serveUpload(sw, r, name, rest)
	case routeTags:
		g.serveTags(sw, r, name)
	case routeReferrers:
		g.serveReferrers(sw, r, name, rest)
	}
}

func methodNotAllowed(w http.ResponseWriter, allowed string) {
	w.Header().Set("Allow", allowed)
	writeError(w, newError(http.StatusMethodNotAllowed, codeUnsupported, "method not allowed; allowed: "+allowed))
}

func setLength(w http.ResponseWriter, n int64) {
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
}
