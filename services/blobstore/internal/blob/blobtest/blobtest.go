// Package blobtest is the conformance suite every blob.Store passes: the fs
// and S3 backends, and the gRPC client over a real listener. A behaviour is
// written once here and proven on each.
package blobtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/blobstore/internal/blob"
)

const mib = 1 << 20

// TestStore runs the suite. newStore returns an empty store for one subtest
// and arranges its cleanup with t.Cleanup.
func TestStore(t *testing.T, newStore func(t *testing.T) blob.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s blob.Store)
	}{
		{"RoundTrip", testRoundTrip},
		{"WrongDigest", testWrongDigest},
		{"WrongSize", testWrongSize},
		{"DigestAtCommit", testDigestAtCommit},
		{"MalformedDigests", testMalformedDigests},
		{"MalformedRefs", testMalformedRefs},
		{"Resume", testResume},
		{"ResumeWithOtherDigest", testResumeWithOtherDigest},
		{"Abort", testAbort},
		{"RefHeldByOneWriter", testRefHeldByOneWriter},
		{"ConcurrentSameDigest", testConcurrentSameDigest},
		{"ExistingDigest", testExistingDigest},
		{"Ranges", testRanges},
		{"Delete", testDelete},
		{"ListPagedWhileAdding", testListPagedWhileAdding},
		{"DeleteWhileReading", testDeleteWhileReading},
		{"Uploads", testUploads},
		{"SHA512", testSHA512},
		{"ResumeExactly", testResumeExactly},
		{"ResumeOnly", testResumeOnly},
		{"Put", testPut},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, newStore(t)) })
	}
}

// Content returns n incompressible bytes determined by seed.
func Content(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), byte(seed >> 24)})
	_, _ = r.Read(b)
	return b
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

var refSeq struct {
	sync.Mutex
	n int
}

func newRef(t *testing.T) string {
	refSeq.Lock()
	defer refSeq.Unlock()
	refSeq.n++
	return fmt.Sprintf("test-%d-%d", time.Now().UnixNano(), refSeq.n)
}

// writeChunks writes b in chunks of chunk bytes.
func writeChunks(w io.Writer, b []byte, chunk int) error {
	for len(b) > 0 {
		n := min(chunk, len(b))
		if _, err := w.Write(b[:n]); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// put uploads b under a new ref and commits it.
func put(t *testing.T, s blob.Store, b []byte, size int64) blob.Info {
	t.Helper()
	return putDigestAt(t, s, b, size, false)
}

// putDigestAt uploads b, declaring its digest at the start or, when late,
// at commit.
func putDigestAt(t *testing.T, s blob.Store, b []byte, size int64, late bool) blob.Info {
	t.Helper()
	ctx := ctxFor(t)
	d := digest.FromBytes(b)
	opts := blob.WriterOptions{Ref: newRef(t), Expected: d, Size: size}
	atCommit := digest.Digest("")
	if late {
		opts.Expected, atCommit = "", d
	}
	w, err := s.NewWriter(ctx, opts)
	if err != nil {
		t.Fatalf("NewWriter(%s, size %d) = %v", d, size, err)
	}
	defer w.Close()
	if off := w.Offset(); off != 0 {
		t.Fatalf("new writer Offset() = %d, want 0", off)
	}
	if err := writeChunks(w, b, 256<<10); err != nil {
		t.Fatalf("writing %s: %v", d, err)
	}
	info, err := w.Commit(ctx, atCommit)
	if err != nil {
		t.Fatalf("Commit(%s) = %v", d, err)
	}
	if info.Digest != d || info.Size != int64(len(b)) {
		t.Fatalf("Commit(%s) = %+v, want digest %s size %d", d, info, d, len(b))
	}
	return info
}

func readAll(t *testing.T, s blob.Store, d digest.Digest, offset, length int64) ([]byte, blob.Info, error) {
	t.Helper()
	rc, info, err := s.Open(ctxFor(t), d, offset, length)
	if err != nil {
		return nil, info, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	return b, info, err
}

func wantKind(t *testing.T, what string, err, kind error) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Errorf("%s = %v, want an error matching %v", what, err, kind)
	}
}

func wantAbsent(t *testing.T, s blob.Store, d digest.Digest) {
	t.Helper()
	ctx := ctxFor(t)
	if info, err := s.Stat(ctx, d); !errdefs.IsNotFound(err) {
		t.Errorf("Stat(%s) = %+v, %v; want not found", d, info, err)
	}
	if _, _, err := s.Open(ctx, d, 0, 0); !errdefs.IsNotFound(err) {
		t.Errorf("Open(%s) = %v; want not found", d, err)
	}
	list, err := s.List(ctx, "", 10000)
	if err != nil {
		t.Fatalf("List = %v", err)
	}
	for _, i := range list {
		if i.Digest == d {
			t.Errorf("List contains %s, want it absent", d)
		}
	}
}

func wantNoUpload(t *testing.T, s blob.Store, ref string) {
	t.Helper()
	if u, err := s.Upload(ctxFor(t), ref); !errdefs.IsNotFound(err) {
		t.Errorf("Upload(%q) = %+v, %v; want not found", ref, u, err)
	}
}

func testRoundTrip(t *testing.T, s blob.Store) {
	for i, tc := range []struct {
		size  int
		known bool // the size is declared
		late  bool // the digest is declared at commit
	}{
		{0, true, false}, {0, false, true}, {1, true, false}, {1, false, false},
		{5*mib - 1, true, false}, {5 * mib, true, true}, {5*mib + 1, true, false}, {5*mib + 1, false, false},
		{12 * mib, true, false},
		{64 * mib, false, true},
	} {
		t.Run(fmt.Sprintf("%d-size=%v-latedigest=%v", tc.size, tc.known, tc.late), func(t *testing.T) {
			b := Content(uint64(100+i), tc.size)
			size := int64(-1)
			if tc.known {
				size = int64(tc.size)
			}
			before := time.Now().Add(-time.Minute)
			info := putDigestAt(t, s, b, size, tc.late)
			st, err := s.Stat(ctxFor(t), info.Digest)
			if err != nil {
				t.Fatalf("Stat(%s) = %v", info.Digest, err)
			}
			if st.Digest != info.Digest || st.Size != int64(tc.size) || st.CreatedAt.Before(before) {
				t.Errorf("Stat(%s) = %+v, want size %d created after %v", info.Digest, st, tc.size, before)
			}
			got, rinfo, err := readAll(t, s, info.Digest, 0, 0)
			if err != nil {
				t.Fatalf("reading %s: %v", info.Digest, err)
			}
			if rinfo.Size != int64(tc.size) {
				t.Errorf("Open(%s) info size = %d, want %d", info.Digest, rinfo.Size, tc.size)
			}
			if !bytes.Equal(got, b) {
				t.Errorf("read %d bytes of %s (digest %s), want the %d written", len(got), info.Digest, digest.FromBytes(got), len(b))
			}
			if err := s.Delete(ctxFor(t), info.Digest); err != nil {
				t.Errorf("Delete(%s) = %v", info.Digest, err)
			}
		})
	}
}

func testWrongDigest(t *testing.T, s blob.Store) {
	for _, n := range []int{1024, 12 * mib} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			ctx := ctxFor(t)
			b := Content(7, n)
			actual := digest.FromBytes(b)
			expected := digest.FromBytes(Content(8, n))
			ref := newRef(t)
			w, err := s.NewWriter(ctx, blob.WriterOptions{Ref: ref, Expected: expected, Size: int64(n)})
			if err != nil {
				t.Fatalf("NewWriter = %v", err)
			}
			defer w.Close()
			if err := writeChunks(w, b, mib); err != nil {
				t.Fatalf("Write = %v", err)
			}
			_, err = w.Commit(ctx, "")
			wantKind(t, "Commit with the wrong digest", err, errdefs.ErrInvalidArgument)
			if err != nil && (!strings.Contains(err.Error(), string(expected)) || !strings.Contains(err.Error(), string(actual))) {
				t.Errorf("Commit error %q does not name both %s and %s", err, expected, actual)
			}
			w.Close()
			wantAbsent(t, s, expected)
			wantAbsent(t, s, actual)
			wantNoUpload(t, s, ref)
		})
	}
}

