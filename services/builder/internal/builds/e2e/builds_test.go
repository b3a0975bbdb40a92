// Package e2e tests builds as resources end to end: the builder, metadata
// and blob store on loopback, builds over gRPC, watched, detached and
// canceled from other connections, and built from tar and blob contexts.
package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// grace is the builder's --detached-grace in these tests: long enough to
// reattach, short enough to wait out.
const grace = 10 * time.Second

type stack struct {
	*harness.Stack
}

func startStack(t *testing.T) *stack {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("the builder needs root for overlay mounts and runc")
	}
	s := &stack{harness.StartStack(t, harness.StackOptions{BuilderEnv: []string{"STRATA_DETACHED_GRACE=" + grace.String()}})}
	tar := filepath.Join(t.TempDir(), "rootfs.tar")
	if err := os.WriteFile(tar, harness.BusyboxRootfs(t), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(s.Bin, "strata"), "import", tar, "busybox:latest")
	cmd.Env = append(append(os.Environ(), "HOME="+t.TempDir()), s.Env()...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("strata import: %v\n%s", err, out)
	}
	return s
}

func (s *stack) builds(t *testing.T) builderv1.BuildServiceClient {
	return builderv1.NewBuildServiceClient(s.Dial(t, s.BuilderAddr))
}

// build is a Build stream of a build that needs no context.
type build struct {
	stream grpc.BidiStreamingClient[builderv1.BuildRequest, builderv1.BuildResponse]
	id     string
	events []*builderv1.BuildEvent
}

// startBuild starts a build of dockerfile over its own connection and
// reads up to its ID.
func (s *stack) startBuild(t *testing.T, ctx context.Context, dockerfile string, tags ...string) *build {
	t.Helper()
	stream, err := s.builds(t).Build(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&builderv1.BuildRequest{Request: &builderv1.BuildRequest_Options{Options: &builderv1.BuildOptions{
		DockerfileContent: []byte(dockerfile), Tags: tags,
	}}})
	stream.Send(&builderv1.BuildRequest{Request: &builderv1.BuildRequest_Entries{Entries: &builderv1.ContextEntries{Last: true}}})
	b := &build{stream: stream}
	ev, err := b.next()
	if err != nil {
		t.Fatal(err)
	}
	if b.id = ev.GetAccepted().GetBuildId(); b.id == "" || ev.GetSequence() != 1 {
		t.Fatalf("the first event = %v, want BuildAccepted with sequence 1", ev)
	}
	return b
}

// next returns the next event, skipping context requests; a nil event and
// nil error mean the result came (it is then in b.result).
func (b *build) next() (*builderv1.BuildEvent, error) {
	for {
		resp, err := b.stream.Recv()
		if err != nil {
			return nil, err
		}
		if ev := resp.GetEvent(); ev != nil {
			b.events = append(b.events, ev)
			return ev, nil
		}
		if resp.GetResult() != nil {
			return nil, nil
		}
	}
}

// until reads events until one satisfies ok.
func (b *build) until(t *testing.T, what string, ok func(*builderv1.BuildEvent) bool) {
	t.Helper()
	for {
		ev, err := b.next()
		if err != nil || ev == nil {
			t.Fatalf("the build ended (%v) before %s", err, what)
		}
		if ok(ev) {
			return
		}
	}
}

// rest reads to the end: the result's image ID, or the error.
func (b *build) rest() error {
	for {
		ev, err := b.next()
		if err != nil {
			return err
		}
		if ev == nil {
			return nil
		}
	}
}

// watch watches a build from a sequence number to its end.
func watch(ctx context.Context, c builderv1.BuildServiceClient, id string, from int64) ([]*builderv1.BuildEvent, *builderv1.BuildResult, error) {
	w, err := c.WatchBuild(ctx, &builderv1.WatchBuildRequest{BuildId: id, FromSequence: from})
	if err != nil {
		return nil, nil, err
	}
	var evs []*builderv1.BuildEvent
	for {
		resp, err := w.Recv()
		if err != nil {
			return evs, nil, err
		}
		if r := resp.GetResult(); r != nil {
			return evs, r, nil
		}
		evs = append(evs, resp.GetEvent())
	}
}

func output(ev *builderv1.BuildEvent, s string) bool {
	return strings.Contains(string(ev.GetOutput().GetData()), s)
}

