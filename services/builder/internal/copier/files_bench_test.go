package copier

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/services/builder/internal/buildctx"
	"github.com/strata-build/strata/services/builder/internal/plan"
)

// BenchmarkWriteFiles writes a COPY's layer of 2,000 files of 8 KB in 20
// directories, small contents packed in the context store as a build's
// transfer leaves them: the shape of a source tree.
func BenchmarkWriteFiles(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root (file owners)")
	}
	store, err := buildctx.NewStore(b.TempDir(), 0)
	if err != nil {
		b.Fatal(err)
	}
	batch := store.NewBatch()
	var entries []*builderv1.FileEntry
	for d := range 20 {
		dir := fmt.Sprintf("src/m%d", d)
		entries = append(entries, &builderv1.FileEntry{Path: dir, Mode: buildctx.UnixMode(fs.ModeDir | 0o755), MtimeUnixNano: 1_600_000_000_000_000_000})
		for f := range 100 {
			body := fmt.Sprintf("%d/%d\n", d, f) + strings.Repeat("x", 8<<10)
			dg := storeContent(b, batch.NewWriter, body) // packed, as a transfer packs small contents
			entries = append(entries, &builderv1.FileEntry{Path: fmt.Sprintf("%s/f%d.c", dir, f), Mode: buildctx.UnixMode(0o644),
				Size: int64(len(body)), Digest: string(dg), MtimeUnixNano: 1_600_000_000_000_000_000})
		}
	}
	if err := batch.Close(); err != nil {
		b.Fatal(err)
	}
	bctx, err := buildctx.New(entries)
	if err != nil {
		b.Fatal(err)
	}
	e, err := bctx.Resolve("src")
	if err != nil {
		b.Fatal(err)
	}
	cp := &plan.Copy{Sources: []plan.Source{{Src: "src", Entry: e}}, Dest: "/src"}
	cl := ContextLayer(b.TempDir(), cp, Options{Store: store, Context: bctx}, time.Unix(1_700_000_000, 0))
	if cl == nil {
		b.Fatal("ContextLayer = nil, want the layer written from the context")
	}
	dirs := b.TempDir()
	b.ResetTimer()
	for i := range b.N {
		dir := filepath.Join(dirs, fmt.Sprint(i))
		if err := os.Mkdir(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		if err := cl.WriteFiles(context.Background(), dir); err != nil {
			b.Fatal(err)
		}
	}
}
