package examples

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/strata-build/strata/client"
	"github.com/strata-build/strata/lib/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// The examples run, as a platform team would run them, against the three
// services and a registry on loopback, with busybox imported as the base.
func TestExamples(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the services and builds images")
	}
	s := harness.StartStack(t, harness.StackOptions{})
	ctx := t.Context()
	// The environment the programs read, and that client.New reads here.
	env := append(s.Env(), "STRATA_CONFIG="+filepath.Join(t.TempDir(), "none.json"))
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	c, err := client.New(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Import(ctx, bytes.NewReader(harness.BusyboxRootfs(t)), client.ImportOptions{Reference: "busybox:latest"}); err != nil {
		t.Fatalf("Import(busybox) = %v", err)
	}
	bin := buildExamples(t)
	run := func(t *testing.T, name string, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, filepath.Join(bin, name), args...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		return string(out)
	}
	hello := filepath.Join(harness.RepoRoot(t), "examples", "hello")

	t.Run("build", func(t *testing.T) {
		out := run(t, "build", hello, "hello:example")
		if !strings.Contains(out, "Step 1/4 : FROM busybox") || !strings.Contains(out, "as hello:example") {
			t.Errorf("build printed:\n%s\nwant the steps and the tag", out)
		}
		img, err := c.Image(ctx, "hello:example")
		if err != nil {
			t.Fatalf("Image(hello:example) = %v", err)
		}
		if !strings.Contains(out, "built "+img.GetId()) {
			t.Errorf("build printed:\n%s\nwant the ID of hello:example, %s", out, img.GetId())
		}
	})

	t.Run("build-push", func(t *testing.T) {
		reg := harness.StartRegistry(t)
		ref := reg + "/team/hello:1"
		out := run(t, "build-push", hello, ref)
		if !regexp.MustCompile(`(?m)^step 1: FROM busybox$`).MatchString(out) ||
			!regexp.MustCompile(`(?m)^pushed `+regexp.QuoteMeta(ref)+`: digest: sha256:[0-9a-f]{64} size: \d+$`).MatchString(out) {
			t.Errorf("build-push printed:\n%s", out)
		}
		if tags, err := c.Tags(ctx, reg+"/team/hello"); err != nil || len(tags) != 1 || tags[0] != "1" {
			t.Errorf("Tags(%s/team/hello) = %q, %v; want [1]", reg, tags, err)
		}
	})

	t.Run("list-images", func(t *testing.T) {
		out := run(t, "list-images")
		if !strings.HasPrefix(out, "ID") || !strings.Contains(out, "busybox:latest") {
			t.Errorf("list-images printed:\n%s", out)
		}
	})

	t.Run("watch-events", func(t *testing.T) {
		// Replayed events first: the import's tag, among others.
		out := run(t, "watch-events", "-since", "1h", "-n", "1")
		if !regexp.MustCompile(`^\S+ EVENT_ACTION_\S+ `).MatchString(out) {
			t.Errorf("watch-events printed %q, want one event", out)
		}
		// A live event: a tag made while it watches.
		cmd := exec.CommandContext(ctx, filepath.Join(bin, "watch-events"), "-n", "1")
		var live bytes.Buffer
		cmd.Stdout, cmd.Stderr = &live, &live
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		// The watcher may not be subscribed yet: tag until it sees one.
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			if err := c.Tag(ctx, "busybox", "busybox:watched"); err != nil {
				t.Fatalf("Tag = %v", err)
			}
			select {
			case err := <-done:
				if err != nil || !strings.Contains(live.String(), "busybox:watched") {
					t.Errorf("watch-events = %v, printed %q; want the tag", err, live.String())
				}
				return
			case <-tick.C:
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				t.Fatalf("watch-events saw no live event; printed %q", live.String())
			}
		}
	})
}

// The client's errors match their kinds, and a Dockerfile error carries
// its line.
func TestClientErrors(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the services")
	}
	s := harness.StartStack(t, harness.StackOptions{})
	ctx := t.Context()
	c, err := client.New(ctx, client.WithConfig(client.Config{Builder: s.BuilderAddr, Metadata: s.MetadataAddr, Blobstore: s.BlobstoreAddr}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	if _, err := c.Image(ctx, "nothing:here"); !errors.Is(err, client.ErrNotFound) || !client.IsRemote(err) {
		t.Errorf("Image(nothing:here) = %v, want ErrNotFound from the service", err)
	}
	if err := c.Tag(ctx, "nothing:here", "other"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("Tag(nothing:here) = %v, want ErrNotFound", err)
	}
	if err := c.Untag(ctx, "nothing:here"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("Untag(nothing:here) = %v, want ErrNotFound", err)
	}
	if _, err := c.History(ctx, "Not A Reference"); !errors.Is(err, client.ErrInvalidArgument) {
		t.Errorf("History(bad reference) = %v, want ErrInvalidArgument", err)
	} else {
		t.Logf("History(bad reference): reason %q, details %v", client.Reason(err), client.Details(err))
	}

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\nCOPY missing.txt /\nFROB x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = c.Build(ctx, dir, client.BuildOptions{CacheDir: "-"})
	var be *client.BuildError
	if !errors.As(err, &be) || be.Line != 3 || !errors.Is(err, client.ErrInvalidArgument) {
		t.Fatalf("Build(FROB on line 3) = %v (%+v), want a *BuildError at line 3 matching ErrInvalidArgument", err, be)
	}

	down, err := client.New(ctx, client.WithConfig(client.Config{Builder: s.BuilderAddr, Metadata: "127.0.0.1:1", Blobstore: s.BlobstoreAddr}))
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if _, err := down.Images(cctx, client.ListOptions{}); !errors.Is(err, client.ErrUnavailable) || client.IsRemote(err) {
		t.Errorf("Images from no service = %v, want a local ErrUnavailable", err)
	}
}

// buildExamples compiles every example into a directory.
func buildExamples(t *testing.T) string {
	t.Helper()
	bin := t.TempDir()
	cmd := exec.Command("go", "build", "-o", bin+"/", "./build", "./build-push", "./list-images", "./watch-events")
	cmd.Dir = filepath.Join(harness.RepoRoot(t), "examples")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build the examples: %v\n%s", err, out)
	}
	return bin
}
