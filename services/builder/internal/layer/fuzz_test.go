package layer

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/containerd/v2/pkg/archive/tartest"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/strata-build/strata/lib/compression"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/layer/layertest"
)

// The bounds the fuzz targets extract with: small, so that an input that
// gets past them shows at once.
var fuzzLimits = compression.Limits{MaxSize: 1 << 20}

const fuzzMaxEntries = 256

// FuzzUnpack unpacks any blob as a layer, beside a host directory. Whatever
// the blob, nothing outside the layer's directory changes, the files it
// writes hold no more bytes than the layer's bound, and an error is
// INVALID_ARGUMENT or RESOURCE_EXHAUSTED: bad layers are the client's
// fault, never an internal error.
func FuzzUnpack(f *testing.F) {
	requireRoot(f)
	addArchiveSeeds(f)
	f.Fuzz(func(t *testing.T, blob []byte) {
		sandbox(t, func(root string) error {
			_, err := Unpack(context.Background(), bytes.NewReader(blob), root, WithLimits(fuzzLimits), WithMaxEntries(fuzzMaxEntries))
			return err
		})
	})
}

// FuzzExtract does the same for ADD's local archives, and checks that
// Extract takes a file for an archive exactly when Docker does (its first
// tar header reads, once decompressed) and writes nothing when it is not.
func FuzzExtract(f *testing.F) {
	requireRoot(f)
	addArchiveSeeds(f)
	f.Add([]byte("just a file, not an archive\n"))
	f.Fuzz(func(t *testing.T, blob []byte) {
		sandbox(t, func(root string) error {
			isArchive, err := Extract(context.Background(), bytes.NewReader(blob), root, WithLimits(fuzzLimits), WithMaxEntries(fuzzMaxEntries))
			if err != nil {
				return err
			}
			if want := dockerIsArchive(blob); isArchive != want {
				t.Fatalf("Extract took the file for an archive: %v; Docker: %v", isArchive, want)
			}
			if entries, _ := os.ReadDir(root); !isArchive && len(entries) > 0 {
				t.Fatalf("Extract wrote %d entries for a file that is not an archive", len(entries))
			}
			return nil
		})
	})
}

// dockerIsArchive is Docker's test of whether ADD unpacks a local file:
// the first header of the decompressed stream reads.
func dockerIsArchive(blob []byte) bool {
	r, err := compression.NewReader(bytes.NewReader(blob), fuzzLimits, "archive")
	if err != nil {
		return false
	}
	defer r.Close()
	_, err = tar.NewReader(r).Next()
	return err == nil
}

// sandbox runs extract on an empty root beside the breakout table's host
// directory, and checks what the fuzz targets promise.
func sandbox(t *testing.T, extract func(root string) error) {
	dir := t.TempDir()
	h := layertest.NewHost(t, filepath.Join(dir, "host"))
	root := filepath.Join(dir, "root")
	must(t, os.Mkdir(root, 0o755))

	err := extract(root)

	if d := h.Changes(); len(d) > 0 {
		t.Fatalf("the extraction (err %v) changed the host:\n%s", err, strings.Join(d, "\n"))
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Fatalf("the extraction (err %v) wrote beside its root: %v", err, entries)
	}
	if n := fileBytes(t, root); n > fuzzLimits.MaxSize {
		t.Fatalf("the extraction (err %v) wrote %d bytes of files, over its bound of %d", err, n, fuzzLimits.MaxSize)
	}
	if err != nil && !errdefs.IsInvalidArgument(err) && !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Fatalf("extraction error %v (%T), want INVALID_ARGUMENT or RESOURCE_EXHAUSTED", err, err)
	}
}

// fileBytes is the size of the regular files under dir, each inode once.
func fileBytes(t *testing.T, dir string) int64 {
	var n int64
	seen := map[uint64]bool{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if ino := fi.Sys().(*syscall.Stat_t).Ino; !seen[ino] {
			seen[ino] = true
			n += fi.Size()
		}
		return nil
	})
	must(t, err)
	return n
}

// addArchiveSeeds seeds a fuzz target with the breakout table (each case's
// lower entries and archive as one layer, the host directory named
// relatively, as the fuzz sandbox has it beside the root), a layer of
// every entry type, compressed each way, and archives whose first header
// needs more than one block.
func addArchiveSeeds(f *testing.F) {
	for _, c := range layertest.Cases() {
		c = c.Expand("../host")
		f.Add(layertest.Tar(append(c.Lower, c.Archive...)))
	}
	tc := tartest.TarContext{}.WithUIDGID(0, 0)
	everything := tarBytes(f, tartest.TarAll(
		tc.Dir("etc", 0o755), tc.File("etc/passwd", []byte("root:x:0:0::/root:/bin/sh\n"), 0o644),
		tc.Symlink("passwd", "etc/passwd-link"), tc.Link("etc/passwd", "etc/passwd-hard"),
		tc.Dir("var/lib", 0o755), tc.File("var/lib/.wh.gone", nil, 0o644), tc.File("var/.wh..wh..opq", nil, 0o644),
		tc.File("bin/su", []byte("#!"), 0o4755),
	))
	f.Add(everything)
	var gz, zs bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(everything)
	zw.Close()
	ze, _ := zstd.NewWriter(&zs)
	ze.Write(everything)
	ze.Close()
	f.Add(gz.Bytes())
	f.Add(zs.Bytes())
	f.Add(withPAX(f, paxRecord("path", strings.Repeat("long/", 30)+"name"), "ignored", []byte("x")))
	f.Add(sparseFile(f, 1000000))
}

// sparseFile is a tar of one file written by GNU tar --sparse (PAX format
// 1.0): a map of the data blocks, then the data, 512 bytes at the end of a
// file of size bytes.
func sparseFile(t testing.TB, size int) []byte {
	sparseMap := make([]byte, 512)
	copy(sparseMap, fmt.Sprintf("1\n%d\n512\n", size-512))
	return withPAX(t, paxRecord("GNU.sparse.major", "1")+paxRecord("GNU.sparse.minor", "0")+
		paxRecord("GNU.sparse.name", "sparse")+paxRecord("GNU.sparse.realsize", strconv.Itoa(size)),
		"GNUSparseFile.0/sparse", append(sparseMap, bytes.Repeat([]byte("d"), 512)...))
}

// paxRecord formats one record of a PAX extended header.
func paxRecord(key, value string) string {
	n := len(key) + len(value) + 3 // " ", "=", "\n"
	d := len(strconv.Itoa(n))
	for len(strconv.Itoa(n+d)) != d {
		d++
	}
	return strconv.Itoa(n+d) + " " + key + "=" + value + "\n"
}

// withPAX returns a tar of one file preceded by a PAX extended header of
// the given records, written by hand: archive/tar writes neither GNU
// sparse records nor records over its limits.
func withPAX(t testing.TB, records, name string, body []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	must(t, tw.WriteHeader(&tar.Header{Name: "pax", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(records))}))
	_, err := io.WriteString(tw, records)
	must(t, err)
	must(t, tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))}))
	_, err = tw.Write(body)
	must(t, err)
	must(t, tw.Close())
	raw := buf.Bytes()
	raw[156] = tar.TypeXHeader
	copy(raw[148:156], "        ")
	var sum int
	for _, c := range raw[:512] {
		sum += int(c)
	}
	copy(raw[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return slices.Clip(raw)
}
