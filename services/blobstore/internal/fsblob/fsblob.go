// Package fsblob is the blob.Store in a local directory, Strata's embedded
// default. Layout under the root:
//
//	blobs/sha256/<hex>      committed blobs, read-only (sha512 ones in
//	                        blobs/sha512/)
//	ingest/<ref>/data       the bytes of an unfinished upload
//	ingest/<ref>/meta.json  what its writer declared
//	ingest/put+<n>          the bytes of a Put, until they are linked
//
//	lock                    held (flock) by the process serving the root
//
// An upload is fsynced, checked, then hard-linked into blobs/ (link fails
// rather than replaces when the blob exists, so one copy is kept) and its
// ingest folder removed: a blob is visible whole or not at all.
//
// The backend is single-replica by design: upload locks live in the
// process, so one process serves a root at a time, and New fails when
// another holds the root's lock. Several replicas need the S3 backend.
//
// A full filesystem (ENOSPC, or a quota's EDQUOT) fails the upload with
// ErrResourceExhausted naming the store; the bytes written so far stay, so
// that the upload resumes once space is freed, and committed blobs are
// untouched.
package fsblob

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/blobstore/internal/blob"
)

// Store keeps blobs under a root directory.
type Store struct {
	root  string
	lock  *os.File // flocked while the store is open
	locks refLocks
}

var _ blob.Store = (*Store)(nil)

// New opens, creating when needed, the store under root, and takes its
// lock: when another process serves root, it fails saying so. Close lets go.
func New(root string) (*Store, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	for _, dir := range []string{filepath.Join(abs, "blobs", "sha256"), filepath.Join(abs, "blobs", "sha512"), filepath.Join(abs, "ingest")} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("creating the blob store in %s: %w", abs, err)
		}
	}
	path := filepath.Join(abs, "lock")
	lock, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening the blob store's lock: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("blob store %s is in use by another process (it holds the lock on %s): the fs backend serves one process at a time; run several replicas on the s3 backend", abs, path)
		}
		return nil, fmt.Errorf("locking the blob store %s: %w", abs, err)
	}
	return &Store{root: abs, lock: lock}, nil
}

// Close lets go of the store's lock, for another process to take it; the
// store must not be used after.
func (s *Store) Close() error { return s.lock.Close() }

// ioErr is the error for a failed write of the upload ref: a full
// filesystem is ErrResourceExhausted naming the store, and the upload is
// left for a resume.
func (s *Store) ioErr(ref string, err error) error {
	if full(err) {
		return errdefs.ResourceExhausted("blob store %s is full: upload %q keeps the bytes it has; resume it once space is freed (%v)", s.root, ref, err).
			WithReason("STORE_FULL").WithDetail("store", s.root).WithDetail("ref", ref)
	}
	return fmt.Errorf("upload %q: %w", ref, err)
}

// full reports whether err says the filesystem is full, or the quota.
func full(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

func (s *Store) blobPath(d digest.Digest) string {
	return filepath.Join(s.root, "blobs", string(d.Algorithm()), d.Encoded())
}

func (s *Store) ingestDir(ref string) string { return filepath.Join(s.root, "ingest", ref) }

// Stat implements blob.Store.
func (s *Store) Stat(_ context.Context, d digest.Digest) (blob.Info, error) {
	if err := blob.ValidateDigest(d); err != nil {
		return blob.Info{}, err
	}
	fi, err := os.Stat(s.blobPath(d))
	if err != nil {
		return blob.Info{}, s.blobErr(d, err)
	}
	return blob.Info{Digest: d, Size: fi.Size(), CreatedAt: fi.ModTime()}, nil
}

func (s *Store) blobErr(d digest.Digest, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return errdefs.NotFound("blob %s not found", d).WithReason("BLOB_NOT_FOUND").WithDetail("digest", string(d))
	}
	return fmt.Errorf("blob %s: %w", d, err)
}