func testDigestAtCommit(t *testing.T, s blob.Store) {
	b := Content(60, 6*mib+3)
	actual := digest.FromBytes(b)
	other := digest.FromBytes(Content(61, 10))
	for _, tc := range []struct {
		name               string
		declared, atCommit digest.Digest
	}{
		{"wrong", "", other},
		{"none", "", ""},
		{"disagreeing", actual, other},
		{"malformed", "", "sha256:../../x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxFor(t)
			ref := newRef(t)
			w, err := s.NewWriter(ctx, blob.WriterOptions{Ref: ref, Expected: tc.declared, Size: -1})
			if err != nil {
				t.Fatalf("NewWriter = %v", err)
			}
			defer w.Close()
			if err := writeChunks(w, b, mib); err != nil {
				t.Fatalf("Write = %v", err)
			}
			_, err = w.Commit(ctx, tc.atCommit)
			wantKind(t, fmt.Sprintf("Commit(%q) of an upload declared as %q", tc.atCommit, tc.declared), err, errdefs.ErrInvalidArgument)
			if tc.atCommit == other && err != nil && !strings.Contains(err.Error(), string(other)) {
				t.Errorf("Commit error %q does not name %s", err, other)
			}
			w.Close()
			wantAbsent(t, s, actual)
			wantAbsent(t, s, other)
			if tc.name == "wrong" {
				wantNoUpload(t, s, ref)
			} else {
				_ = s.Abort(ctx, ref)
			}
		})
	}
}

func testWrongSize(t *testing.T, s blob.Store) {
	for _, tc := range []struct {
		name     string
		n        int
		declared int64
	}{
		{"short", 3000, 3001},
		{"long", 3000, 2999},
		{"short-multipart", 11 * mib, 11*mib + 1},
		{"long-multipart", 11 * mib, 11*mib - 1},
		{"empty-declared", 10, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxFor(t)
			b := Content(9, tc.n)
			d := digest.FromBytes(b)
			ref := newRef(t)
			w, err := s.NewWriter(ctx, blob.WriterOptions{Ref: ref, Expected: d, Size: tc.declared})
			if err != nil {
				t.Fatalf("NewWriter = %v", err)
			}
			defer w.Close()
			err = writeChunks(w, b, mib)
			if err == nil {
				_, err = w.Commit(ctx, "")
			}
			wantKind(t, fmt.Sprintf("writing %d bytes declared as %d", tc.n, tc.declared), err, errdefs.ErrInvalidArgument)
			if err != nil && !strings.Contains(err.Error(), fmt.Sprint(tc.declared)) {
				t.Errorf("error %q does not name the declared size %d", err, tc.declared)
			}
			w.Close()
			wantAbsent(t, s, d)
			wantNoUpload(t, s, ref)
		})
	}
}

// MalformedDigests are refused by every method before any storage is touched.
var MalformedDigests = []string{
	"",
	"sha256:../../x",
	"sha256:../../../etc/passwd",
	"sha256:" + strings.Repeat("A", 64),
	"sha256:" + strings.Repeat("a", 63),
	"sha256:" + strings.Repeat("a", 65),
	"md5:" + strings.Repeat("a", 32),
	"sha512:" + strings.Repeat("a", 127),
	strings.Repeat("a", 64),
	"sha256:" + strings.Repeat("a", 62) + "/x",
}

