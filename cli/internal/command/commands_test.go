package command

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/errdefs"
)

const (
	seedID  = "sha256:cd84152b746847af5c75f3e53d0e19ccdcb17d9e9976961d74ab21c37c5ff89e"
	baseID  = "sha256:3ac2395f119b47af5c75f3e53d0e19ccdcb17d9e9976961d74ab21c37c5ff89e"
	layerID = "sha256:a8ba2ac8552bfb5d40deeba25d7c57d977fc4bface0ed11ed772bbbfe0bb07fc"
)

func notFound(ref string) error {
	return errdefs.ToGRPC(errdefs.NotFound("No such image: %s", ref))
}

func wantRun(t *testing.T, got result, code int, out, errOut string) {
	t.Helper()
	if got.code != code || got.out != out || got.errOut != errOut {
		t.Errorf("exit %d\n--- stdout\n%s--- stderr\n%s\nwant exit %d\n--- stdout\n%s--- stderr\n%s", got.code, got.out, got.errOut, code, out, errOut)
	}
}

func TestHistoryCommand(t *testing.T) {
	f := &fakeServices{
		history: map[string][]*metadatav1.HistoryRow{"my-nginx": {
			{Id: seedID, Created: timestamppb.New(testNow.Add(-time.Second)), CreatedBy: `/bin/sh -c #(nop)  CMD ["nginx" "-g" "daemon off;"]`},
			{Id: "<missing>", Created: timestamppb.New(testNow.Add(-3 * time.Minute)), Size: 1984412, Comment: "Imported from -"},
		}},
		errs: map[string]error{"nosuch": notFound("nosuch:latest")},
	}
	addr := f.serve(t)
	wantRun(t, run(t, addr, "", "image", "history", "my-nginx"), 0,
		"IMAGE          CREATED         CREATED BY                                      SIZE      COMMENT\n"+
			"cd84152b7468   1 second ago    /bin/sh -c #(nop)  CMD [\"nginx\" \"-g\" \"daemon…   0B        \n"+
			"<missing>      3 minutes ago                                                   1.98MB    Imported from -\n", "")
	wantRun(t, run(t, addr, "", "history", "-q", "--no-trunc", "my-nginx"), 0, seedID+"\n<missing>\n", "")
	wantRun(t, run(t, addr, "", "history", "nosuch"), 1, "", "Error: No such image: nosuch:latest\n")
}

func TestImagesCommand(t *testing.T) {
	f := &fakeServices{images: []*metadatav1.ImageSummary{
		{Id: seedID, RepoTags: []string{"my-nginx:latest", "davidainslie/nginx:latest"}, Created: timestamppb.New(testNow.Add(-4 * time.Second)), Size: 1984412},
		{Id: baseID, Created: timestamppb.New(testNow.Add(-10 * 24 * time.Hour)), Size: 1984412},
	}}
	addr := f.serve(t)
	wantRun(t, run(t, addr, "", "images"), 0,
		"REPOSITORY           TAG       IMAGE ID       CREATED         SIZE\n"+
			"davidainslie/nginx   latest    cd84152b7468   4 seconds ago   1.98MB\n"+
			"my-nginx             latest    cd84152b7468   4 seconds ago   1.98MB\n"+
			"<none>               <none>    3ac2395f119b   10 days ago     1.98MB\n", "")
	f.requests = nil
	wantRun(t, run(t, addr, "", "image", "ls", "-a", "-q", "--filter", "dangling=false", "-f", "label=a=b", "my-*"), 0,
		"cd84152b7468\ncd84152b7468\n3ac2395f119b\n", "")
	want := &metadatav1.ListImagesRequest{All: true, Filters: []*metadatav1.Filter{
		{Key: "dangling", Value: "false"}, {Key: "label", Value: "a=b"}, {Key: "reference", Value: "my-*"},
	}}
	if diff := cmp.Diff(want, f.requests[0], protocmp.Transform()); diff != "" {
		t.Errorf("ListImages request (-want +got):\n%s", diff)
	}
}

