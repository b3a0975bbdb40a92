package plan

import (
	"context"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/buildctx"
	"github.com/strata-build/strata/services/builder/internal/dockerfile"
)

// lastStep plans a Dockerfile over the test context and returns its last
// step.
func lastStep(t *testing.T, df string, downloads Downloads) *Step {
	t.Helper()
	parsed, err := dockerfile.Parse([]byte(df))
	if err != nil {
		t.Fatal(err)
	}
	c, err := testContext()
	if err != nil {
		t.Fatal(err)
	}
	pl, err := Make(context.Background(), Input{Dockerfile: parsed, Context: c, MaxConfigBytes: 1 << 20,
		Images: baseImages{"busybox": busybox()}, Downloads: downloads})
	if err != nil {
		t.Fatalf("%s: %v", df, err)
	}
	steps := pl.Stages[len(pl.Stages)-1].Steps
	return steps[len(steps)-1]
}

// A --link step's link key covers what it copies and how, and nothing of
// the steps below it; other steps have none.
func TestLinkKey(t *testing.T) {
	const copy = "COPY --link app /app\n"
	base := lastStep(t, "FROM busybox\n"+copy, nil)
	if base.LinkKey == "" || base.LinkKey == base.Key {
		t.Fatalf("COPY --link: link key %q, key %q: want a link key of its own", base.LinkKey, base.Key)
	}
	for _, df := range []string{
		"FROM busybox\nRUN echo changed\n" + copy,
		"FROM busybox\nENV A=1\nARG B=2\n" + copy,
		"FROM busybox\nWORKDIR /elsewhere\n" + copy, // the destination is absolute
	} {
		st := lastStep(t, df, nil)
		if st.LinkKey != base.LinkKey {
			t.Errorf("%q: link key %s, want %s: the steps below are not the layer's", df, st.LinkKey, base.LinkKey)
		}
		if st.Key == base.Key {
			t.Errorf("%q: step key %s is the one over another parent", df, st.Key)
		}
	}
	for _, df := range []string{
		"FROM busybox\nCOPY --link app /other\n",
		"FROM busybox\nWORKDIR /w\nCOPY --link app app\n", // relative: the working directory
		"FROM busybox\nWORKDIR /\nCOPY --link app app\n",  // /app written otherwise: another history row
		"FROM busybox\nCOPY --link --chown=1:1 app /app\n",
		"FROM busybox\nCOPY --link --exclude=*.sh app /app\n",
		"FROM busybox\nCOPY --link app/main.go /app\n",
		"FROM busybox\nCOPY --link --parents app /app\n",
		"FROM busybox\nADD --link app /app\n",
		"FROM busybox AS s\nFROM busybox\nCOPY --link --from=s /app /app\n",
	} {
		if st := lastStep(t, df, nil); st.LinkKey == base.LinkKey || st.LinkKey == "" {
			t.Errorf("%q: link key %q, want one of its own", df, st.LinkKey)
		}
	}
	for _, df := range []string{"FROM busybox\nCOPY app /app\n", "FROM busybox\nCOPY --link --chmod=755 app /app\n"} {
		if st := lastStep(t, df, nil); st.LinkKey != "" {
			t.Errorf("%q: link key %s, want none (the layer is made over the parent's)", df, st.LinkKey)
		}
	}
}

// fixedDownload downloads what it holds, counting the downloads.
type fixedDownload struct {
	e *buildctx.Entry
	n *int
}

func (f fixedDownload) Download(context.Context, string, digest.Digest) (*buildctx.Entry, error) {
	*f.n++
	return f.e, nil
}

func (f fixedDownload) Clone(context.Context, GitSource) (*buildctx.Context, string, error) {
	return nil, "", errdefs.Unimplemented("no Git sources here")
}

// An ADD --checksum is planned without its download, keyed on the
// checksum; a sha256 checksum keys the step as the download it names
// does, so records of such steps from builds that downloaded at planning
// still serve.
func TestChecksumKeysWithoutDownloading(t *testing.T) {
	const url = "http://example.com/dl/tool.sh"
	content := digest.FromString("#!/bin/sh\n")
	var n int
	downloads := fixedDownload{e: &buildctx.Entry{Path: "tool.sh", Mode: 0o600, Size: 10, Digest: content, ModTimeNano: 7}, n: &n}
	pinned := lastStep(t, "FROM busybox\nADD --checksum="+content.String()+" "+url+" /t\n", downloads)
	if n != 0 {
		t.Errorf("planning ADD --checksum downloaded %d times, want none", n)
	}
	fetched := lastStep(t, "FROM busybox\nADD "+url+" /t\n", downloads)
	if pinned.Key != fetched.Key || pinned.CreatedBy() != fetched.CreatedBy() {
		t.Errorf("ADD --checksum=sha256: key %s, history %q; want the downloaded content's %s, %q", pinned.Key, pinned.CreatedBy(), fetched.Key, fetched.CreatedBy())
	}
	other := lastStep(t, "FROM busybox\nADD --checksum="+digest.SHA512.FromString("#!/bin/sh\n").String()+" "+url+" /t\n", downloads)
	if other.Key == pinned.Key {
		t.Error("sha512 and sha256 checksums give one key")
	}
	n = 0
	got, err := pinned.Copy.Fetch(context.Background(), downloads)
	if err != nil || n != 1 || got.Sources[0].Entry != downloads.e || pinned.Copy.Sources[0].Entry == downloads.e {
		t.Errorf("Fetch: %v, %d downloads; want the download in a new Copy and the plan's unchanged", err, n)
	}
}
