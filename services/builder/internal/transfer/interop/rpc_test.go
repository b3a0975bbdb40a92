package interop

import (
	"context"
	"errors"
	"io"
	"os"
	"testing"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/harness"
)

// The five RPCs of the strata-builder binary, over gRPC: import a stream,
// push and pull with progress, save, load; errors keep their kinds.
func TestTransferRPCs(t *testing.T) {
	e := newEnv(t)
	client := e.builder(t)
	ctx := context.Background()
	reg := harness.StartRegistry(t)
	ref := reg + "/rpc/busybox:1"

	imp, err := client.Import(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := imp.Send(&builderv1.ImportRequest{Request: &builderv1.ImportRequest_Options{Options: &builderv1.ImportOptions{Reference: ref}}}); err != nil {
		t.Fatal(err)
	}
	rootfs, err := os.ReadFile(busyboxRootfs(t))
	if err != nil {
		t.Fatal(err)
	}
	for len(rootfs) > 0 {
		n := min(len(rootfs), 256<<10)
		if err := imp.Send(&builderv1.ImportRequest{Request: &builderv1.ImportRequest_Data{Data: rootfs[:n]}}); err != nil {
			t.Fatal(err)
		}
		rootfs = rootfs[n:]
	}
	imp.CloseSend()
	var imported *builderv1.ImportResult
	for {
		resp, err := imp.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Import: %v", err)
		}
		if r := resp.GetResult(); r != nil {
			imported = r
		}
	}
	if imported == nil || imported.GetReference() != ref {
		t.Fatalf("Import result = %v, want the tag %s", imported, ref)
	}

	push, err := client.Push(ctx, &builderv1.PushRequest{Reference: ref})
	if err != nil {
		t.Fatal(err)
	}
	actions := map[builderv1.TransferAction]int{}
	var pushed *builderv1.PushResult
	for {
		resp, err := push.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Push: %v", err)
		}
		if p := resp.GetProgress(); p != nil {
			actions[p.GetAction()]++
		}
		if r := resp.GetResult(); r != nil {
			pushed = r
		}
	}
	if pushed == nil || pushed.GetManifestDigest() == "" || pushed.GetBytesSent() == 0 || actions[builderv1.TransferAction_TRANSFER_ACTION_DONE] != 1 {
		t.Errorf("Push = %v with progress %v, want a digest, bytes sent and one layer done", pushed, actions)
	}

	pull, err := client.Pull(ctx, &builderv1.PullRequest{Reference: ref})
	if err != nil {
		t.Fatal(err)
	}
	var pulled *builderv1.PullResult
	for {
		resp, err := pull.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Pull: %v", err)
		}
		if r := resp.GetResult(); r != nil {
			pulled = r
		}
	}
	if pulled.GetImageId() != imported.GetImageId() || pulled.GetManifestDigest() != pushed.GetManifestDigest() || pulled.GetBytesFetched() != 0 {
		t.Errorf("Pull = %v, want image %s, manifest %s and nothing fetched", pulled, imported.GetImageId(), pushed.GetManifestDigest())
	}

	save, err := client.Save(ctx, &builderv1.SaveRequest{References: []string{ref}, Format: builderv1.SaveFormat_SAVE_FORMAT_OCI})
	if err != nil {
		t.Fatal(err)
	}
	var archive []byte
	for {
		resp, err := save.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Save: %v", err)
		}
		archive = append(archive, resp.GetData()...)
	}
	load, err := client.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	load.Send(&builderv1.LoadRequest{Request: &builderv1.LoadRequest_Options{Options: &builderv1.LoadOptions{Quiet: true}}})
	load.Send(&builderv1.LoadRequest{Request: &builderv1.LoadRequest_Data{Data: archive}})
	load.CloseSend()
	var loaded *builderv1.LoadResult
	for {
		resp, err := load.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		if resp.GetProgress() != nil {
			t.Errorf("a quiet load sent progress")
		}
		if r := resp.GetResult(); r != nil {
			loaded = r
		}
	}
	if len(loaded.GetImages()) != 1 || loaded.GetImages()[0].GetImageId() != imported.GetImageId() || loaded.GetImages()[0].GetTags()[0] != ref {
		t.Errorf("Load = %v", loaded)
	}

	missing, err := client.Pull(ctx, &builderv1.PullRequest{Reference: reg + "/rpc/nope:1"})
	if err == nil {
		_, err = missing.Recv()
	}
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Pull(unknown) = %v, want NOT_FOUND", err)
	}
}