func testMalformedDigests(t *testing.T, s blob.Store) {
	ctx := ctxFor(t)
	for _, bad := range MalformedDigests {
		d := digest.Digest(bad)
		_, err := s.Stat(ctx, d)
		wantKind(t, fmt.Sprintf("Stat(%q)", bad), err, errdefs.ErrInvalidArgument)
		_, _, err = s.Open(ctx, d, 0, 0)
		wantKind(t, fmt.Sprintf("Open(%q)", bad), err, errdefs.ErrInvalidArgument)
		err = s.Delete(ctx, d)
		wantKind(t, fmt.Sprintf("Delete(%q)", bad), err, errdefs.ErrInvalidArgument)
		if bad == "" {
			continue // NewWriter and List take "" as "none"
		}
		w, err := s.NewWriter(ctx, blob.WriterOptions{Ref: newRef(t), Expected: d, Size: -1})
		if err == nil {
			w.Close()
		}
		wantKind(t, fmt.Sprintf("NewWriter(%q)", bad), err, errdefs.ErrInvalidArgument)
		_, err = s.List(ctx, d, 10)
		wantKind(t, fmt.Sprintf("List(after %q)", bad), err, errdefs.ErrInvalidArgument)
	}
}

func testMalformedRefs(t *testing.T, s blob.Store) {
	ctx := ctxFor(t)
	d := digest.FromBytes([]byte("x"))
	for _, ref := range []string{"", ".", "..", "../x", "a/b", "a b", strings.Repeat("r", 129), "ref\x00"} {
		w, err := s.NewWriter(ctx, blob.WriterOptions{Ref: ref, Expected: d, Size: 1})
		if err == nil {
			w.Close()
		}
		wantKind(t, fmt.Sprintf("NewWriter(ref %q)", ref), err, errdefs.ErrInvalidArgument)
		_, err = s.Upload(ctx, ref)
		wantKind(t, fmt.Sprintf("Upload(%q)", ref), err, errdefs.ErrInvalidArgument)
		err = s.Abort(ctx, ref)
		wantKind(t, fmt.Sprintf("Abort(%q)", ref), err, errdefs.ErrInvalidArgument)
	}
}

func testResume(t *testing.T, s blob.Store) {
	for i, known := range []bool{true, false} {
		t.Run(fmt.Sprintf("known=%v", known), func(t *testing.T) {
			ctx := ctxFor(t)
			b := Content(uint64(50+i), 13*mib+123)
			d := digest.FromBytes(b)
			size := int64(-1)
			if known {
				size = int64(len(b))
			}
			ref := newRef(t)
			opts := blob.WriterOptions{Ref: ref, Expected: d, Size: size}
			w, err := s.NewWriter(ctx, opts)
			if err != nil {
				t.Fatalf("NewWriter = %v", err)
			}
			written := 11*mib + 7
			if err := writeChunks(w, b[:written], mib); err != nil {
				t.Fatalf("Write = %v", err)
			}
			// The stream breaks: the writer goes away without committing.
			if err := w.Close(); err != nil {
				t.Fatalf("Close = %v", err)
			}
			wantAbsent(t, s, d)
			u, err := s.Upload(ctx, ref)
			if err != nil {
				t.Fatalf("Upload(%q) = %v", ref, err)
			}
			if u.Ref != ref || u.Expected != d || u.Size != size || u.Offset < 0 || u.Offset > int64(written) {
				t.Errorf("Upload(%q) = %+v, want expected %s, size %d, offset in [0, %d]", ref, u, d, size, written)
			}
			w, err = s.NewWriter(ctx, opts)
			if err != nil {
				t.Fatalf("resuming NewWriter = %v", err)
			}
			defer w.Close()
			if w.Offset() != u.Offset {
				t.Errorf("resumed writer Offset() = %d, want the upload's %d", w.Offset(), u.Offset)
			}
			if err := writeChunks(w, b[w.Offset():], mib); err != nil {
				t.Fatalf("Write after resume = %v", err)
			}
			info, err := w.Commit(ctx, "")
			if err != nil {
				t.Fatalf("Commit after resume = %v", err)
			}
			if info.Digest != d || info.Size != int64(len(b)) {
				t.Errorf("Commit = %+v, want %s, %d bytes", info, d, len(b))
			}
			got, _, err := readAll(t, s, d, 0, 0)
			if err != nil || !bytes.Equal(got, b) {
				t.Errorf("reading the resumed blob: %d bytes, %v; want the %d written", len(got), err, len(b))
			}
			wantNoUpload(t, s, ref)
		})
	}
}

func testResumeWithOtherDigest(t *testing.T, s blob.Store) {
	ctx := ctxFor(t)
	ref := newRef(t)
	b := Content(12, 1000)
	w, err := s.NewWriter(ctx, blob.WriterOptions{Ref: ref, Expected: digest.FromBytes(b), Size: 1000})
	if err != nil {
		t.Fatalf("NewWriter = %v", err)
	}
	if _, err := w.Write(b[:10]); err != nil {
		t.Fatalf("Write = %v", err)
	}
	w.Close()
	other := digest.FromBytes(Content(13, 1000))
	w, err = s.NewWriter(ctx, blob.WriterOptions{Ref: ref, Expected: other, Size: 1000})
	if err == nil {
		w.Close()
	}
	wantKind(t, "NewWriter(same ref, other digest)", err, errdefs.ErrFailedPrecondition)
	w, err = s.NewWriter(ctx, blob.WriterOptions{Ref: ref, Expected: digest.FromBytes(b), Size: 999})
	if err == nil {
		w.Close()
	}
	wantKind(t, "NewWriter(same ref, other size)", err, errdefs.ErrFailedPrecondition)
	if err := s.Abort(ctx, ref); err != nil {
		t.Errorf("Abort(%q) = %v", ref, err)
	}
}

func testAbort(t *testing.T, s blob.Store) {
	ctx := ctxFor(t)
	b := Content(14, 6*mib+5)
	d := digest.FromBytes(b)
	ref := newRef(t)
	opts := blob.WriterOptions{Ref: ref, Expected: d, Size: int64(len(b))}
	w, err := s.NewWriter(ctx, opts)
	if err != nil {
		t.Fatalf("NewWriter = %v", err)
	}
	if err := writeChunks(w, b[:6*mib], mib); err != nil {
		t.Fatalf("Write = %v", err)
	}
	w.Close()
	if err := s.Abort(ctx, ref); err != nil {
		t.Fatalf("Abort(%q) = %v", ref, err)
	}
	wantNoUpload(t, s, ref)
	wantKind(t, "Abort of an aborted upload", s.Abort(ctx, ref), errdefs.ErrNotFound)
	wantAbsent(t, s, d)
	w, err = s.NewWriter(ctx, opts)
	if err != nil {
		t.Fatalf("NewWriter after Abort = %v", err)
	}
	defer w.Close()
	if w.Offset() != 0 {
		t.Errorf("NewWriter after Abort: Offset() = %d, want 0", w.Offset())
	}
	if err := writeChunks(w, b, mib); err != nil {
		t.Fatalf("Write = %v", err)
	}
	if _, err := w.Commit(ctx, ""); err != nil {
		t.Fatalf("Commit after Abort and restart = %v", err)
	}
}

