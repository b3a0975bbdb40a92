// Package s3blob is the blob.Store in an S3-compatible bucket, through
// minio-go. Keys:
//
//	blobs/sha256/<hex>   committed blobs (sha512 ones under blobs/sha512/)
//	uploads/<ref>.json   the state of an unfinished upload, and the lease of
//	                     the writer that holds it (see state)
//	ingest/<ref>         where the multipart upload of a blob whose digest
//	                     comes only at commit is assembled, then copied from
//
// Small blobs go up in one PutObject at commit, or, when the caller has
// one whole (Put), in one PutObject with no upload around it. Larger ones
// go up as multipart uploads in parts of a bounded size, a bounded number
// at once, while the writer receives and hashes; the multipart upload is
// completed, onto the blob's key, only after size and digest matched, and
// aborted otherwise, so no partial or wrong blob is ever visible.
//
// After each part the upload's state (parts, offset and the SHA-256 state at
// that offset) is saved in the bucket, so that any process can resume the
// upload from that offset. Nothing about uploads lives in the process:
// which writer holds an upload is a lease in that state, taken and renewed
// with S3's conditional writes, so that any number of replicas serve one
// bucket, each upload is written by one of them at a time, and every
// replica's janitor may run. It needs an S3 server that honours If-Match
// and If-None-Match on PutObject (AWS, MinIO, versitygw).
package s3blob

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/semaphore"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/blobstore/internal/blob"
)

// MinPartSize is the smallest part S3 accepts (but for the last one).
const MinPartSize = 5 << 20

// S3's limits: the most parts of one multipart upload, the largest part and
// the largest object.
const (
	maxParts      = 10000
	maxS3PartSize = 5 << 30
	maxObjectSize = 5 << 40
)

// Config says how to reach the bucket and how to upload.
type Config struct {
	// Endpoint is host[:port] of the S3 server.
	Endpoint string
	// Bucket holds the blobs.
	Bucket string
	// Region of the bucket; empty lets the client find out.
	Region string
	// PathStyle addresses the bucket in the path rather than in the host name.
	PathStyle bool
	// TLS turns on HTTPS; TLSInsecure skips certificate checks (tests only).
	TLS, TLSInsecure bool
	// AccessKey, SecretKey and SessionToken are the credentials.
	AccessKey, SecretKey, SessionToken string
	// CreateBucket creates the bucket when it is missing.
	CreateBucket bool
	// PartSize is the size of multipart parts (at least MinPartSize); blobs
	// smaller than one part go up in one request.
	PartSize int64
	// Concurrency bounds the parts of one upload in flight at once. Memory
	// per upload is about (Concurrency+1) × PartSize.
	Concurrency int
	// MaxRetries bounds the client's tries of one request (1: no retry).
	MaxRetries int
	// SignPayload signs each part's bytes (streaming SigV4, a SHA-256 per
	// chunk, which the server checks) over plain HTTP, for links where
	// bytes could change between the blob store and S3; over TLS, minio-go
	// sends them unsigned all the same.
	SignPayload bool
	// MaxParts bounds the parts in flight, uploading or read ahead, across
	// all uploads and reads of the store, so that many at once do not
	// multiply its memory. 0 means 4 × Concurrency.
	MaxParts int
	// IdleTimeout cuts a connection to S3 that moves no byte for this
	// long, so that a stalled server (a dead peer, a black hole) fails the
	// request, which is then retried, rather than hanging it. It must
	// exceed the longest the server stays silent while it works, such as
	// completing the multipart upload of the largest blob. 0 means
	// DefaultIdleTimeout.
	IdleTimeout time.Duration
	// LeaseTTL is how long an upload stays its writer's after the writer's
	// last renewal (every third of it): a resume on another replica after
	// a crash waits this long. Replicas' clocks must agree to well within
	// it. 0 means DefaultLeaseTTL.
	LeaseTTL time.Duration
}

// Defaults for Config's upload fields.
const (
	DefaultPartSize    = 8 << 20
	DefaultConcurrency = 4
	DefaultMaxRetries  = 3
	DefaultLeaseTTL    = 30 * time.Second
	DefaultIdleTimeout = 30 * time.Second
)

