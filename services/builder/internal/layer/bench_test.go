package layer

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// The benchmark workload's layers (../shared/bench): a RUN writing 200 MB of
// random data, and a RUN writing 2,000 small files.

func randomFileDir(b *testing.B) string {
	dir := filepath.Join(b.TempDir(), "upper")
	must(b, os.MkdirAll(filepath.Join(dir, "data"), 0o755))
	f, err := os.Create(filepath.Join(dir, "data/blob"))
	must(b, err)
	buf := make([]byte, 1<<20)
	for range 200 {
		rand.Read(buf)
		_, err := f.Write(buf)
		must(b, err)
	}
	must(b, f.Close())
	return dir
}

func smallFilesDir(b *testing.B) string {
	dir := filepath.Join(b.TempDir(), "upper")
	must(b, os.MkdirAll(filepath.Join(dir, "data/small"), 0o755))
	for i := range 2000 {
		must(b, os.WriteFile(filepath.Join(dir, "data/small", fmt.Sprintf("f%d", i)), fmt.Appendf(nil, "line %d\n", i), 0o644))
	}
	return dir
}

func benchWriteDiff(b *testing.B, dir string) {
	ctx := context.Background()
	desc, err := WriteDiff(ctx, discardBlob{}, DirSource(dir)) // warms the page cache
	must(b, err)
	b.SetBytes(desc.DiffSize)
	b.ResetTimer()
	for b.Loop() {
		if _, err := WriteDiff(ctx, discardBlob{}, DirSource(dir)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWriteDiff200MBRandom(b *testing.B)    { benchWriteDiff(b, randomFileDir(b)) }
func BenchmarkWriteDiff2000SmallFiles(b *testing.B) { benchWriteDiff(b, smallFilesDir(b)) }

func benchUnpack(b *testing.B, dir string) {
	requireRoot(b)
	ctx := context.Background()
	blob := &memBlob{}
	desc, err := WriteDiff(ctx, blob, DirSource(dir))
	must(b, err)
	b.SetBytes(desc.DiffSize)
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		target := filepath.Join(b.TempDir(), "layer")
		must(b, os.Mkdir(target, 0o755))
		b.StartTimer()
		if _, err := Unpack(ctx, bytes.NewReader(blob.buf.Bytes()), target); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnpack200MBRandom(b *testing.B)    { benchUnpack(b, randomFileDir(b)) }
func BenchmarkUnpack2000SmallFiles(b *testing.B) { benchUnpack(b, smallFilesDir(b)) }

func benchDiffID(b *testing.B, dir string) {
	ctx := context.Background()
	res, err := DiffID(ctx, DirSource(dir))
	must(b, err)
	b.SetBytes(res.DiffSize)
	b.ResetTimer()
	for b.Loop() {
		if _, err := DiffID(ctx, DirSource(dir)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDiffID200MBRandom(b *testing.B)    { benchDiffID(b, randomFileDir(b)) }
func BenchmarkDiffID2000SmallFiles(b *testing.B) { benchDiffID(b, smallFilesDir(b)) }