// Open implements blob.Store. An open file keeps its bytes after a Delete, so
// a reader that started finishes.
func (s *Store) Open(_ context.Context, d digest.Digest, offset, length int64) (io.ReadCloser, blob.Info, error) {
	if err := blob.ValidateDigest(d); err != nil {
		return nil, blob.Info{}, err
	}
	f, err := os.Open(s.blobPath(d))
	if err != nil {
		return nil, blob.Info{}, s.blobErr(d, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, blob.Info{}, err
	}
	info := blob.Info{Digest: d, Size: fi.Size(), CreatedAt: fi.ModTime()}
	n, err := blob.ValidateRange(d, info.Size, offset, length)
	if err != nil {
		f.Close()
		return nil, blob.Info{}, err
	}
	var rc io.ReadCloser = struct {
		io.Reader
		io.Closer
	}{io.NewSectionReader(f, offset, n), f}
	if n == info.Size {
		rc = blob.Verified(rc, d, info.Size)
	}
	return rc, info, nil
}

// Delete implements blob.Store.
func (s *Store) Delete(_ context.Context, d digest.Digest) error {
	if err := blob.ValidateDigest(d); err != nil {
		return err
	}
	if err := os.Remove(s.blobPath(d)); err != nil {
		return s.blobErr(d, err)
	}
	return nil
}

// List implements blob.Store. File names are the hex digests, so the
// directory's sorted listing is digest order.
func (s *Store) List(_ context.Context, after digest.Digest, limit int) ([]blob.Info, error) {
	if after != "" {
		if err := blob.ValidateDigest(after); err != nil {
			return nil, err
		}
	}
	if limit <= 0 {
		return nil, nil
	}
	var out []blob.Info
	for _, alg := range blob.Algorithms {
		if after != "" && alg < after.Algorithm() {
			continue // every digest of alg sorts before after
		}
		afterHex := ""
		if after != "" && alg == after.Algorithm() {
			afterHex = after.Encoded()
		}
		entries, err := os.ReadDir(filepath.Join(s.root, "blobs", string(alg)))
		if err != nil {
			return nil, err
		}
		start, _ := slices.BinarySearchFunc(entries, afterHex, func(e os.DirEntry, name string) int {
			return strings.Compare(e.Name(), name)
		})
		for _, e := range entries[start:] {
			if len(out) == limit {
				return out, nil
			}
			d := digest.NewDigestFromEncoded(alg, e.Name())
			if e.Name() <= afterHex || d.Validate() != nil {
				continue
			}
			fi, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue // deleted since the directory was read
			}
			if err != nil {
				return nil, err
			}
			out = append(out, blob.Info{Digest: d, Size: fi.Size(), CreatedAt: fi.ModTime()})
		}
	}
	return out, nil
}

// meta is what an upload's writer declared, kept beside its bytes.
type meta struct {
	Expected  digest.Digest `json:"expected"`
	Size      int64         `json:"size"`
	MediaType string        `json:"mediaType,omitempty"`
	StartedAt time.Time     `json:"startedAt"`
}

func (s *Store) readMeta(ref string) (meta, error) {
	var m meta
	b, err := os.ReadFile(filepath.Join(s.ingestDir(ref), "meta.json"))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return m, errdefs.NotFound("upload %q not found", ref).WithReason("UPLOAD_NOT_FOUND").WithDetail("ref", ref)
		}
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("upload %q: reading meta.json: %w", ref, err)
	}
	return m, nil
}

// Upload implements blob.Store.
func (s *Store) Upload(_ context.Context, ref string) (blob.Upload, error) {
	if err := blob.ValidateRef(ref); err != nil {
		return blob.Upload{}, err
	}
	return s.upload(ref)
}

func (s *Store) upload(ref string) (blob.Upload, error) {
	m, err := s.readMeta(ref)
	if err != nil {
		return blob.Upload{}, err
	}
	fi, err := os.Stat(filepath.Join(s.ingestDir(ref), "data"))
	if err != nil {
		return blob.Upload{}, fmt.Errorf("upload %q: %w", ref, err)
	}
	// File times come from a coarser clock than time.Now.
	updated := fi.ModTime()
	if updated.Before(m.StartedAt) {
		updated = m.StartedAt
	}
	return blob.Upload{Ref: ref, Expected: m.Expected, Size: m.Size, Offset: fi.Size(), StartedAt: m.StartedAt, UpdatedAt: updated}, nil
}

// Abort implements blob.Store.
func (s *Store) Abort(_ context.Context, ref string) error {
	if err := blob.ValidateRef(ref); err != nil {
		return err
	}
	if err := s.locks.Lock(ref); err != nil {
		return err
	}
	defer s.locks.Unlock(ref)
	if _, err := s.readMeta(ref); err != nil {
		return err
	}
	return os.RemoveAll(s.ingestDir(ref))
}

// Uploads implements blob.Store.
func (s *Store) Uploads(_ context.Context) ([]blob.Upload, error) {
	entries, err := os.ReadDir(filepath.Join(s.root, "ingest"))
	if err != nil {
		return nil, err
	}
	var out []blob.Upload
	for _, e := range entries {
		u, err := s.upload(e.Name())
		if err != nil {
			continue // half-created or just removed; CleanUploads takes it
		}
		out = append(out, u)
	}
	return out, nil
}