// Store keeps blobs in a bucket.
type Store struct {
	core minio.Core
	cfg  Config
	host string              // names this process in upload leases
	bufs sync.Pool           // part buffers of cfg.PartSize
	mem  *semaphore.Weighted // parts of cfg.PartSize in flight, store-wide (cfg.MaxParts)

	// ensureMu lets one caller at a time check or create the bucket: S3
	// servers (versitygw among them) may fail concurrent creations of one
	// bucket with an internal error instead of BucketAlreadyOwnedByYou.
	ensureMu sync.Mutex
	mu       sync.Mutex
	ready    bool // the bucket was seen
}

var _ blob.Store = (*Store)(nil)

// New returns a store over the bucket in cfg. It does not wait for the S3
// server: when it is down, calls fail with ErrUnavailable until it is back,
// and the bucket is checked (and created, when allowed) on first contact.
func New(cfg Config) (*Store, error) {
	if cfg.PartSize == 0 {
		cfg.PartSize = DefaultPartSize
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.MaxRetries == 0 {
		cfg.MaxRetries = DefaultMaxRetries
	}
	if cfg.MaxParts == 0 {
		cfg.MaxParts = 4 * cfg.Concurrency
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.PartSize < MinPartSize {
		return nil, fmt.Errorf("part size %d is below S3's minimum of %d", cfg.PartSize, MinPartSize)
	}
	lookup := minio.BucketLookupAuto
	if cfg.PathStyle {
		lookup = minio.BucketLookupPath
	}
	tr, err := minio.DefaultTransport(cfg.TLS)
	if err != nil {
		return nil, err
	}
	if cfg.TLS && cfg.TLSInsecure {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // asked for by flag
	}
	dial := tr.DialContext
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &idleConn{Conn: c, idle: cfg.IdleTimeout}, nil
	}
	opts := &minio.Options{
		Creds:        credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, cfg.SessionToken),
		Secure:       cfg.TLS,
		Region:       cfg.Region,
		BucketLookup: lookup,
		MaxRetries:   cfg.MaxRetries,
		Transport:    tr,
	}
	c, err := minio.New(cfg.Endpoint, opts)
	if err != nil {
		return nil, fmt.Errorf("S3 endpoint %q: %w", cfg.Endpoint, err)
	}
	host, err := os.Hostname()
	if err != nil {
		host = "unknown-host"
	}
	s := &Store{core: minio.Core{Client: c}, cfg: cfg, host: host, mem: semaphore.NewWeighted(int64(cfg.MaxParts))}
	s.bufs.New = func() any { b := make([]byte, 0, cfg.PartSize); return &b }
	return s, nil
}

// idleConn is a connection whose every read and write must move a byte
// within idle of the one before (see Config.IdleTimeout). A deadline
// covers both directions, so that a request being written keeps the
// reader of its connection alive.
type idleConn struct {
	net.Conn
	idle time.Duration
}