// A second client watching live, and a third replaying the log after the
// end, see exactly the events the build's own stream saw.
func TestWatchBuildSeesTheBuildStreamsEvents(t *testing.T) {
	s := startStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b := s.startBuild(t, ctx, "FROM busybox\nRUN echo one && sleep 1 && echo two\nENV A=1\nRUN echo three\n", "watched:1")

	type watched struct {
		evs []*builderv1.BuildEvent
		res *builderv1.BuildResult
		err error
	}
	live := make(chan watched, 1)
	watcher := s.builds(t)
	go func() {
		evs, res, err := watch(ctx, watcher, b.id, 0)
		live <- watched{evs, res, err}
	}()
	if err := b.rest(); err != nil {
		t.Fatalf("build: %v", err)
	}
	w := <-live
	if w.err != nil {
		t.Fatalf("WatchBuild: %v", w.err)
	}
	if diff := cmp.Diff(b.events, w.evs, protocmp.Transform()); diff != "" {
		t.Errorf("live WatchBuild events (-build stream +watch):\n%s", diff)
	}
	if w.res.GetBuildId() != b.id || w.res.GetImageId() == "" {
		t.Errorf("WatchBuild result = %v, want the build's", w.res)
	}
	evs, _, err := watch(ctx, s.builds(t), b.id, 0)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(b.events, evs, protocmp.Transform()); diff != "" {
		t.Errorf("replayed WatchBuild events (-build stream +watch):\n%s", diff)
	}
	evs, _, err = watch(ctx, s.builds(t), b.id, 3)
	if err != nil || len(evs) == 0 || evs[0].GetSequence() != 4 {
		t.Errorf("WatchBuild from 3 = %v, %v; want the events from sequence 4", evs, err)
	}
	got, err := s.builds(t).GetBuild(ctx, &builderv1.GetBuildRequest{BuildId: b.id})
	if err != nil {
		t.Fatal(err)
	}
	info := got.GetBuild()
	if info.GetState() != builderv1.BuildState_BUILD_STATE_SUCCEEDED || info.GetTotalSteps() != 4 || info.GetImageId() != w.res.GetImageId() ||
		!cmp.Equal(info.GetTags(), []string{"watched:1"}) || info.GetEnded() == nil || info.GetEvents() != int64(len(b.events)) {
		t.Errorf("GetBuild = %v", info)
	}
	list, err := s.builds(t).ListBuilds(ctx, &builderv1.ListBuildsRequest{})
	if err != nil || len(list.GetBuilds()) == 0 || list.GetBuilds()[0].GetId() != b.id {
		t.Errorf("ListBuilds = %v, %v; want this build first", list, err)
	}
	if _, err := s.builds(t).GetBuild(ctx, &builderv1.GetBuildRequest{BuildId: "nope"}); errdefs.Code(err) != codes.NotFound {
		t.Errorf("GetBuild(unknown) = %v, want NOT_FOUND", err)
	}
}

// A build whose client goes away once the build runs keeps running; a
// client that reattaches within the grace gets the rest and the result.
func TestABuildSurvivesItsClientsDisconnect(t *testing.T) {
	s := startStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	clientCtx, drop := context.WithCancel(ctx)
	b := s.startBuild(t, clientCtx, "FROM busybox\nRUN echo started && sleep 2 && echo finished\n", "survivor:1")
	b.until(t, "the RUN step's output", func(ev *builderv1.BuildEvent) bool { return output(ev, "started") })
	seen := b.events[len(b.events)-1].GetSequence()
	drop()

	evs, res, err := watch(ctx, s.builds(t), b.id, seen)
	if err != nil {
		t.Fatalf("WatchBuild after the disconnect: %v", err)
	}
	if res.GetImageId() == "" || !cmp.Equal(res.GetTags(), []string{"survivor:1"}) {
		t.Errorf("result = %v, want the image tagged", res)
	}
	sawFinished := false
	for _, ev := range evs {
		sawFinished = sawFinished || output(ev, "finished")
	}
	if !sawFinished || evs[0].GetSequence() != seen+1 {
		t.Errorf("reattached events %v: want them from %d, with the RUN's later output", evs, seen+1)
	}
	img, err := metadatav1.NewImageServiceClient(s.Dial(t, s.MetadataAddr)).GetImage(ctx, &metadatav1.GetImageRequest{Reference: "survivor:1"})
	if err != nil || img.GetImage().GetId() != res.GetImageId() {
		t.Errorf("GetImage(survivor:1) = %v, %v; want the built image", img, err)
	}
}