// CleanUploads implements blob.Store. It also removes ingest folders left
// half-created by a crash.
func (s *Store) CleanUploads(_ context.Context, before time.Time) (int, error) {
	entries, err := os.ReadDir(filepath.Join(s.root, "ingest"))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		ref := e.Name()
		if s.locks.Lock(ref) != nil {
			continue
		}
		updated := time.Time{}
		if u, err := s.upload(ref); err == nil {
			updated = u.UpdatedAt
		} else if fi, err := e.Info(); err == nil {
			updated = fi.ModTime()
		}
		if updated.Before(before) {
			if err := os.RemoveAll(s.ingestDir(ref)); err == nil {
				n++
			}
		}
		s.locks.Unlock(ref)
	}
	return n, nil
}

// NewWriter implements blob.Store. A resumed upload's bytes are hashed again
// from disk: local reads are cheap, and nothing else must be trusted.
func (s *Store) NewWriter(_ context.Context, opts blob.WriterOptions) (blob.Writer, error) {
	if err := blob.ValidateWriterOptions(opts); err != nil {
		return nil, err
	}
	if err := s.locks.Lock(opts.Ref); err != nil {
		return nil, err
	}
	w, err := s.openWriter(opts)
	if err != nil {
		s.locks.Unlock(opts.Ref)
		return nil, err
	}
	return w, nil
}