func (c *idleConn) Read(p []byte) (int, error) {
	if err := c.SetDeadline(time.Now().Add(c.idle)); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *idleConn) Write(p []byte) (int, error) {
	if err := c.SetDeadline(time.Now().Add(c.idle)); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// maxPartSize is the largest part an upload may use: S3's limit, and no
// more than every part the store may have in flight, so that memory stays
// bounded by --s3-max-parts whatever size a client declares.
func (s *Store) maxPartSize() int64 {
	return min(maxS3PartSize, int64(s.cfg.MaxParts)*s.cfg.PartSize)
}

// MaxBlobSize is the largest blob the store takes: 10,000 parts of the
// largest part size, and never more than S3's largest object.
func (s *Store) MaxBlobSize() int64 {
	return min(maxObjectSize, maxParts*s.maxPartSize())
}

// partWeight is what a part of n bytes counts against cfg.MaxParts: never
// more than all of it, which a part resumed from before a smaller limit
// was configured could otherwise wait for forever.
func (s *Store) partWeight(n int) int64 {
	return min(max(1, (int64(n)+s.cfg.PartSize-1)/s.cfg.PartSize), int64(s.cfg.MaxParts))
}

// Check reaches the S3 server and makes sure of the bucket, each time it is
// called: New's callers report with it at start whether S3 is there, and
// the health probe runs it.
func (s *Store) Check(ctx context.Context) error {
	if err := s.ensure(ctx); err != nil {
		return err
	}
	ok, err := s.core.BucketExists(ctx, s.cfg.Bucket)
	if err != nil {
		return s.classify(err, "checking bucket %q", s.cfg.Bucket)
	}
	if !ok {
		s.mu.Lock()
		s.ready = false
		s.mu.Unlock()
		return errdefs.Unavailable("bucket %q does not exist at S3 %s", s.cfg.Bucket, s.cfg.Endpoint).WithReason("BUCKET_MISSING")
	}
	return nil
}

// ensure checks, once it succeeds, that the bucket exists, creating it when
// allowed.
func (s *Store) ensure(ctx context.Context) error {
	s.mu.Lock()
	ready := s.ready
	s.mu.Unlock()
	if ready {
		return nil
	}
	s.ensureMu.Lock()
	defer s.ensureMu.Unlock()
	s.mu.Lock()
	ready = s.ready
	s.mu.Unlock()
	if ready {
		return nil
	}
	ok, err := s.core.BucketExists(ctx, s.cfg.Bucket)
	if err != nil {
		return s.classify(err, "checking bucket %q", s.cfg.Bucket)
	}
	if !ok {
		if !s.cfg.CreateBucket {
			return errdefs.Unavailable("bucket %q does not exist at S3 %s: create it, or allow the blob store to (--s3-create-bucket)",
				s.cfg.Bucket, s.cfg.Endpoint).WithReason("BUCKET_MISSING")
		}
		err := s.core.MakeBucket(ctx, s.cfg.Bucket, minio.MakeBucketOptions{Region: s.cfg.Region})
		if err != nil && !isCode(err, "BucketAlreadyOwnedByYou", "BucketAlreadyExists") {
			return s.classify(err, "creating bucket %q", s.cfg.Bucket)
		}
	}
	s.mu.Lock()
	s.ready = true
	s.mu.Unlock()
	return nil
}

func blobKey(d digest.Digest) string { return "blobs/" + string(d.Algorithm()) + "/" + d.Encoded() }
func stateKey(ref string) string     { return "uploads/" + ref + ".json" }
func tailKey(ref string) string      { return "uploads/" + ref + ".tail" }
func ingestKey(ref string) string    { return "ingest/" + ref }

func isCode(err error, codes ...string) bool {
	code := minio.ToErrorResponse(err).Code
	for _, c := range codes {
		if code == c {
			return true
		}
	}
	return false
}

func isNotFound(err error) bool {
	return isCode(err, "NoSuchKey", "NotFound", "NoSuchUpload") || minio.ToErrorResponse(err).StatusCode == http.StatusNotFound && !isCode(err, "NoSuchBucket")
}

// classify turns a minio-go error into an errdefs one, saying what was done
// where: an unreachable or failing server is ErrUnavailable (retry later).
func (s *Store) classify(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	what := fmt.Sprintf(format, args...)
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", what, err)
	}
	var urlErr *url.Error
	var netErr *net.OpError
	if errors.As(err, &urlErr) || errors.As(err, &netErr) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return errdefs.Unavailable("%s: S3 at %s is unreachable: %v", what, s.cfg.Endpoint, err).WithReason("S3_UNREACHABLE")
	}
	resp := minio.ToErrorResponse(err)
	switch {
	case resp.Code == "NoSuchBucket":
		s.mu.Lock()
		s.ready = false
		s.mu.Unlock()
		return errdefs.Unavailable("%s: bucket %q does not exist at S3 %s", what, s.cfg.Bucket, s.cfg.Endpoint).WithReason("BUCKET_MISSING")
	case resp.Code == "AccessDenied" || resp.Code == "InvalidAccessKeyId" || resp.Code == "SignatureDoesNotMatch":
		return errdefs.Unavailable("%s: S3 at %s refused the blob store's credentials: %v", what, s.cfg.Endpoint, err).WithReason("S3_ACCESS_DENIED")
	}
	return errdefs.Unavailable("%s: S3 at %s: %v", what, s.cfg.Endpoint, err).WithReason("S3_ERROR")
}

func notFound(d digest.Digest) error {
	return errdefs.NotFound("blob %s not found", d).WithReason("BLOB_NOT_FOUND").WithDetail("digest", string(d))
}

// Stat implements blob.Store.
func (s *Store) Stat(ctx context.Context, d digest.Digest) (blob.Info, error) {
	if err := blob.ValidateDigest(d); err != nil {
		return blob.Info{}, err
	}
	if err := s.ensure(ctx); err != nil {
		return blob.Info{}, err
	}
	oi, err := s.core.StatObject(ctx, s.cfg.Bucket, blobKey(d), minio.StatObjectOptions{})
	if err != nil {
		if isNotFound(err) {
			return blob.Info{}, notFound(d)
		}
		return blob.Info{}, s.classify(err, "stat of %s", d)
	}
	return blob.Info{Digest: d, Size: oi.Size, CreatedAt: oi.LastModified}, nil
}

