package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/blobclient"
	"github.com/strata-build/strata/lib/errdefs"
)

func parseDigest(s string) (digest.Digest, *apiError) {
	d, err := digest.Parse(s)
	if err != nil {
		return "", newError(http.StatusBadRequest, codeDigestInvalid, fmt.Sprintf("invalid digest %q: %v", s, err))
	}
	return d, nil
}

func (g *Registry) serveBlob(w http.ResponseWriter, r *http.Request, name, ref string) {
	d, aerr := parseDigest(ref)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	ctx := r.Context()
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		rs := &blobReader{ctx: ctx, blobs: g.blobs, d: d}
		defer rs.Close()
		// A whole-blob GET opens the stream of the blob store at once and
		// takes the size from its first message, while the metadata
		// service says whether the repository holds the blob: the two
		// round trips overlap, and no Stat comes before the Read. For a
		// small blob these round trips are most of the request. Nothing
		// is sent before the repository's answer. HEAD and ranges ask the
		// size alone, after it.
		//
		// The blob store does not check a whole blob it serves here against
		// its digest (Unverified): the client checks every blob it pulls
		// against the digest it asked for, and refuses a damaged one, so
		// the check would be a second hash of every byte pulled (see
		// docs/security.md). Ranges are not checked by the blob store
		// either way.
		whole := r.Method == http.MethodGet && r.Header.Get("Range") == ""
		opened := make(chan error, 1)
		if whole {
			go func() { opened <- rs.open(blobclient.Unverified()) }()
		}
		has, err := g.meta.HasBlob(ctx, &metadatav1.HasBlobRequest{Repository: name, Digest: d.String()})
		if err == nil && !has.GetFound() {
			err = newError(http.StatusNotFound, codeBlobUnknown, fmt.Sprintf("blob %s not found in repository %s", d, name))
		}
		if err != nil {
			if whole {
				cancel()
				<-opened
			}
			writeError(w, toAPIError(err, codeBlobUnknown))
			return
		}
		if whole {
			err = <-opened
		} else {
			var info blobclient.Info
			info, err = g.blobs.Stat(ctx, d)
			rs.size = info.Size
		}
		if err != nil {
			writeError(w, toAPIError(err, codeBlobUnknown))
			return
		}
		h := w.Header()
		h.Set("Docker-Content-Digest", d.String())
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Etag", `"`+d.String()+`"`)
		h.Set("Cache-Control", "max-age=31536000")
		if whole && r.Header.Get("If-Match") == "" && r.Header.Get("If-None-Match") == "" {
			// The stream's bytes go to the connection in writes of the
			// blob store's 1 MiB messages (blobclient.Reader.WriteTo),
			// rather than through ServeContent's 32 KiB buffer: on a
			// socket, a write costs about as much per call as per byte.
			setLength(w, rs.size)
			w.WriteHeader(http.StatusOK)
			if _, err := rs.r.WriteTo(w); err != nil {
				g.log.WarnContext(ctx, "sending a blob failed", "digest", d.String(), "error", err)
			}
			return
		}
		// ServeContent answers ranges (206, 416), conditional requests
		// (on the Etag: a blob never changes, so it has no Last-Modified)
		// and HEAD; the blob is read from the store only where it asks.
		http.ServeContent(w, r, "", time.Time{}, rs)
	case http.MethodDelete:
		if _, err := g.meta.UnlinkBlob(ctx, &metadatav1.UnlinkBlobRequest{Repository: name, Digest: d.String()}); err != nil {
			writeError(w, toAPIError(err, codeBlobUnknown))
			return
		}
		w.WriteHeader(http.StatusAccepted)
	default:
		methodNotAllowed(w, "GET, HEAD, DELETE")
	}
}

// blobReader is an io.ReadSeeker over a stored blob for http.ServeContent:
// it opens a stream of the blob store at the offset it is first read from,
// and keeps an open stream across seeks that come back to where it stands
// (ServeContent seeks to the end and back to learn the size).
type blobReader struct {
	ctx   context.Context
	blobs *blobclient.Client
	d     digest.Digest
	size  int64
	off   int64
	r     *blobclient.Reader
	rOff  int64 // of the next byte r returns
}

func (b *blobReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		offset += b.off
	case io.SeekEnd:
		offset += b.size
	}
	if offset < 0 {
		return 0, errors.New("seek before the start of the blob")
	}
	b.off = offset
	return offset, nil
}

func (b *blobReader) Read(p []byte) (int, error) {
	if b.off >= b.size {
		return 0, io.EOF
	}
	if b.r != nil && b.rOff != b.off {
		b.Close()
	}
	if b.r == nil {
		if err := b.open(); err != nil {
			return 0, err
		}
	}
	n, err := b.r.Read(p)
	b.off += int64(n)
	b.rOff = b.off
	return n, err
}