func testRefHeldByOneWriter(t *testing.T, s blob.Store) {
	ctx := ctxFor(t)
	ref := newRef(t)
	b := Content(15, 100)
	opts := blob.WriterOptions{Ref: ref, Expected: digest.FromBytes(b), Size: 100}
	w, err := s.NewWriter(ctx, opts)
	if err != nil {
		t.Fatalf("NewWriter = %v", err)
	}
	w2, err := s.NewWriter(ctx, opts)
	if err == nil {
		w2.Close()
	}
	wantKind(t, "a second NewWriter of a held ref", err, errdefs.ErrUnavailable)
	if _, err := w.Write(b); err != nil {
		t.Fatalf("Write = %v", err)
	}
	if _, err := w.Commit(ctx, ""); err != nil {
		t.Fatalf("Commit = %v", err)
	}
	w.Close()
}

func testConcurrentSameDigest(t *testing.T, s blob.Store) {
	ctx := ctxFor(t)
	b := Content(16, 6*mib+1)
	d := digest.FromBytes(b)
	const writers = 4
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			w, err := s.NewWriter(ctx, blob.WriterOptions{Ref: newRef(t), Expected: d, Size: int64(len(b))})
			if err != nil {
				errs[i] = err
				return
			}
			defer w.Close()
			if err := writeChunks(w, b, 512<<10); err != nil {
				errs[i] = err
				return
			}
			_, errs[i] = w.Commit(ctx, "")
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil && !errdefs.IsAlreadyExists(err) {
			t.Errorf("writer %d: %v, want success or already exists", i, err)
		}
	}
	list, err := s.List(ctx, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Digest != d || list[0].Size != int64(len(b)) {
		t.Errorf("List after concurrent uploads = %+v, want one blob %s", list, d)
	}
	got, _, err := readAll(t, s, d, 0, 0)
	if err != nil || !bytes.Equal(got, b) {
		t.Errorf("reading %s: %d bytes, %v", d, len(got), err)
	}
	if ups, err := s.Uploads(ctx); err != nil || len(ups) != 0 {
		t.Errorf("Uploads after concurrent commits = %+v, %v; want none", ups, err)
	}
}

// testExistingDigest: writing a stored digest again ends well and never
// changes the stored bytes. A store reports ErrAlreadyExists; through the
// gRPC API the upload succeeds, since the client skips sending what is
// stored, so wrong bytes for a stored digest may go unread there.
func testExistingDigest(t *testing.T, s blob.Store) {
	ctx := ctxFor(t)
	b := Content(17, 2000)
	info := put(t, s, b, int64(len(b)))

	for _, tc := range []struct {
		name    string
		content []byte
		ok      func(error) bool
	}{
		{"same bytes", b, func(err error) bool { return err == nil || errdefs.IsAlreadyExists(err) }},
		{"wrong bytes", Content(18, 2000), func(err error) bool { return err == nil || errdefs.IsInvalidArgument(err) }},
	} {
		w, err := s.NewWriter(ctx, blob.WriterOptions{Ref: newRef(t), Expected: info.Digest, Size: info.Size})
		if err != nil {
			t.Fatalf("NewWriter of a stored digest = %v", err)
		}
		if _, err := w.Write(tc.content); err != nil {
			t.Fatalf("Write = %v", err)
		}
		got, err := w.Commit(ctx, "")
		if !tc.ok(err) {
			t.Errorf("Commit of a stored digest with %s = %v", tc.name, err)
		}
		if err == nil && (got.Digest != info.Digest || got.Size != info.Size) {
			t.Errorf("Commit of a stored digest with %s = %+v, want %+v", tc.name, got, info)
		}
		w.Close()
		stored, _, err := readAll(t, s, info.Digest, 0, 0)
		if err != nil || !bytes.Equal(stored, b) {
			t.Errorf("after writing %s again: %d bytes, %v; want the stored blob unchanged", tc.name, len(stored), err)
		}
	}
	list, err := s.List(ctx, "", 10)
	if err != nil || len(list) != 1 {
		t.Errorf("List = %+v, %v; want the one blob", list, err)
	}
}

func testRanges(t *testing.T, s blob.Store) {
	b := Content(19, 3*mib+5)
	info := put(t, s, b, int64(len(b)))
	size := int64(len(b))
	for _, tc := range []struct {
		offset, length int64
		want           []byte
	}{
		{0, 0, b},
		{0, 1, b[:1]},
		{1, 1, b[1:2]},
		{size - 1, 0, b[size-1:]},
		{size - 1, 1, b[size-1:]},
		{size - 1, 10, b[size-1:]},
		{size, 0, nil},
		{size, 5, nil},
		{mib - 1, 2, b[mib-1 : mib+1]},
		{5, 2 * mib, b[5 : 5+2*mib]},
		{0, size + 100, b},
	} {
		got, rinfo, err := readAll(t, s, info.Digest, tc.offset, tc.length)
		if err != nil {
			t.Errorf("Open(offset %d, length %d) = %v", tc.offset, tc.length, err)
			continue
		}
		if rinfo.Size != size {
			t.Errorf("Open(offset %d, length %d) info size = %d, want %d", tc.offset, tc.length, rinfo.Size, size)
		}
		if !bytes.Equal(got, tc.want) {
			t.Errorf("Open(offset %d, length %d) read %d bytes, want %d (contents differ: %v)",
				tc.offset, tc.length, len(got), len(tc.want), len(got) == len(tc.want))
		}
	}
	for _, tc := range []struct{ offset, length int64 }{{size + 1, 0}, {-1, 0}, {0, -1}} {
		_, _, err := readAll(t, s, info.Digest, tc.offset, tc.length)
		wantKind(t, fmt.Sprintf("Open(offset %d, length %d)", tc.offset, tc.length), err, errdefs.ErrInvalidArgument)
	}
	_, _, err := readAll(t, s, digest.FromBytes([]byte("never stored")), 0, 0)
	wantKind(t, "Open of an unknown digest", err, errdefs.ErrNotFound)
}