func (s *Store) openWriter(opts blob.WriterOptions) (*writer, error) {
	dir := s.ingestDir(opts.Ref)
	m, err := s.readMeta(opts.Ref)
	switch {
	case errdefs.IsNotFound(err) && opts.ResumeOnly:
		return nil, err
	case errdefs.IsNotFound(err):
		m = meta{Expected: opts.Expected, Size: opts.Size, MediaType: opts.MediaType, StartedAt: time.Now().UTC()}
		if err := os.RemoveAll(dir); err != nil {
			return nil, err
		}
		if err := os.Mkdir(dir, 0o755); err != nil {
			return nil, s.ioErr(opts.Ref, err)
		}
		b, _ := json.Marshal(m)
		if err := writeFileSync(filepath.Join(dir, "meta.json"), b); err != nil {
			return nil, s.ioErr(opts.Ref, err)
		}
	case err != nil:
		return nil, err
	case m.Expected != opts.Expected || m.Size != opts.Size:
		return nil, errdefs.FailedPrecondition("upload %q is of %s (size %d), not %s (size %d): abort it or use another ref",
			opts.Ref, m.Expected, m.Size, opts.Expected, opts.Size).WithReason("UPLOAD_MISMATCH").WithDetail("ref", opts.Ref)
	}
	f, err := os.OpenFile(filepath.Join(dir, "data"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, s.ioErr(opts.Ref, err)
	}
	h := blob.HashOf(m.Expected).Hash()
	n, err := io.Copy(h, f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("upload %q: hashing the bytes received so far: %w", opts.Ref, err)
	}
	return &writer{s: s, opts: opts, f: f, fw: newFileWriter(f, n), h: h, offset: n}, nil
}

func writeFileSync(path string, b []byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	return syncFile(f, b)
}

// syncFile writes b to f, syncs and closes it.
func syncFile(f *os.File, b []byte) error {
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

type writer struct {
	s      *Store
	opts   blob.WriterOptions
	f      *os.File
	fw     *fileWriter // over f
	h      hash.Hash
	offset int64
	done   bool // committed or discarded
	closed bool
}

func (w *writer) Offset() int64 { return w.offset }

func (w *writer) Write(p []byte) (int, error) {
	if w.done || w.closed {
		return 0, errdefs.FailedPrecondition("upload %q is finished", w.opts.Ref)
	}
	if w.opts.Size >= 0 && w.offset+int64(len(p)) > w.opts.Size {
		w.discard()
		return 0, blob.TooLong(w.opts.Ref, w.opts.Size, w.offset+int64(len(p)))
	}
	n, err := w.fw.Write(p)
	w.h.Write(p[:n])
	w.offset += int64(n)
	if err != nil {
		return n, w.s.ioErr(w.opts.Ref, err)
	}
	return n, nil
}

// discard removes the upload: its bytes are known to be wrong.
func (w *writer) discard() {
	w.done = true
	w.fw.Close()
	w.f.Close()
	_ = os.RemoveAll(w.s.ingestDir(w.opts.Ref))
}

func (w *writer) Commit(_ context.Context, expected digest.Digest) (blob.Info, error) {
	if w.done || w.closed {
		return blob.Info{}, errdefs.FailedPrecondition("upload %q is finished", w.opts.Ref)
	}
	expected, err := blob.CommitDigest(w.opts.Expected, expected)
	if err != nil {
		return blob.Info{}, err
	}
	actual := digest.NewDigest(blob.HashOf(w.opts.Expected), w.h)
	if alg := expected.Algorithm(); alg != actual.Algorithm() {
		// The digest came at commit with another algorithm: hash the
		// bytes again with it.
		if err := w.fw.Close(); err != nil {
			return blob.Info{}, fmt.Errorf("upload %q: %w", w.opts.Ref, err)
		}
		h := alg.Hash()
		if _, err := io.Copy(h, io.NewSectionReader(w.f, 0, w.offset)); err != nil {
			return blob.Info{}, fmt.Errorf("upload %q: hashing its bytes with %s: %w", w.opts.Ref, alg, err)
		}
		actual = digest.NewDigest(alg, h)
	}
	if err := blob.Verify(expected, w.opts.Size, actual, w.offset); err != nil {
		w.discard()
		return blob.Info{}, err
	}
	if err := errors.Join(w.fw.Close(), w.f.Sync()); err != nil {
		return blob.Info{}, w.s.ioErr(w.opts.Ref, err)
	}
	now, err := w.s.link(w.f.Name(), expected)
	if err != nil && !errors.Is(err, fs.ErrExist) {
		// The bytes are checked and kept: a commit once the cause is
		// gone (a directory entry on a full disk) needs no resend.
		return blob.Info{}, fmt.Errorf("committing %s: %w", expected, w.s.ioErr(w.opts.Ref, err))
	}
	w.discard()
	if err != nil {
		return blob.Info{}, errdefs.AlreadyExists("blob %s already exists", expected).WithReason("BLOB_EXISTS")
	}
	if err := syncDir(filepath.Dir(w.s.blobPath(expected))); err != nil {
		return blob.Info{}, fmt.Errorf("committing %s: %w", expected, err)
	}
	return blob.Info{Digest: expected, Size: w.offset, CreatedAt: now}, nil
}

// link makes the synced file at path the blob d, stamped with the time it
// returns, the blob's CreatedAt: a hard link fails (fs.ErrExist) rather
// than replaces when the blob is stored, so one copy is kept.
func (s *Store) link(path string, d digest.Digest) (time.Time, error) {
	now := time.Now()
	_ = os.Chtimes(path, now, now)
	return now, os.Link(path, s.blobPath(d))
}

// putPrefix starts the names of Put's files under ingest/: '+' is in no
// ref, so none is taken for an upload's folder (Uploads passes over them),
// and CleanUploads removes one that a crash left.
const putPrefix = "put+"

// Put implements blob.Store: the bytes are written to a file of their own
// under ingest/ and synced, then linked into blobs/ as a commit links an
// upload's. An upload held under any ref (an older, interrupted one) is
// left alone, for its writer to resume or the janitor to discard.
func (s *Store) Put(ctx context.Context, d digest.Digest, _ string, data []byte) (blob.Info, error) {
	if err := blob.ValidateDigest(d); err != nil {
		return blob.Info{}, err
	}
	if actual := d.Algorithm().FromBytes(data); actual != d {
		return blob.Info{}, blob.DigestMismatch(d, actual)
	}
	f, err := os.CreateTemp(filepath.Join(s.root, "ingest"), putPrefix+"*")
	if err != nil {
		return blob.Info{}, s.putErr(d, err)
	}
	defer os.Remove(f.Name())
	if err := syncFile(f, data); err != nil {
		return blob.Info{}, s.putErr(d, err)
	}
	now, err := s.link(f.Name(), d)
	if errors.Is(err, fs.ErrExist) {
		// Stored already: a success, with the stored blob's description.
		return s.Stat(ctx, d)
	}
	if err != nil {
		return blob.Info{}, s.putErr(d, err)
	}
	if err := syncDir(filepath.Dir(s.blobPath(d))); err != nil {
		return blob.Info{}, s.putErr(d, err)
	}
	return blob.Info{Digest: d, Size: int64(len(data)), CreatedAt: now}, nil
}

// putErr is the error for a failed Put of d: a full filesystem is
// ErrResourceExhausted naming the store, as for an upload.
func (s *Store) putErr(d digest.Digest, err error) error {
	if full(err) {
		return errdefs.ResourceExhausted("blob store %s is full: blob %s was not stored (%v)", s.root, d, err).
			WithReason("STORE_FULL").WithDetail("store", s.root).WithDetail("digest", string(d))
	}
	return fmt.Errorf("storing %s: %w", d, err)
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	return nil
}

// Close keeps an uncommitted upload for a later writer, with its bytes
// synced so that the offset it reports survives a crash.
func (w *writer) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	defer w.s.locks.Unlock(w.opts.Ref)
	if w.done {
		return nil
	}
	err := errors.Join(w.fw.Close(), w.f.Sync())
	if err != nil {
		err = w.s.ioErr(w.opts.Ref, err)
	}
	return errors.Join(err, w.f.Close())
}