// A build nobody watches after its client left is canceled when the grace
// ends.
func TestTheGraceCancelsAnUnwatchedBuild(t *testing.T) {
	s := startStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	clientCtx, drop := context.WithCancel(ctx)
	b := s.startBuild(t, clientCtx, "FROM busybox\nRUN echo started && sleep 120\n", "abandoned:1")
	b.until(t, "the RUN step's output", func(ev *builderv1.BuildEvent) bool { return output(ev, "started") })
	drop()
	c := s.builds(t)
	harness.WaitFor(t, "the grace to cancel the build", grace+30*time.Second, func(ctx context.Context) error {
		got, err := c.GetBuild(ctx, &builderv1.GetBuildRequest{BuildId: b.id})
		if err != nil {
			return err
		}
		if st := got.GetBuild().GetState(); st != builderv1.BuildState_BUILD_STATE_CANCELED {
			return fmt.Errorf("state %v", st)
		}
		return nil
	})
}

// CancelBuild kills the RUN step and the build records nothing: no image,
// no tag, no cache record.
func TestCancelBuildKillsItsRunStepAndRecordsNothing(t *testing.T) {
	s := startStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	meta := metadatav1.NewImageServiceClient(s.Dial(t, s.MetadataAddr))
	images, _ := meta.ListImages(ctx, &metadatav1.ListImagesRequest{})
	caches, _ := meta.ListCacheRecords(ctx, &metadatav1.ListCacheRecordsRequest{})

	marker := fmt.Sprintf("cancel-me-%d", time.Now().UnixNano())
	b := s.startBuild(t, ctx, "FROM busybox\nRUN echo "+marker+" && sleep 117 && echo never\n", "canceled:1")
	b.until(t, "the RUN step's output", func(ev *builderv1.BuildEvent) bool { return output(ev, marker) })
	if !running(marker) {
		t.Fatal("no process runs the RUN step")
	}
	start := time.Now()
	resp, err := s.builds(t).CancelBuild(ctx, &builderv1.CancelBuildRequest{BuildId: b.id})
	if err != nil {
		t.Fatalf("CancelBuild: %v", err)
	}
	if resp.GetBuild().GetId() != b.id {
		t.Errorf("CancelBuild = %v", resp)
	}
	err = b.rest()
	if errdefs.Code(err) != codes.Canceled || !strings.Contains(err.Error(), "canceled by request") {
		t.Errorf("the build stream ended with %v, want CANCELED saying it was canceled by request", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("the build took %v to end after CancelBuild", d)
	}
	if running(marker) {
		t.Error("the RUN step still runs after the build was canceled")
	}
	got, err := s.builds(t).GetBuild(ctx, &builderv1.GetBuildRequest{BuildId: b.id})
	if err != nil || got.GetBuild().GetState() != builderv1.BuildState_BUILD_STATE_CANCELED {
		t.Errorf("GetBuild = %v, %v; want CANCELED", got, err)
	}
	if _, _, err := watch(ctx, s.builds(t), b.id, 0); errdefs.Code(err) != codes.Canceled {
		t.Errorf("WatchBuild of the canceled build ended with %v, want CANCELED", err)
	}
	if _, err := s.builds(t).CancelBuild(ctx, &builderv1.CancelBuildRequest{BuildId: b.id}); errdefs.Code(err) != codes.FailedPrecondition {
		t.Errorf("CancelBuild again = %v, want FAILED_PRECONDITION", err)
	}
	if _, err := meta.GetImage(ctx, &metadatav1.GetImageRequest{Reference: "canceled:1"}); errdefs.Code(err) != codes.NotFound {
		t.Errorf("GetImage(canceled:1) = %v, want NOT_FOUND", err)
	}
	images2, _ := meta.ListImages(ctx, &metadatav1.ListImagesRequest{})
	caches2, _ := meta.ListCacheRecords(ctx, &metadatav1.ListCacheRecordsRequest{})
	if len(images2.GetImages()) != len(images.GetImages()) || len(caches2.GetRecords()) != len(caches.GetRecords()) {
		t.Errorf("images %d -> %d, cache records %d -> %d: the canceled build recorded something",
			len(images.GetImages()), len(images2.GetImages()), len(caches.GetRecords()), len(caches2.GetRecords()))
	}
}

// running reports whether a process's command line holds marker.
func running(marker string) bool {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), marker) && !errors.Is(err, os.ErrNotExist) {
			return true
		}
	}
	return false
}

