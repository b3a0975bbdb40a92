package buildctx

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/compression"
	"github.com/strata-build/strata/lib/errdefs"
)

// BlobOpener opens a blob of the blob store: the context of a build that
// names one (BuildOptions.context_blob).
type BlobOpener func(ctx context.Context, d digest.Digest) (io.ReadCloser, error)

// SetTarSources lets the receiver take contexts as tar streams: blobs opens
// the blob of a context_blob (nil refuses them), and limits bound what a
// compressed tar may expand to.
func (r *Receiver) SetTarSources(blobs BlobOpener, limits compression.Limits) {
	r.blobs, r.tarLimits = blobs, limits
}

// fromTar reads a context tar (plain or compressed) from src into the
// store and returns its file list and the bytes of contents it held; the
// contents are held for s. Every entry is checked as a file list's is
// (New), and the tar's own hazards — hard links, devices — are refused
// naming the entry.
func (r *Receiver) fromTar(src io.Reader, s *Session, what string) ([]*builderv1.FileEntry, int64, error) {
	zr, err := compression.NewReader(src, r.tarLimits, what)
	if err != nil {
		return nil, 0, err
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	batch := r.store.NewBatch()
	defer batch.Close()
	var (
		list     []*builderv1.FileEntry
		at       = map[string]int{} // path → index in list; a later entry replaces an earlier one, as extracting does
		received int64
	)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, 0, tarContextError(err, what)
		}
		if len(at) >= MaxEntries {
			return nil, 0, errdefs.ResourceExhausted("build: the context has more than %d entries", MaxEntries)
		}
		name, err := tarName(hdr.Name)
		if err != nil {
			return nil, 0, unsafeEntry(what, hdr.Name, err.Error())
		}
		fe := &builderv1.FileEntry{
			Path: name, Mode: UnixMode(hdr.FileInfo().Mode()), Uid: uint32(hdr.Uid), Gid: uint32(hdr.Gid),
			MtimeUnixNano: hdr.ModTime.UnixNano(),
		}
		switch hdr.Typeflag {
		case tar.TypeReg, tar.TypeGNUSparse:
			d, n, err := r.storeContent(batch, s, tr, hdr.Size, what, hdr.Name)
			if err != nil {
				return nil, 0, err
			}
			fe.Digest, fe.Size = string(d), n
			received += n
		case tar.TypeDir:
		case tar.TypeSymlink:
			// A symlink's target is data, resolved inside the context when
			// COPY follows it, as in a file list.
			fe.LinkTarget = hdr.Linkname
		case tar.TypeLink:
			target, err := tarName(hdr.Linkname)
			i, ok := at[target]
			if err != nil || !ok || list[i].GetDigest() == "" {
				return nil, 0, unsafeEntry(what, hdr.Name, fmt.Sprintf("is a hard link to %q, which is not an earlier file of the archive", hdr.Linkname))
			}
			fe.Mode = UnixMode(hdr.FileInfo().Mode().Perm())
			fe.Digest, fe.Size = list[i].GetDigest(), list[i].GetSize()
		case tar.TypeXHeader, tar.TypeXGlobalHeader, tar.TypeGNULongName, tar.TypeGNULongLink:
			continue
		default:
			return nil, 0, unsafeEntry(what, hdr.Name, "is neither a file, a directory nor a link")
		}
		if i, ok := at[name]; ok {
			list[i] = fe
			continue
		}
		at[name] = len(list)
		list = append(list, fe)
	}
	return list, received, nil
}

// storeContent stores the next size bytes of src and returns their digest.
// Contents the store holds are not stored again.
func (r *Receiver) storeContent(batch *Batch, s *Session, src io.Reader, size int64, what, entry string) (digest.Digest, int64, error) {
	h := sha256.New()
	var mem bytes.Buffer
	var tmp *os.File
	var dst io.Writer = &mem
	if size > packLimit {
		f, err := os.CreateTemp(filepath.Join(r.store.dir, "tmp"), "tar-")
		if err != nil {
			return "", 0, fmt.Errorf("context store: %w", err)
		}
		defer func() { f.Close(); os.Remove(f.Name()) }()
		tmp, dst = f, f
	}
	n, err := io.Copy(io.MultiWriter(h, dst), src)
	if err != nil {
		return "", 0, tarContextError(err, what)
	}
	d := digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil))
	s.release = append(s.release, r.store.Hold([]digest.Digest{d}))
	if len(r.store.Missing([]digest.Digest{d})) == 0 {
		return d, n, nil
	}
	w, err := batch.NewWriter(d, n)
	if err != nil {
		return "", 0, err
	}
	var body io.Reader = &mem
	if tmp != nil {
		if _, err := tmp.Seek(0, io.SeekStart); err != nil {
			return "", 0, err
		}
		body = tmp
	}
	if _, err := io.Copy(w, body); err != nil {
		w.Close()
		return "", 0, err
	}
	return d, n, w.Commit()
}

// tarName is the context path of a tar entry's name: "./" prefixes and a
// trailing "/" dropped, then checked as a file list's names are.
func tarName(name string) (string, error) {
	n := strings.TrimSuffix(name, "/")
	for strings.HasPrefix(n, "./") {
		n = strings.TrimLeft(n[2:], "/")
	}
	if n == "." || n == "" {
		return ".", nil
	}
	if strings.HasPrefix(n, "/") {
		return "", errors.New("is an absolute path")
	}
	if c := path.Clean(n); c == ".." || strings.HasPrefix(c, "../") || strings.Contains(n, "/../") || strings.HasSuffix(n, "/..") {
		return "", errors.New(`climbs out of the context with ".."`)
	}
	if err := checkName(n); err != nil {
		return "", err
	}
	return n, nil
}

func unsafeEntry(what, name, why string) error {
	return errdefs.InvalidArgument("%s: tar entry %q %s", what, name, why).WithReason("UNSAFE_TAR_ENTRY")
}

func tarContextError(err error, what string) error {
	var e *errdefs.Error
	if errors.As(err, &e) {
		return err
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return errdefs.InvalidArgument("%s is truncated: the tar stream ends inside an entry", what).WithReason("TRUNCATED")
	}
	if errors.Is(err, tar.ErrHeader) || errors.Is(err, tar.ErrFieldTooLong) || errors.Is(err, tar.ErrInsecurePath) {
		return errdefs.InvalidArgument("%s is not a valid tar stream: %v", what, err)
	}
	return err
}

// tarStream reads the context_tar messages of a Build stream as one byte
// stream: it ends at an empty message or at the client's half-close.
type tarStream struct {
	stream Stream
	buf    []byte
	done   bool
}

func (t *tarStream) Read(p []byte) (int, error) {
	for len(t.buf) == 0 {
		if t.done {
			return 0, io.EOF
		}
		m, err := t.stream.Recv()
		if errors.Is(err, io.EOF) {
			t.done = true
			continue
		}
		if err != nil {
			return 0, err
		}
		chunk, ok := m.GetRequest().(*builderv1.BuildRequest_ContextTar)
		if !ok {
			return 0, errdefs.InvalidArgument("build: expected the context's tar stream (context_tar) after the options")
		}
		if len(chunk.ContextTar) == 0 {
			t.done = true
		}
		t.buf = chunk.ContextTar
	}
	n := copy(p, t.buf)
	t.buf = t.buf[n:]
	return n, nil
}

// drain reads the rest of the tar messages, up to their end, so that
// padding or a compressed stream's trailer after the archive is no error.
func (t *tarStream) drain() error {
	_, err := io.Copy(io.Discard, t)
	return err
}