func TestInspectCommand(t *testing.T) {
	f := &fakeServices{
		inspect: map[string][]byte{"my-nginx": []byte(`{"Id":"` + seedID + `","RepoTags":["my-nginx:latest"],"Config":{"Cmd":["nginx"]}}`)},
		errs:    map[string]error{"nosuch": notFound("nosuch:latest")},
	}
	addr := f.serve(t)
	wantRun(t, run(t, addr, "", "inspect", "my-nginx"), 0,
		"[\n    {\n        \"Id\": \""+seedID+"\",\n        \"RepoTags\": [\n            \"my-nginx:latest\"\n        ],\n        \"Config\": {\n            \"Cmd\": [\n                \"nginx\"\n            ]\n        }\n    }\n]\n", "")
	wantRun(t, run(t, addr, "", "image", "inspect", "-f", "{{.Config.Cmd}}", "my-nginx"), 0, "[nginx]\n", "")
	// As Docker: what exists prints, what does not fails the command.
	wantRun(t, run(t, addr, "", "image", "inspect", "--format", "{{.Id}}", "my-nginx", "nosuch"), 1,
		seedID+"\n", "Error: No such image: nosuch:latest\n")
	wantRun(t, run(t, addr, "", "image", "inspect", "nosuch"), 1, "[]\n", "Error: No such image: nosuch:latest\n")
	if r := run(t, addr, "", "inspect", "--format", "{{.Id", "my-nginx"); r.code != 64 || !strings.Contains(r.errOut, "template parsing error") {
		t.Errorf("inspect with a bad template: exit %d, stderr %q; want 64 and a template parsing error", r.code, r.errOut)
	}
}

func TestTagCommand(t *testing.T) {
	f := &fakeServices{errs: map[string]error{"nosuch": notFound("nosuch:latest")}}
	addr := f.serve(t)
	wantRun(t, run(t, addr, "", "image", "tag", "my-nginx", "davidainslie/nginx"), 0, "", "")
	if diff := cmp.Diff(&metadatav1.TagImageRequest{Source: "my-nginx", Target: "davidainslie/nginx"}, f.requests[0], protocmp.Transform()); diff != "" {
		t.Errorf("TagImage request (-want +got):\n%s", diff)
	}
	wantRun(t, run(t, addr, "", "tag", "nosuch", "x"), 1, "", "Error: No such image: nosuch:latest\n")
}

func TestRemoveCommand(t *testing.T) {
	f := &fakeServices{
		deleted: map[string][]*metadatav1.DeletedItem{
			"davidainslie/nginx": {{Untagged: "davidainslie/nginx:latest"}},
			"my-nginx":           {{Untagged: "my-nginx:latest"}, {Deleted: seedID}, {Deleted: baseID}},
		},
		errs: map[string]error{
			"nosuch": notFound("nosuch:latest"),
			"busy":   errdefs.ToGRPC(errdefs.FailedPrecondition("conflict: unable to remove repository reference \"busy\" (must force)")),
		},
	}
	addr := f.serve(t)
	wantRun(t, run(t, addr, "", "rmi", "davidainslie/nginx", "my-nginx"), 0,
		"Untagged: davidainslie/nginx:latest\nUntagged: my-nginx:latest\nDeleted: "+seedID+"\nDeleted: "+baseID+"\n", "")
	// -f forgives images that do not exist, not other failures.
	wantRun(t, run(t, addr, "", "image", "rm", "-f", "nosuch"), 0, "", "Error: No such image: nosuch:latest\n")
	wantRun(t, run(t, addr, "", "image", "rm", "nosuch"), 1, "", "Error: No such image: nosuch:latest\n")
	wantRun(t, run(t, addr, "", "image", "rm", "-f", "busy"), 1, "", "Error: conflict: unable to remove repository reference \"busy\" (must force)\n")
	f.requests = nil
	run(t, addr, "", "image", "remove", "--force", "--no-prune", "my-nginx")
	if diff := cmp.Diff(&metadatav1.DeleteImageRequest{Reference: "my-nginx", Force: true, NoPrune: true}, f.requests[0], protocmp.Transform()); diff != "" {
		t.Errorf("DeleteImage request (-want +got):\n%s", diff)
	}
}