// A build's start and end appear in the metadata service's event stream.
func TestBuildEventsAppearInWatchEvents(t *testing.T) {
	s := startStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	since := timestamppb.Now()
	ok := s.startBuild(t, ctx, "FROM busybox\nRUN true\n", "evented:1")
	if err := ok.rest(); err != nil {
		t.Fatal(err)
	}
	failed := s.startBuild(t, ctx, "FROM busybox\nRUN exit 4\n", "evented:2")
	if err := failed.rest(); err == nil {
		t.Fatal("a RUN exiting 4 succeeded")
	}
	w, err := metadatav1.NewImageServiceClient(s.Dial(t, s.MetadataAddr)).WatchEvents(ctx, &metadatav1.WatchEventsRequest{Since: since})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	want := []string{
		"BUILD_STARTED " + ok.id, "BUILD_FINISHED " + ok.id,
		"BUILD_STARTED " + failed.id, "BUILD_FAILED " + failed.id + " failed RUN_FAILED",
	}
	for len(got) < len(want) {
		resp, err := w.Recv()
		if err != nil {
			t.Fatalf("WatchEvents after %v: %v", got, err)
		}
		ev := resp.GetEvent()
		a := ev.GetAttributes()
		if a["build_id"] == "" {
			continue // the image events of the successful build
		}
		line := strings.TrimPrefix(ev.GetAction().String(), "EVENT_ACTION_") + " " + a["build_id"]
		if a["state"] != "" {
			line += " " + a["state"] + " " + a["reason"]
		}
		got = append(got, line)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("build events (-want +got):\n%s", diff)
	}
}

// strata builds ls, inspect, logs and cancel, as a user runs them.
func TestBuildsCommands(t *testing.T) {
	s := startStack(t)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM busybox\nRUN echo from-the-log\n"), 0o644)
	cmd := exec.Command(filepath.Join(s.Bin, "strata"), "build", "--progress=plain", "-t", "cli-builds:1", dir)
	cmd.Env = append(append(os.Environ(), "HOME="+t.TempDir()), s.Env()...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("strata build: %v\n%s", err, out)
	}
	id := strings.TrimSpace(s.cli(t, nil, "builds", "ls", "-q"))
	if len(id) != 24 {
		t.Fatalf("strata builds ls -q = %q, want one build ID", id)
	}
	if ls := s.cli(t, nil, "builds", "ls"); !strings.Contains(ls, "succeeded") || !strings.Contains(ls, "cli-builds:1") || !strings.Contains(ls, "2/2") {
		t.Errorf("strata builds ls:\n%s\nwant the build, succeeded, at step 2/2, with its tag", ls)
	}
	if js := s.cli(t, nil, "builds", "inspect", id); !strings.Contains(js, `"state": "BUILD_STATE_SUCCEEDED"`) || !strings.Contains(js, id) {
		t.Errorf("strata builds inspect:\n%s", js)
	}
	if logs := s.cli(t, nil, "builds", "logs", id); !strings.Contains(logs, "from-the-log") || !strings.Contains(logs, "Step 2/2 : RUN echo from-the-log") || !strings.Contains(logs, "Successfully tagged cli-builds:1") {
		t.Errorf("strata builds logs:\n%s\nwant the build's output as strata build printed it", logs)
	}
	c := exec.Command(filepath.Join(s.Bin, "strata"), "builds", "cancel", id)
	c.Env = append(append(os.Environ(), "HOME="+t.TempDir()), s.Env()...)
	if out, err := c.CombinedOutput(); err == nil || !strings.Contains(string(out), "has ended") {
		t.Errorf("strata builds cancel of an ended build: %v\n%s\nwant an error saying it has ended", err, out)
	}
}

// A builder told to stop (SIGTERM) drains its detached builds too: a build
// whose client went away once it ran still finishes and records its image
// before the builder exits.
func TestSIGTERMDrainWaitsForADetachedBuild(t *testing.T) {
	s := startStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	clientCtx, drop := context.WithCancel(ctx)
	b := s.startBuild(t, clientCtx, "FROM busybox\nRUN echo started && sleep 3 && echo finished > /f\n", "drained-detached:1")
	b.until(t, "the RUN step's output", func(ev *builderv1.BuildEvent) bool { return output(ev, "started") })
	drop()
	// The handler returns once the stream is gone; the build goes on.
	time.Sleep(200 * time.Millisecond)
	s.Builder.Terminate()
	if code := s.Builder.Cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("builder exit code after draining: %d, want 0", code)
	}
	img, err := metadatav1.NewImageServiceClient(s.Dial(t, s.MetadataAddr)).GetImage(ctx, &metadatav1.GetImageRequest{Reference: "drained-detached:1"})
	if err != nil || img.GetImage().GetId() == "" {
		t.Errorf("GetImage(drained-detached:1) = %v, %v; want the detached build's image, recorded during the drain", img, err)
	}
}