// open starts the stream at the current offset and learns the blob's size.
func (b *blobReader) open(opts ...blobclient.ReadOption) error {
	r, err := b.blobs.Open(b.ctx, b.d, b.off, 0, opts...)
	if err != nil {
		return err
	}
	b.r, b.rOff, b.size = r, b.off, r.Size()
	return nil
}

func (b *blobReader) Close() error {
	if b.r != nil {
		b.r.Close()
		b.r = nil
	}
	return nil
}

// uploadIDPattern is what an upload ID (a blob store ref) may be.
var uploadIDPattern = regexp.MustCompile(`^reg-[0-9a-f]{32}$`)

func newUploadID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "reg-" + hex.EncodeToString(b[:])
}

func uploadLocation(name, id string) string { return "/v2/" + name + "/blobs/uploads/" + id }

// setUploadHeaders says where an upload stands: offset bytes received.
func setUploadHeaders(w http.ResponseWriter, name, id string, offset int64) {
	h := w.Header()
	h.Set("Location", uploadLocation(name, id))
	h.Set("Docker-Upload-UUID", id)
	end := offset - 1
	if end < 0 {
		end = 0 // as the distribution registry says of an empty upload
	}
	h.Set("Range", fmt.Sprintf("0-%d", end))
}

func (g *Registry) serveUpload(w http.ResponseWriter, r *http.Request, name, id string) {
	if id == "" {
		if r.Method != http.MethodPost {
			methodNotAllowed(w, "POST")
			return
		}
		g.startUpload(w, r, name)
		return
	}
	if !uploadIDPattern.MatchString(id) {
		writeError(w, newError(http.StatusNotFound, codeBlobUploadUnknown, fmt.Sprintf("upload %q not found", id)))
		return
	}
	ctx := r.Context()
	switch r.Method {
	case http.MethodGet:
		u, err := g.blobs.UploadStatus(ctx, id)
		if err != nil {
			writeError(w, toAPIError(err, codeBlobUploadUnknown))
			return
		}
		setUploadHeaders(w, name, id, u.Offset)
		setLength(w, 0)
		w.WriteHeader(http.StatusNoContent)
	case http.MethodPatch:
		g.writeUpload(w, r, name, id, "")
	case http.MethodPut:
		d, aerr := parseDigest(r.URL.Query().Get("digest"))
		if aerr != nil {
			writeError(w, aerr)
			return
		}
		g.writeUpload(w, r, name, id, d)
	case http.MethodDelete:
		if err := g.blobs.AbortUpload(ctx, id); err != nil {
			writeError(w, toAPIError(err, codeBlobUploadUnknown))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		methodNotAllowed(w, "GET, PATCH, PUT, DELETE")
	}
}

// startUpload answers POST: a mount, a monolithic upload, or a new upload
// session.
func (g *Registry) startUpload(w http.ResponseWriter, r *http.Request, name string) {
	ctx := r.Context()
	q := r.URL.Query()
	if mount := q.Get("mount"); mount != "" {
		d, aerr := parseDigest(mount)
		if aerr != nil {
			writeError(w, aerr)
			return
		}
		ok, err := g.mount(ctx, name, q.Get("from"), d)
		if err != nil {
			writeError(w, toAPIError(err, codeBlobUnknown))
			return
		}
		if ok {
			blobCreated(w, name, d)
			return
		}
		// Not mountable: a new upload, as the spec says.
	}
	if dq := q.Get("digest"); dq != "" {
		d, aerr := parseDigest(dq)
		if aerr != nil {
			writeError(w, aerr)
			return
		}
		if _, err := g.blobs.Put(ctx, r.Body, d, r.ContentLength); err != nil {
			writeError(w, toAPIError(err, codeBlobUnknown))
			return
		}
		if err := g.link(ctx, name, d); err != nil {
			writeError(w, toAPIError(err, codeBlobUnknown))
			return
		}
		blobCreated(w, name, d)
		return
	}
	id := newUploadID()
	// Opening and pausing a writer makes the upload exist in the blob
	// store, so that any replica can resume it.
	bw, err := g.blobs.NewWriter(ctx, "", blobclient.SizeUnknown, blobclient.WithRef(id), blobclient.WithDigestAtCommit())
	if err != nil {
		writeError(w, toAPIError(err, codeBlobUploadUnknown))
		return
	}
	defer bw.Close()
	if _, err := bw.Pause(ctx); err != nil {
		writeError(w, toAPIError(err, codeBlobUploadUnknown))
		return
	}
	setUploadHeaders(w, name, id, 0)
	setLength(w, 0)
	w.WriteHeader(http.StatusAccepted)
}

// mount links a blob that repository from (any repository, when from is
// empty) holds into name, without copying it, and reports whether it could.
func (g *Registry) mount(ctx context.Context, name, from string, d digest.Digest) (bool, error) {
	if from != "" {
		has, err := g.meta.HasBlob(ctx, &metadatav1.HasBlobRequest{Repository: from, Digest: d.String()})
		if err != nil {
			if errdefs.IsInvalidArgument(err) {
				return false, nil
			}
			return false, err
		}
		if !has.GetFound() {
			return false, nil
		}
	}
	if _, err := g.blobs.Stat(ctx, d); err != nil {
		if errdefs.IsNotFound(err) {
			return false, nil
		}
		return false, err
	}
	return true, g.link(ctx, name, d)
}

func (g *Registry) link(ctx context.Context, name string, d digest.Digest) error {
	_, err := g.meta.LinkBlob(ctx, &metadatav1.LinkBlobRequest{Repository: name, Digest: d.String()})
	return err
}

func blobCreated(w http.ResponseWriter, name string, d digest.Digest) {
	h := w.Header()
	h.Set("Location", "/v2/"+name+"/blobs/"+d.String())
	h.Set("Docker-Content-Digest", d.String())
	setLength(w, 0)
	w.WriteHeader(http.StatusCreated)
}

// parseContentRange reads a chunk's "start-end" Content-Range; ok is false
// when there is none.
func parseContentRange(s string) (start, end int64, ok bool, err error) {
	if s == "" {
		return 0, 0, false, nil
	}
	s = strings.TrimPrefix(s, "bytes ")
	a, b, found := strings.Cut(s, "-")
	if !found {
		return 0, 0, false, fmt.Errorf("Content-Range %q is not start-end", s)
	}
	if start, err = strconv.ParseInt(a, 10, 64); err == nil {
		end, err = strconv.ParseInt(strings.SplitN(b, "/", 2)[0], 10, 64)
	}
	if err != nil || start < 0 || end < start {
		return 0, 0, false, fmt.Errorf("Content-Range %q is not start-end", s)
	}
	return start, end, true, nil
}

// writeUpload appends a request's body to an upload (PATCH, or PUT with the
// last bytes) and, with d set, commits the blob as d. The blob store's
// writer resumes the upload, which must exist, and says where it stands:
// one call, with no status asked before or after.
func (g *Registry) writeUpload(w http.ResponseWriter, r *http.Request, name, id string, d digest.Digest) {
	ctx := r.Context()
	start, end, ranged, err := parseContentRange(r.Header.Get("Content-Range"))
	if err != nil {
		writeError(w, newError(http.StatusBadRequest, codeBlobUploadInvalid, err.Error()))
		return
	}
	if ranged && r.ContentLength >= 0 && r.ContentLength != end-start+1 {
		writeError(w, newError(http.StatusBadRequest, codeSizeInvalid,
			fmt.Sprintf("Content-Range %d-%d is %d bytes but Content-Length is %d", start, end, end-start+1, r.ContentLength)))
		return
	}
	bw, err := g.blobs.NewWriter(ctx, "", blobclient.SizeUnknown, blobclient.WithRef(id), blobclient.WithDigestAtCommit(), blobclient.WithResumeOnly())
	if err != nil {
		writeError(w, toAPIError(err, codeBlobUploadUnknown))
		return
	}
	defer bw.Close()
	if offset := bw.Offset(); ranged && start != offset {
		setUploadHeaders(w, name, id, offset)
		writeError(w, newError(http.StatusRequestedRangeNotSatisfiable, codeBlobUploadInvalid,
			fmt.Sprintf("upload %s holds %d bytes: a chunk must start at %d, not %d", id, offset, offset, start)))
		return
	}
	if _, err := io.Copy(bw, r.Body); err != nil {
		writeError(w, toAPIError(err, codeBlobUploadInvalid))
		return
	}
	if d == "" {
		offset, err := bw.Pause(ctx)
		if err != nil {
			writeError(w, toAPIError(err, codeBlobUploadUnknown))
			return
		}
		setUploadHeaders(w, name, id, offset)
		setLength(w, 0)
		w.WriteHeader(http.StatusAccepted)
		return
	}
	if _, err := bw.CommitDigest(ctx, d); err != nil {
		writeError(w, toAPIError(err, codeBlobUploadInvalid))
		return
	}
	if err := g.link(ctx, name, d); err != nil {
		writeError(w, toAPIError(err, codeBlobUnknown))
		return
	}
	blobCreated(w, name, d)
}