// Open implements blob.Store with ranged GETs, streamed. The first GET,
// of up to a part, is sent at once, without a Stat before it: its
// Content-Range tells the blob's size, so a small blob is read in one
// request to S3 instead of two. Only when S3 refuses that range (an empty
// blob, or an offset past the end) does Open ask the size, to answer as
// ValidateRange does.
func (s *Store) Open(ctx context.Context, d digest.Digest, offset, length int64) (io.ReadCloser, blob.Info, error) {
	if err := blob.ValidateDigest(d); err != nil {
		return nil, blob.Info{}, err
	}
	if offset < 0 || length < 0 {
		return s.openStat(ctx, d, offset, length)
	}
	if err := s.ensure(ctx); err != nil {
		return nil, blob.Info{}, err
	}
	first := s.cfg.PartSize
	if length > 0 {
		first = min(first, length)
	}
	var opts minio.GetObjectOptions
	if err := opts.SetRange(offset, offset+first-1); err != nil {
		return nil, blob.Info{}, errdefs.InvalidArgument("range of %s: %v", d, err)
	}
	// The GETs' context: the reader's Close ends them.
	gctx, cancel := context.WithCancel(ctx)
	body, oi, h, err := s.core.GetObject(gctx, s.cfg.Bucket, blobKey(d), opts)
	if err != nil {
		cancel()
		switch {
		case isNotFound(err):
			return nil, blob.Info{}, notFound(d)
		case minio.ToErrorResponse(err).StatusCode == http.StatusRequestedRangeNotSatisfiable:
			return s.openStat(ctx, d, offset, length)
		}
		return nil, blob.Info{}, s.classify(err, "reading %s", d)
	}
	size, err := totalSize(h.Get("Content-Range"))
	if h.Get("Content-Range") == "" && offset == 0 {
		// A server that ignores ranges answers with the whole blob.
		size, err = oi.Size, nil
	}
	if err != nil {
		body.Close()
		cancel()
		return nil, blob.Info{}, errdefs.Internal("reading %s: S3 at %s answered a ranged GET with %v", d, s.cfg.Endpoint, err)
	}
	info := blob.Info{Digest: d, Size: size, CreatedAt: oi.LastModified}
	n, err := blob.ValidateRange(d, size, offset, length)
	if err != nil {
		body.Close()
		cancel()
		return nil, blob.Info{}, err
	}
	got := min(first, n)
	r := s.openRange(gctx, d, offset, got)
	r.body = body
	rc := io.ReadCloser(r)
	if n > got {
		rc = s.openParallel(gctx, cancel, d, offset, n, r)
	} else {
		r.cancel = cancel
	}
	if n == size {
		rc = blob.Verified(rc, d, size)
	}
	return rc, info, nil
}

// totalSize reads the object's size from a Content-Range of "bytes a-b/size".
func totalSize(contentRange string) (int64, error) {
	_, total, ok := strings.Cut(contentRange, "/")
	size, err := strconv.ParseInt(total, 10, 64)
	if !ok || !strings.HasPrefix(contentRange, "bytes ") || err != nil || size < 0 {
		return 0, fmt.Errorf("Content-Range %q, not bytes a-b/size", contentRange)
	}
	return size, nil
}

// openStat is Open with a Stat first, for the ranges S3 refuses.
func (s *Store) openStat(ctx context.Context, d digest.Digest, offset, length int64) (io.ReadCloser, blob.Info, error) {
	info, err := s.Stat(ctx, d)
	if err != nil {
		return nil, blob.Info{}, err
	}
	n, err := blob.ValidateRange(d, info.Size, offset, length)
	if err != nil {
		return nil, blob.Info{}, err
	}
	var rc io.ReadCloser
	switch {
	case n == 0:
		rc = io.NopCloser(bytes.NewReader(nil))
	case n > s.cfg.PartSize:
		ctx, cancel := context.WithCancel(ctx)
		rc = s.openParallel(ctx, cancel, d, offset, n, nil)
	default:
		r := s.openRange(ctx, d, offset, n)
		// The first GET now, so that a blob deleted since the Stat is
		// NOT_FOUND here rather than at the first Read.
		if err := r.start(); err != nil {
			return nil, blob.Info{}, err
		}
		rc = r
	}
	if n == info.Size {
		rc = blob.Verified(rc, d, info.Size)
	}
	return rc, info, nil
}