func testDelete(t *testing.T, s blob.Store) {
	ctx := ctxFor(t)
	b := Content(20, 4096)
	keep := put(t, s, Content(21, 10), 10)
	info := put(t, s, b, -1)
	if err := s.Delete(ctx, info.Digest); err != nil {
		t.Fatalf("Delete(%s) = %v", info.Digest, err)
	}
	wantAbsent(t, s, info.Digest)
	wantKind(t, "Delete of a deleted blob", s.Delete(ctx, info.Digest), errdefs.ErrNotFound)
	if _, err := s.Stat(ctx, keep.Digest); err != nil {
		t.Errorf("Stat(%s) of the blob not deleted = %v", keep.Digest, err)
	}
	put(t, s, b, int64(len(b)))
	got, _, err := readAll(t, s, info.Digest, 0, 0)
	if err != nil || !bytes.Equal(got, b) {
		t.Errorf("reading %s stored again: %d bytes, %v", info.Digest, len(got), err)
	}
}

func testListPagedWhileAdding(t *testing.T, s blob.Store) {
	ctx := ctxFor(t)
	initial := map[digest.Digest]bool{}
	for i := range 10 {
		initial[put(t, s, Content(uint64(200+i), 100+i), -1).Digest] = true
	}
	if list, err := s.List(ctx, "", 0); err != nil || len(list) != 0 {
		t.Errorf("List(limit 0) = %d blobs, %v; want none", len(list), err)
	}
	var seen []digest.Digest
	after := digest.Digest("")
	for page := 0; ; page++ {
		list, err := s.List(ctx, after, 3)
		if err != nil {
			t.Fatalf("List(after %q, 3) = %v", after, err)
		}
		if len(list) > 3 {
			t.Fatalf("List(after %q, 3) returned %d blobs", after, len(list))
		}
		if len(list) == 0 {
			break
		}
		for _, i := range list {
			if i.Size < 0 || i.CreatedAt.IsZero() {
				t.Errorf("List entry %+v lacks size or creation time", i)
			}
			seen = append(seen, i.Digest)
		}
		after = list[len(list)-1].Digest
		// Another client adds blobs between pages.
		put(t, s, Content(uint64(300+page), 50+page), -1)
		if page > 50 {
			t.Fatal("List does not end")
		}
	}
	if !slices.IsSorted(seen) || len(slices.Compact(slices.Clone(seen))) != len(seen) {
		t.Errorf("paged List returned %v, want strictly increasing digests", seen)
	}
	for d := range initial {
		if !slices.Contains(seen, d) {
			t.Errorf("paged List missed %s, stored before listing began", d)
		}
	}
}

func testDeleteWhileReading(t *testing.T, s blob.Store) {
	ctx := ctxFor(t)
	b := Content(22, 8*mib)
	info := put(t, s, b, int64(len(b)))
	rc, _, err := s.Open(ctx, info.Digest, 0, 0)
	if err != nil {
		t.Fatalf("Open = %v", err)
	}
	head := make([]byte, mib)
	if _, err := io.ReadFull(rc, head); err != nil {
		t.Fatalf("reading the first MiB: %v", err)
	}
	if err := s.Delete(ctx, info.Digest); err != nil {
		t.Fatalf("Delete while reading = %v", err)
	}
	rest, err := io.ReadAll(rc)
	rc.Close()
	// The reader may finish or fail, but never returns other bytes.
	if n := len(head) + len(rest); n > len(b) || !bytes.Equal(append(head, rest...), b[:n]) {
		t.Errorf("reading across a delete returned %d bytes that differ from the blob", n)
	}
	if err == nil && len(head)+len(rest) != len(b) {
		t.Errorf("reading across a delete ended early (%d of %d bytes) without an error", len(head)+len(rest), len(b))
	}
	wantAbsent(t, s, info.Digest)
	put(t, s, b, int64(len(b)))
}