func TestPruneCommand(t *testing.T) {
	f := &fakeServices{prune: &metadatav1.PruneImagesResponse{
		Items:          []*metadatav1.DeletedItem{{Untagged: "old:1"}, {Deleted: baseID}},
		SpaceReclaimed: 1984412,
	}}
	addr := f.serve(t)
	// No answer is no: nothing is pruned.
	wantRun(t, run(t, addr, "n\n", "image", "prune"), 0,
		"WARNING! This will remove all dangling images.\nAre you sure you want to continue? [y/N] ", "")
	if len(f.requests) != 0 {
		t.Fatalf("prune answered no still called the service: %v", f.requests)
	}
	wantRun(t, run(t, addr, "y\n", "image", "prune", "-a"), 0,
		"WARNING! This will remove all images without at least one container associated to them.\nAre you sure you want to continue? [y/N] "+
			"Deleted Images:\nuntagged: old:1\ndeleted: "+baseID+"\n\nTotal reclaimed space: 1.984MB\n", "")
	f.requests = nil
	f.prune = &metadatav1.PruneImagesResponse{}
	wantRun(t, run(t, addr, "", "image", "prune", "-f", "--filter", "until=24h"), 0, "Total reclaimed space: 0B\n", "")
	if diff := cmp.Diff(&metadatav1.PruneImagesRequest{Filters: []*metadatav1.Filter{{Key: "until", Value: "24h"}}}, f.requests[0], protocmp.Transform()); diff != "" {
		t.Errorf("PruneImages request (-want +got):\n%s", diff)
	}
}

func TestSystemDfCommand(t *testing.T) {
	f := &fakeServices{diskUsage: &metadatav1.GetDiskUsageResponse{
		Images:     &metadatav1.DiskUsage{Total: 2, Active: 1, Size: 1984412, Reclaimable: 0},
		Layers:     &metadatav1.DiskUsage{Total: 3, Active: 3, Size: 1100000},
		BuildCache: &metadatav1.DiskUsage{Total: 9, Size: 182},
	}}
	addr := f.serve(t)
	wantRun(t, run(t, addr, "", "system", "df"), 0,
		"TYPE          TOTAL     ACTIVE    SIZE      RECLAIMABLE\n"+
			"Images        2         1         1.984MB   0B (0%)\n"+
			"Layers        3         3         1.1MB     0B (0%)\n"+
			"Build Cache   9         0         182B      0B\n", "")
}

func TestImportCommand(t *testing.T) {
	f := &fakeServices{}
	addr := f.serve(t)
	tarball := strings.Repeat("rootfs!", 400_000) // several chunks
	path := filepath.Join(t.TempDir(), "rootfs.tar")
	if err := os.WriteFile(path, []byte(tarball), 0o644); err != nil {
		t.Fatal(err)
	}
	wantRun(t, run(t, addr, "", "import", "--change", `CMD ["sh"]`, "-c", "ENV A=1", "-m", "base", path, "busybox:latest"), 0,
		"sha256:5d56863a0d45c730a804941f150fb79b28ab829e32ba9e86ab036cc1ccd89c7d\n", "")
	want := &builderv1.ImportOptions{Reference: "busybox:latest", Changes: []string{`CMD ["sh"]`, "ENV A=1"}, Message: "base"}
	if diff := cmp.Diff(want, f.requests[0], protocmp.Transform()); diff != "" {
		t.Errorf("ImportOptions (-want +got):\n%s", diff)
	}
	if f.received.String() != tarball {
		t.Errorf("the builder received %d bytes, want the %d of the tarball", f.received.Len(), len(tarball))
	}
	f.received.Reset()
	wantRun(t, run(t, addr, "from stdin", "image", "import", "-"), 0, "sha256:5d56863a0d45c730a804941f150fb79b28ab829e32ba9e86ab036cc1ccd89c7d\n", "")
	if f.received.String() != "from stdin" {
		t.Errorf("import - sent %q, want standard input", f.received.String())
	}
	if r := run(t, addr, "", "import", filepath.Join(t.TempDir(), "missing.tar")); r.code != 1 || !strings.Contains(r.errOut, "missing.tar") {
		t.Errorf("import of a missing file: exit %d, stderr %q; want exit 1 naming the file", r.code, r.errOut)
	}
}