// get starts a GET of n bytes of d from offset.
func (s *Store) get(ctx context.Context, d digest.Digest, offset, n int64) (io.ReadCloser, error) {
	var opts minio.GetObjectOptions
	if err := opts.SetRange(offset, offset+n-1); err != nil {
		return nil, errdefs.InvalidArgument("range of %s: %v", d, err)
	}
	body, _, _, err := s.core.GetObject(ctx, s.cfg.Bucket, blobKey(d), opts)
	if err != nil {
		if isNotFound(err) {
			return nil, notFound(d)
		}
		return nil, s.classify(err, "reading %s", d)
	}
	return body, nil
}

// Put implements blob.Store with one PutObject straight to the blob's key,
// as a small upload's commit stores it, and no upload state around it: the
// bytes are checked here first, and S3 makes an object visible whole or
// not at all. A blob already stored is written over with the same bytes,
// as that commit does when another writer stores it at the same moment.
// An upload held under any ref (an older, interrupted one) is left alone,
// for its writer to resume or the janitor to discard.
func (s *Store) Put(ctx context.Context, d digest.Digest, mediaType string, data []byte) (blob.Info, error) {
	if err := blob.ValidateDigest(d); err != nil {
		return blob.Info{}, err
	}
	if actual := d.Algorithm().FromBytes(data); actual != d {
		return blob.Info{}, blob.DigestMismatch(d, actual)
	}
	if err := s.ensure(ctx); err != nil {
		return blob.Info{}, err
	}
	// Signed with the body's SHA-256, which S3 checks, rather than with a
	// streaming signature (see writeState): a sha256 blob's is its digest,
	// just checked.
	sum := d.Encoded()
	if d.Algorithm() != digest.SHA256 {
		h := sha256.Sum256(data)
		sum = hex.EncodeToString(h[:])
	}
	opts := minio.PutObjectOptions{ContentType: mediaType, DisableContentSha256: true}
	if _, err := s.core.PutObject(ctx, s.cfg.Bucket, blobKey(d), bytes.NewReader(data), int64(len(data)), "", sum, opts); err != nil {
		return blob.Info{}, s.classify(err, "storing %s", d)
	}
	return blob.Info{Digest: d, Size: int64(len(data)), CreatedAt: time.Now().UTC()}, nil
}

// Delete implements blob.Store.
func (s *Store) Delete(ctx context.Context, d digest.Digest) error {
	if _, err := s.Stat(ctx, d); err != nil {
		return err
	}
	if err := s.core.RemoveObject(ctx, s.cfg.Bucket, blobKey(d), minio.RemoveObjectOptions{}); err != nil {
		return s.classify(err, "deleting %s", d)
	}
	return nil
}

// List implements blob.Store: S3 lists keys in byte order, which for
// blobs/sha256/<hex> is digest order.
func (s *Store) List(ctx context.Context, after digest.Digest, limit int) ([]blob.Info, error) {
	if after != "" {
		if err := blob.ValidateDigest(after); err != nil {
			return nil, err
		}
	}
	if limit <= 0 {
		return nil, nil
	}
	if err := s.ensure(ctx); err != nil {
		return nil, err
	}
	var out []blob.Info
	for _, alg := range blob.Algorithms {
		if after != "" && alg < after.Algorithm() {
			continue // every digest of alg sorts before after
		}
		prefix := "blobs/" + string(alg) + "/"
		startAfter := prefix
		if after != "" && alg == after.Algorithm() {
			startAfter = blobKey(after)
		}
		token := ""
		for len(out) < limit {
			res, err := s.core.ListObjectsV2(s.cfg.Bucket, prefix, startAfter, token, "", min(limit-len(out), 1000))
			if err != nil {
				return nil, s.classify(err, "listing blobs")
			}
			for _, o := range res.Contents {
				d := digest.NewDigestFromEncoded(alg, strings.TrimPrefix(o.Key, prefix))
				if d.Validate() != nil || len(out) == limit {
					continue
				}
				out = append(out, blob.Info{Digest: d, Size: o.Size, CreatedAt: o.LastModified})
			}
			if !res.IsTruncated || res.NextContinuationToken == "" {
				break
			}
			token = res.NextContinuationToken
		}
	}
	return out, nil
}