func testUploads(t *testing.T, s blob.Store) {
	ctx := ctxFor(t)
	refs := []string{newRef(t), newRef(t)}
	for i, ref := range refs {
		b := Content(uint64(30+i), 1000)
		w, err := s.NewWriter(ctx, blob.WriterOptions{Ref: ref, Expected: digest.FromBytes(b), Size: 1000})
		if err != nil {
			t.Fatalf("NewWriter = %v", err)
		}
		if _, err := w.Write(b[:100]); err != nil {
			t.Fatal(err)
		}
		w.Close()
	}
	ups, err := s.Uploads(ctx)
	if err != nil {
		t.Fatalf("Uploads = %v", err)
	}
	for _, ref := range refs {
		if !slices.ContainsFunc(ups, func(u blob.Upload) bool { return u.Ref == ref }) {
			t.Errorf("Uploads = %+v, missing %q", ups, ref)
		}
	}
	for _, u := range ups {
		if u.StartedAt.IsZero() || u.UpdatedAt.Before(u.StartedAt) || u.Size != 1000 {
			t.Errorf("upload %+v: want start and update times and size 1000", u)
		}
	}
	// A held upload is never cleaned, however old.
	held := newRef(t)
	hb := Content(40, 10)
	hw, err := s.NewWriter(ctx, blob.WriterOptions{Ref: held, Expected: digest.FromBytes(hb), Size: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer hw.Close()

	if n, err := s.CleanUploads(ctx, time.Now().Add(-time.Hour)); err != nil || n != 0 {
		t.Errorf("CleanUploads(an hour ago) = %d, %v; want 0 (the uploads are new)", n, err)
	}
	if n, err := s.CleanUploads(ctx, time.Now().Add(time.Hour)); err != nil || n < len(refs) {
		t.Errorf("CleanUploads(in an hour) = %d, %v; want at least %d", n, err, len(refs))
	}
	for _, ref := range refs {
		wantNoUpload(t, s, ref)
	}
	if _, err := hw.Write(hb); err != nil {
		t.Fatalf("Write to the held upload after cleaning = %v", err)
	}
	if _, err := hw.Commit(ctx, ""); err != nil {
		t.Fatalf("Commit of the held upload after cleaning = %v", err)
	}
}

// Damage changes, behind a store's back, the byte at off of the stored blob
// d, as a failing disk or S3 server might.
type Damage func(t *testing.T, d digest.Digest, off int64)

// FlipByte inverts the byte at off of the file at path: the Damage of a
// backend that keeps each blob in a file (the fs backend, versitygw).
func FlipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("damaging %s: %v", path, err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatalf("damaging %s at %d: %v", path, off, err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatalf("damaging %s at %d: %v", path, off, err)
	}
}

// TestDamage checks what a store does with blobs whose stored bytes
// changed: whole reads fail with ErrDataLoss naming the digest, Check
// reports the same, ranges are served as stored, and intact blobs read
// as before. newStore returns an empty store and how to damage its blobs.
func TestDamage(t *testing.T, newStore func(t *testing.T) (blob.Store, Damage)) {
	for i, tc := range []struct {
		size int
		off  int64 // of the damaged byte
	}{
		{1, 0},
		{1000, 999},
		{7*mib + 3, 0},
		{7*mib + 3, 6 * mib},
	} {
		t.Run(fmt.Sprintf("%d-at-%d", tc.size, tc.off), func(t *testing.T) {
			s, damage := newStore(t)
			ctx := ctxFor(t)
			b := Content(uint64(400+i), tc.size)
			info := put(t, s, b, int64(len(b)))
			intact := put(t, s, Content(uint64(500+i), tc.size), int64(tc.size))
			damage(t, info.Digest, tc.off)

			got, _, err := readAll(t, s, info.Digest, 0, 0)
			wantKind(t, fmt.Sprintf("reading %s, damaged at %d", info.Digest, tc.off), err, errdefs.ErrDataLoss)
			if err != nil && !strings.Contains(err.Error(), string(info.Digest)) {
				t.Errorf("reading a damaged blob: error %q does not name %s", err, info.Digest)
			}
			if len(got) > tc.size {
				t.Errorf("reading a damaged blob returned %d bytes, more than its %d", len(got), tc.size)
			}
			_, err = blob.Check(ctx, s, info.Digest)
			wantKind(t, fmt.Sprintf("Check(%s), damaged at %d", info.Digest, tc.off), err, errdefs.ErrDataLoss)
			if st, err := s.Stat(ctx, info.Digest); err != nil || st.Size != int64(tc.size) {
				t.Errorf("Stat(%s) of a damaged blob = %+v, %v; want it described as committed", info.Digest, st, err)
			}
			// A range is served as stored: only the whole blob can be checked.
			if tc.size > 1 {
				got, _, err = readAll(t, s, info.Digest, tc.off, 1)
				if err != nil || len(got) != 1 || got[0] != b[tc.off]^0xff {
					t.Errorf("reading the damaged byte alone = %x, %v; want %x served as stored", got, err, b[tc.off]^0xff)
				}
			}

			if _, err := blob.Check(ctx, s, intact.Digest); err != nil {
				t.Errorf("Check(%s) of an intact blob = %v", intact.Digest, err)
			}
			if _, err := blob.Check(ctx, s, digest.FromString("never stored")); !errdefs.IsNotFound(err) {
				t.Errorf("Check of a digest never stored = %v, want not found", err)
			}
		})
	}
}

// TestReplicas checks stores that are replicas of one another (two
// processes over one bucket): an upload begun on one resumes on the other,
// one writer holds an upload whichever replica it is on, and the janitors
// of both may run at once. newPair returns two empty replicas.
func TestReplicas(t *testing.T, newPair func(t *testing.T) (a, b blob.Store)) {
	tests := []struct {
		name string
		fn   func(t *testing.T, a, b blob.Store)
	}{
		{"ResumeOnOtherReplica", testResumeOnOtherReplica},
		{"OneWriterAcrossReplicas", testOneWriterAcrossReplicas},
		{"RaceForOneUpload", testRaceForOneUpload},
		{"JanitorsOnEveryReplica", testJanitorsOnEveryReplica},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := newPair(t)
			tt.fn(t, a, b)
		})
	}
}