func TestLoadCommand(t *testing.T) {
	f := &fakeServices{
		loadResult: &builderv1.LoadResult{Images: []*builderv1.LoadedImage{
			{ImageId: seedID, Tags: []string{"my-nginx:latest", "davidainslie/nginx:latest"}},
			{ImageId: baseID},
		}},
		progress: []*builderv1.TransferProgress{{Id: layerID, Action: builderv1.TransferAction_TRANSFER_ACTION_DOWNLOADING, Current: 5, Total: 10}},
	}
	addr := f.serve(t)
	path := filepath.Join(t.TempDir(), "images.tar")
	if err := os.WriteFile(path, []byte("docker-archive"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Not a terminal: no progress, as Docker.
	wantRun(t, run(t, addr, "", "load", "-i", path), 0,
		"Loaded image: my-nginx:latest\nLoaded image: davidainslie/nginx:latest\nLoaded image ID: "+baseID+"\n", "")
	if !f.requests[0].(*builderv1.LoadOptions).GetQuiet() || f.received.String() != "docker-archive" {
		t.Errorf("load sent options %v and %q", f.requests[0], f.received.String())
	}
}

func TestSaveCommand(t *testing.T) {
	f := &fakeServices{
		archive: []byte(strings.Repeat("archive bytes ", 100)),
		errs:    map[string]error{"nosuch": notFound("nosuch:latest")},
	}
	addr := f.serve(t)
	wantRun(t, run(t, addr, "", "save", "my-nginx", "busybox"), 0, string(f.archive), "")
	if diff := cmp.Diff(&builderv1.SaveRequest{References: []string{"my-nginx", "busybox"}, Format: builderv1.SaveFormat_SAVE_FORMAT_DOCKER}, f.requests[0], protocmp.Transform()); diff != "" {
		t.Errorf("SaveRequest (-want +got):\n%s", diff)
	}
	for _, flags := range [][]string{{"--format", "oci"}, {"--oci"}} {
		wantRun(t, run(t, addr, "", append(append([]string{"save"}, flags...), "my-nginx")...), 0, string(f.archive), "")
		if got := f.requests[len(f.requests)-1].(*builderv1.SaveRequest).GetFormat(); got != builderv1.SaveFormat_SAVE_FORMAT_OCI {
			t.Errorf("save %v asked for %v, want an OCI layout", flags, got)
		}
	}
	wantRun(t, run(t, addr, "", "save", "--format", "zip", "my-nginx"), 125, "", "Error: invalid --format \"zip\": want docker or oci\n")
	dir := t.TempDir()
	out := filepath.Join(dir, "my-nginx.tar")
	wantRun(t, run(t, addr, "", "image", "save", "-o", out, "my-nginx"), 0, "", "")
	if b, err := os.ReadFile(out); err != nil || string(b) != string(f.archive) {
		t.Errorf("save -o wrote %d bytes (%v), want the archive's %d", len(b), err, len(f.archive))
	}
	// A failed save leaves nothing behind.
	failed := filepath.Join(dir, "failed.tar")
	wantRun(t, run(t, addr, "", "image", "save", "-o", failed, "nosuch"), 1, "", "Error: No such image: nosuch:latest\n")
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("after a failed save the directory holds %d entries, want only my-nginx.tar", len(entries))
	}
	// Docker refuses to write an archive to a terminal.
	terminal := true
	var errOut strings.Builder
	c := &CLI{In: strings.NewReader(""), Out: &strings.Builder{}, Err: &errOut, OutTerminal: &terminal}
	if code := execute(context.Background(), c, []string{"--builder", addr, "save", "my-nginx"}); code != 1 ||
		errOut.String() != "Error: cowardly refusing to save to a terminal. Use the -o flag or redirect\n" {
		t.Errorf("save to a terminal: exit %d, stderr %q", code, errOut.String())
	}
}

func TestPullCommand(t *testing.T) {
	f := &fakeServices{
		progress: []*builderv1.TransferProgress{
			{Id: layerID, Action: builderv1.TransferAction_TRANSFER_ACTION_WAITING},
			{Id: layerID, Action: builderv1.TransferAction_TRANSFER_ACTION_DOWNLOADING, Current: 100, Total: 2000},
			{Id: layerID, Action: builderv1.TransferAction_TRANSFER_ACTION_DOWNLOADING, Current: 2000, Total: 2000},
			{Id: layerID, Action: builderv1.TransferAction_TRANSFER_ACTION_VERIFYING},
			{Id: layerID, Action: builderv1.TransferAction_TRANSFER_ACTION_DONE},
		},
		pull: &builderv1.PullResult{ImageId: baseID, ManifestDigest: "sha256:9ae97d36d26566ff84e8893c64a6dc4fe8ca6d1144bf5b87b2b85a32def253c7", BytesFetched: 2000},
	}
	addr := f.serve(t)
	config := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte("team:s3cret"))
	if err := os.WriteFile(filepath.Join(config, "config.json"), []byte(`{"auths":{"localhost:5000":{"auth":"`+auth+`"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", config)
	wantRun(t, run(t, addr, "", "pull", "localhost:5000/team/busybox"), 0,
		"Using default tag: latest\n"+
			"latest: Pulling from team/busybox\n"+
			"a8ba2ac8552b: Waiting\n"+
			"a8ba2ac8552b: Downloading\n"+
			"a8ba2ac8552b: Verifying Checksum\n"+
			"a8ba2ac8552b: Pull complete\n"+
			"Digest: sha256:9ae97d36d26566ff84e8893c64a6dc4fe8ca6d1144bf5b87b2b85a32def253c7\n"+
			"Status: Downloaded newer image for localhost:5000/team/busybox:latest\n"+
			"localhost:5000/team/busybox:latest\n", "")
	want := &builderv1.PullRequest{Reference: "localhost:5000/team/busybox:latest", Auth: &builderv1.RegistryAuth{Username: "team", Password: "s3cret"}}
	if diff := cmp.Diff(want, f.requests[0], protocmp.Transform()); diff != "" {
		t.Errorf("PullRequest (-want +got):\n%s", diff)
	}
	wantRun(t, run(t, addr, "", "image", "pull", "-q", "busybox:1.36"), 0, "docker.io/library/busybox:1.36\n", "")

	// A reference that already named the pulled image is up to date.
	f.existing = map[string]string{"localhost:5000/team/busybox:latest": baseID}
	wantRun(t, run(t, addr, "", "pull", "localhost:5000/team/busybox"), 0,
		"Using default tag: latest\n"+
			"latest: Pulling from team/busybox\n"+
			"a8ba2ac8552b: Waiting\n"+
			"a8ba2ac8552b: Downloading\n"+
			"a8ba2ac8552b: Verifying Checksum\n"+
			"a8ba2ac8552b: Pull complete\n"+
			"Digest: sha256:9ae97d36d26566ff84e8893c64a6dc4fe8ca6d1144bf5b87b2b85a32def253c7\n"+
			"Status: Image is up to date for localhost:5000/team/busybox:latest\n"+
			"localhost:5000/team/busybox:latest\n", "")
	if r := run(t, addr, "", "pull", "Bad:Ref"); r.code != 1 || !strings.Contains(r.errOut, "invalid reference format") {
		t.Errorf("pull Bad:Ref: exit %d, stderr %q", r.code, r.errOut)
	}
}

// Ctrl-C cancels the call in flight on the server and exits 130.
func TestInterruptCancelsTheCall(t *testing.T) {
	f := &fakeServices{block: make(chan struct{}), pull: &builderv1.PullResult{}}
	addr := f.serve(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan result, 1)
	go func() { done <- runCtx(ctx, t, addr, "", "pull", "-q", "busybox") }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		f.mu.Lock()
		started := len(f.requests) > 0
		f.mu.Unlock()
		if started || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	r := <-done
	if r.code != 130 {
		t.Errorf("interrupted pull: exit %d, stderr %q; want 130", r.code, r.errOut)
	}
	for time.Now().Before(deadline) {
		f.mu.Lock()
		canceled := len(f.requests) == 2 && f.requests[1] == "pull canceled"
		f.mu.Unlock()
		if canceled {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Error("the server never saw the pull canceled")
}

func TestPushCommand(t *testing.T) {
	f := &fakeServices{
		progress: []*builderv1.TransferProgress{
			{Id: layerID, Action: builderv1.TransferAction_TRANSFER_ACTION_WAITING},
			{Id: "sha256:b5afda7cbb10879f0e2692c1d4f49206a157633deb9add173fe9da377726d43a", Action: builderv1.TransferAction_TRANSFER_ACTION_EXISTS},
			{Id: layerID, Action: builderv1.TransferAction_TRANSFER_ACTION_UPLOADING, Current: 1, Total: 2},
			{Id: layerID, Action: builderv1.TransferAction_TRANSFER_ACTION_DONE},
		},
		push: &builderv1.PushResult{Reference: "localhost:5000/team/nginx:1.17", ManifestDigest: "sha256:9ae97d36d26566ff84e8893c64a6dc4fe8ca6d1144bf5b87b2b85a32def253c7", ManifestSize: 527},
	}
	addr := f.serve(t)
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	wantRun(t, run(t, addr, "", "push", "localhost:5000/team/nginx:1.17"), 0,
		"The push refers to repository [localhost:5000/team/nginx]\n"+
			"a8ba2ac8552b: Waiting\n"+
			"b5afda7cbb10: Layer already exists\n"+
			"a8ba2ac8552b: Pushing\n"+
			"a8ba2ac8552b: Pushed\n"+
			"1.17: digest: sha256:9ae97d36d26566ff84e8893c64a6dc4fe8ca6d1144bf5b87b2b85a32def253c7 size: 527\n", "")
	if diff := cmp.Diff(&builderv1.PushRequest{Reference: "localhost:5000/team/nginx:1.17"}, f.requests[0], protocmp.Transform()); diff != "" {
		t.Errorf("PushRequest (-want +got):\n%s", diff)
	}
}

func TestVersionFormat(t *testing.T) {
	addr := (&fakeServices{}).serve(t)
	wantRun(t, run(t, addr, "", "version", "--format", "{{.Client.Os}} {{range .Services}}{{.Name}}={{.Status}} {{end}}"), 0,
		"linux builder=SERVING metadata=SERVING blobstore=SERVING \n", "")
	r := run(t, addr, "", "version", "--format", "json")
	var got versionInfo
	if err := json.Unmarshal([]byte(r.out), &got); err != nil || r.code != 0 || got.Client.Version == "" || len(got.Services) != 3 ||
		got.Services[1].Name != "metadata" || got.Services[1].Address != addr || got.Services[1].Status != "SERVING" {
		t.Errorf("version --format json: exit %d, %q (%v)", r.code, r.out, err)
	}
	if r := run(t, addr, "", "version", "--format", "{{.Client"); r.code != 64 || !strings.HasPrefix(r.errOut, "Error: template parsing error") {
		t.Errorf("version with a bad template: exit %d, stderr %q; want 64 and a template parsing error", r.code, r.errOut)
	}
}