func testResumeOnOtherReplica(t *testing.T, a, b blob.Store) {
	ctx := ctxFor(t)
	data := Content(600, 13*mib+5)
	d := digest.FromBytes(data)
	opts := blob.WriterOptions{Ref: newRef(t), Expected: d, Size: int64(len(data))}
	w, err := a.NewWriter(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeChunks(w, data[:11*mib], mib); err != nil {
		t.Fatal(err)
	}
	w.Close()
	u, err := b.Upload(ctx, opts.Ref)
	if err != nil {
		t.Fatalf("Upload(%q) on the other replica = %v", opts.Ref, err)
	}
	w, err = b.NewWriter(ctx, opts)
	if err != nil {
		t.Fatalf("resuming on the other replica = %v", err)
	}
	defer w.Close()
	if w.Offset() != u.Offset {
		t.Errorf("resumed at %d, want the %d bytes the upload holds", w.Offset(), u.Offset)
	}
	if err := writeChunks(w, data[w.Offset():], mib); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(ctx, ""); err != nil {
		t.Fatalf("Commit on the other replica = %v", err)
	}
	if _, err := blob.Check(ctx, a, d); err != nil {
		t.Errorf("Check(%s) on the first replica = %v", d, err)
	}
	wantNoUpload(t, a, opts.Ref)
}

func testOneWriterAcrossReplicas(t *testing.T, a, b blob.Store) {
	ctx := ctxFor(t)
	data := Content(601, 6*mib+1)
	d := digest.FromBytes(data)
	opts := blob.WriterOptions{Ref: newRef(t), Expected: d, Size: int64(len(data))}
	w, err := a.NewWriter(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := writeChunks(w, data[:mib], mib); err != nil {
		t.Fatal(err)
	}
	w2, err := b.NewWriter(ctx, opts)
	if err == nil {
		w2.Close()
	}
	wantKind(t, "NewWriter on one replica of an upload held on the other", err, errdefs.ErrUnavailable)
	wantKind(t, "Abort on one replica of an upload held on the other", b.Abort(ctx, opts.Ref), errdefs.ErrUnavailable)
	if _, err := b.CleanUploads(ctx, time.Now().Add(time.Hour)); err != nil {
		t.Errorf("CleanUploads on the other replica = %v", err)
	}
	if err := writeChunks(w, data[mib:], mib); err != nil {
		t.Fatalf("writing on after the other replica tried the upload: %v", err)
	}
	if _, err := w.Commit(ctx, ""); err != nil {
		t.Fatalf("Commit = %v", err)
	}
	if _, err := blob.Check(ctx, b, d); err != nil {
		t.Errorf("Check(%s) on the other replica = %v", d, err)
	}
}

// testRaceForOneUpload opens one upload on both replicas at the same
// moment, a few times: exactly one writer gets it each time, the other
// fails UNAVAILABLE, and the winner's blob is right.
func testRaceForOneUpload(t *testing.T, a, b blob.Store) {
	ctx := ctxFor(t)
	for round := range 3 {
		data := Content(uint64(610+round), 6*mib+round)
		d := digest.FromBytes(data)
		opts := blob.WriterOptions{Ref: newRef(t), Expected: d, Size: int64(len(data))}
		var ws [2]blob.Writer
		var errs [2]error
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, s := range []blob.Store{a, b} {
			wg.Go(func() {
				<-start
				ws[i], errs[i] = s.NewWriter(ctx, opts)
			})
		}
		close(start)
		wg.Wait()
		won := -1
		for i, err := range errs {
			switch {
			case err == nil && won >= 0:
				t.Fatalf("round %d: both replicas hold upload %q at once", round, opts.Ref)
			case err == nil:
				won = i
			case !errdefs.IsUnavailable(err):
				t.Errorf("round %d: the losing replica's NewWriter = %v, want unavailable", round, err)
			}
		}
		if won < 0 {
			t.Fatalf("round %d: neither replica got upload %q: %v", round, opts.Ref, errs)
		}
		w := ws[won]
		if err := writeChunks(w, data, mib); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Commit(ctx, ""); err != nil {
			t.Fatalf("round %d: the winner's Commit = %v", round, err)
		}
		w.Close()
		if _, err := blob.Check(ctx, []blob.Store{a, b}[1-won], d); err != nil {
			t.Errorf("round %d: Check(%s) on the losing replica = %v", round, d, err)
		}
	}
}

// testJanitorsOnEveryReplica runs both replicas' janitors at once over
// idle uploads: each is discarded once, without errors, and an upload a
// writer holds survives both.
func testJanitorsOnEveryReplica(t *testing.T, a, b blob.Store) {
	ctx := ctxFor(t)
	var idle []string
	for i := range 3 {
		ref := newRef(t)
		data := Content(uint64(620+i), 6*mib)
		w, err := a.NewWriter(ctx, blob.WriterOptions{Ref: ref, Expected: digest.FromBytes(data), Size: int64(len(data))})
		if err != nil {
			t.Fatal(err)
		}
		if err := writeChunks(w, data[:5*mib+1], mib); err != nil {
			t.Fatal(err)
		}
		w.Close()
		idle = append(idle, ref)
	}
	held := Content(630, 100)
	hd := digest.FromBytes(held)
	hw, err := b.NewWriter(ctx, blob.WriterOptions{Ref: newRef(t), Expected: hd, Size: int64(len(held))})
	if err != nil {
		t.Fatal(err)
	}
	defer hw.Close()

	var ns [2]int
	var errs [2]error
	var wg sync.WaitGroup
	for i, s := range []blob.Store{a, b} {
		wg.Go(func() { ns[i], errs[i] = s.CleanUploads(ctx, time.Now().Add(time.Hour)) })
	}
	wg.Wait()
	if errs[0] != nil || errs[1] != nil || ns[0]+ns[1] != len(idle) {
		t.Errorf("CleanUploads on both replicas at once = %d, %v and %d, %v; want %d discarded in all, no errors",
			ns[0], errs[0], ns[1], errs[1], len(idle))
	}
	for _, ref := range idle {
		wantNoUpload(t, a, ref)
	}
	if _, err := hw.Write(held); err != nil {
		t.Fatalf("Write to the held upload after both janitors ran = %v", err)
	}
	if _, err := hw.Commit(ctx, ""); err != nil {
		t.Fatalf("Commit of the held upload after both janitors ran = %v", err)
	}
}

// testSHA512 stores a blob under a declared sha512 digest, beside a sha256
// one, and lists both in digest order.
func testSHA512(t *testing.T, s blob.Store) {
	ctx := ctxFor(t)
	data := Content(512, 3000)
	d512 := digest.SHA512.FromBytes(data)
	d256 := digest.SHA256.FromBytes(data)
	for _, d := range []digest.Digest{d512, d256} {
		w, err := s.NewWriter(ctx, blob.WriterOptions{Ref: "sha-" + string(d.Algorithm()), Expected: d, Size: int64(len(data))})
		if err != nil {
			t.Fatalf("NewWriter(%s) = %v", d, err)
		}
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Commit(ctx, ""); err != nil {
			t.Fatalf("Commit(%s) = %v", d, err)
		}
		w.Close()
	}
	rc, info, err := s.Open(ctx, d512, 0, 0)
	if err != nil {
		t.Fatalf("Open(%s) = %v", d512, err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data) || info.Digest != d512 {
		t.Errorf("Open(%s) read %d bytes (%v), info %+v; want the blob", d512, len(got), err, info)
	}
	list, err := s.List(ctx, "", 10)
	if err != nil || len(list) != 2 || list[0].Digest != d256 || list[1].Digest != d512 {
		t.Errorf("List = %+v, %v; want %s then %s", list, err, d256, d512)
	}
	if list, err := s.List(ctx, d256, 10); err != nil || len(list) != 1 || list[0].Digest != d512 {
		t.Errorf("List(after %s) = %+v, %v; want %s", d256, list, err, d512)
	}
	wrong := digest.SHA512.FromString("other")
	w, err := s.NewWriter(ctx, blob.WriterOptions{Ref: "sha-wrong", Expected: wrong, Size: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	_, err = w.Commit(ctx, "")
	wantKind(t, "Commit of a wrong sha512 digest", err, errdefs.ErrInvalidArgument)
}

// testResumeExactly writes a blob in pieces that fall anywhere, each by a
// writer of its own closed without a commit: every writer resumes at the
// last byte the one before it took (the registry's chunked uploads).
func testResumeExactly(t *testing.T, s blob.Store) {
	ctx := ctxFor(t)
	data := Content(7, 13<<20+333)
	d := digest.FromBytes(data)
	const ref = "exact"
	for off, piece := 0, 1; off < len(data); piece *= 3 {
		w, err := s.NewWriter(ctx, blob.WriterOptions{Ref: ref, Size: -1})
		if err != nil {
			t.Fatal(err)
		}
		if w.Offset() != int64(off) {
			t.Fatalf("a writer resumed at %d, want %d", w.Offset(), off)
		}
		end := min(off+piece*4099, len(data))
		if _, err := w.Write(data[off:end]); err != nil {
			t.Fatal(err)
		}
		if end == len(data) {
			if _, err := w.Commit(ctx, d); err != nil {
				t.Fatalf("Commit = %v", err)
			}
			w.Close()
			break
		}
		if err := w.Close(); err != nil {
			t.Fatalf("Close at %d = %v", end, err)
		}
		u, err := s.Upload(ctx, ref)
		if err != nil || u.Offset != int64(end) {
			t.Fatalf("Upload after a Close at %d = %+v, %v", end, u, err)
		}
		off = end
	}
	rc, _, err := s.Open(ctx, d, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, data) {
		t.Errorf("the blob reads back as %d other bytes", len(got))
	}
}

// testResumeOnly: a writer opened ResumeOnly takes up an unfinished upload
// where it stands, and starts none: an unknown or finished ref is
// ErrNotFound (the registry's upload URLs name uploads that must exist).
func testResumeOnly(t *testing.T, s blob.Store) {
	ctx := ctxFor(t)
	ref := newRef(t)
	_, err := s.NewWriter(ctx, blob.WriterOptions{Ref: ref, Size: -1, ResumeOnly: true})
	wantKind(t, "NewWriter(ResumeOnly) of an unknown ref", err, errdefs.ErrNotFound)
	wantNoUpload(t, s, ref)

	data := Content(16, 3000)
	w, err := s.NewWriter(ctx, blob.WriterOptions{Ref: ref, Size: -1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data[:1000]); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w, err = s.NewWriter(ctx, blob.WriterOptions{Ref: ref, Size: -1, ResumeOnly: true})
	if err != nil {
		t.Fatalf("NewWriter(ResumeOnly) of an unfinished upload = %v", err)
	}
	if w.Offset() != 1000 {
		t.Errorf("NewWriter(ResumeOnly) resumed at %d, want 1000", w.Offset())
	}
	if _, err := w.Write(data[1000:]); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(ctx, digest.FromBytes(data)); err != nil {
		t.Fatalf("Commit = %v", err)
	}
	w.Close()
	_, err = s.NewWriter(ctx, blob.WriterOptions{Ref: ref, Size: -1, ResumeOnly: true})
	wantKind(t, "NewWriter(ResumeOnly) of a committed upload", err, errdefs.ErrNotFound)
}

// testPut: Put stores a blob in one step (sha256 and sha512, empty too),
// storing it again is a success, and bytes that do not match their digest
// are refused naming both digests, with nothing visible; no upload is left.
func testPut(t *testing.T, s blob.Store) {
	ctx := ctxFor(t)
	before := time.Now().Add(-time.Minute)
	for i, b := range [][]byte{nil, Content(90, 4096)} {
		for _, d := range []digest.Digest{digest.SHA256.FromBytes(b), digest.SHA512.FromBytes(b)} {
			for range 2 { // the second Put finds the blob stored
				info, err := s.Put(ctx, d, "application/vnd.oci.image.config.v1+json", b)
				if err != nil || info.Digest != d || info.Size != int64(len(b)) || info.CreatedAt.Before(before) {
					t.Fatalf("Put(%s, %d bytes) = %+v, %v; want it stored", d, len(b), info, err)
				}
			}
			got, info, err := readAll(t, s, d, 0, 0)
			if err != nil || !bytes.Equal(got, b) || info.Size != int64(len(b)) {
				t.Errorf("blob %d (%s) reads back as %d bytes, %v; want %d", i, d, len(got), err, len(b))
			}
		}
	}
	b := Content(91, 1000)
	actual, wrong := digest.FromBytes(b), digest.FromBytes(Content(92, 1000))
	_, err := s.Put(ctx, wrong, "", b)
	wantKind(t, "Put with the wrong digest", err, errdefs.ErrInvalidArgument)
	if err != nil && (!strings.Contains(err.Error(), string(wrong)) || !strings.Contains(err.Error(), string(actual))) {
		t.Errorf("Put error %q does not name both %s and %s", err, wrong, actual)
	}
	wantAbsent(t, s, wrong)
	wantAbsent(t, s, actual)
	_, err = s.Put(ctx, "sha256:abc", "", b)
	wantKind(t, "Put with a malformed digest", err, errdefs.ErrInvalidArgument)
	if ups, err := s.Uploads(ctx); err != nil || len(ups) != 0 {
		t.Errorf("Uploads after Puts = %+v, %v; want none", ups, err)
	}
}
