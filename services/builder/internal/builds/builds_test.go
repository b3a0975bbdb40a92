package builds

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/errdefs"
)

func step(n int32) *builderv1.BuildEvent {
	return &builderv1.BuildEvent{Step: n, Event: &builderv1.BuildEvent_Started{Started: &builderv1.StepStarted{TotalSteps: 3}}}
}

func TestWatchSeesTheLogThenLiveEventsThenTheEnd(t *testing.T) {
	r := NewRegistry(time.Hour, 10)
	b := r.Start([]string{"app"}, "alice", func(error) {})
	var primary []int64
	b.Attach(func(ev *builderv1.BuildEvent) error { primary = append(primary, ev.GetSequence()); return nil })
	b.Send(step(1))
	b.Send(step(2))

	got := make(chan []int64)
	go func() {
		var seqs []int64
		res, err := b.Watch(context.Background(), 1, func(ev *builderv1.BuildEvent) error { seqs = append(seqs, ev.GetSequence()); return nil })
		if err != nil || res.GetImageId() != "sha256:1" {
			t.Errorf("Watch = %v, %v; want the result", res, err)
		}
		got <- seqs
	}()
	b.Send(step(3))
	b.Finish(&builderv1.BuildResult{ImageId: "sha256:1"}, nil, false)
	if diff := cmp.Diff([]int64{2, 3}, <-got); diff != "" {
		t.Errorf("watched from 1 (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]int64{1, 2, 3}, primary); diff != "" {
		t.Errorf("primary (-want +got):\n%s", diff)
	}
	info := b.Info()
	if info.GetState() != builderv1.BuildState_BUILD_STATE_SUCCEEDED || info.GetCurrentStep() != 3 || info.GetEvents() != 3 {
		t.Errorf("Info() = %v", info)
	}
}

func TestGraceCancelsABuildNobodyWatches(t *testing.T) {
	r := NewRegistry(10*time.Millisecond, 10)
	canceled := make(chan error, 1)
	b := r.Start(nil, "", func(cause error) { canceled <- cause })
	b.Attach(func(*builderv1.BuildEvent) error { return errors.New("gone") })
	b.Send(step(1)) // fails: the client is gone, but the context is not in yet
	select {
	case <-canceled:
		t.Fatal("canceled before the build could outlive its client")
	case <-time.After(50 * time.Millisecond):
	}
	b.Detachable()
	if cause := <-canceled; !errors.Is(cause, ErrNoWatcher) {
		t.Errorf("canceled with %v, want ErrNoWatcher", cause)
	}
}

func TestAWatcherStopsTheGrace(t *testing.T) {
	r := NewRegistry(10*time.Millisecond, 10)
	b := r.Start(nil, "", func(cause error) { t.Errorf("canceled (%v) while watched", cause) })
	b.Detachable()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.Watch(ctx, 0, func(*builderv1.BuildEvent) error { return nil })
	}()
	// The grace may have started before the watcher came; once it
	// watches, the build ends normally.
	b.Finish(&builderv1.BuildResult{}, nil, false)
	<-done
	cancel()
}

func TestRegistryKeepsTheLastEndedBuilds(t *testing.T) {
	r := NewRegistry(time.Hour, 2)
	var ids []string
	for range 4 {
		b := r.Start(nil, "", func(error) {})
		b.Finish(nil, errors.New("failed"), false)
		ids = append(ids, b.ID())
	}
	running := r.Start(nil, "", func(error) {})
	if _, err := r.Get(ids[0]); !errdefs.IsNotFound(err) {
		t.Errorf("Get(oldest) = %v, want NOT_FOUND", err)
	}
	var listed []string
	for _, b := range r.List() {
		listed = append(listed, b.ID())
	}
	if diff := cmp.Diff([]string{running.ID(), ids[3], ids[2]}, listed); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}
	if err := r.List()[1].Cancel(ErrCanceledByRequest); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Cancel(ended) = %v, want FAILED_PRECONDITION", err)
	}
}

func TestQueuedBuildsReportTheirPlace(t *testing.T) {
	b := NewRegistry(time.Hour, 1).Start(nil, "", func(error) {})
	b.Send(&builderv1.BuildEvent{Event: &builderv1.BuildEvent_Queued{Queued: &builderv1.BuildQueued{Ahead: 2}}})
	if info := b.Info(); info.GetState() != builderv1.BuildState_BUILD_STATE_QUEUED || info.GetQueueAhead() != 2 {
		t.Errorf("queued with 2 ahead: Info() = %v", info)
	}
	b.Running()
	if info := b.Info(); info.GetState() != builderv1.BuildState_BUILD_STATE_RUNNING || info.GetQueueAhead() != 0 || info.GetStarted() == nil {
		t.Errorf("running: Info() = %v", info)
	}
}

func TestTheLogKeepsAtMostMaxLogBytesOfOutput(t *testing.T) {
	b := NewRegistry(time.Hour, 1).Start(nil, "", func(error) {})
	var primary int
	b.Attach(func(*builderv1.BuildEvent) error { primary++; return nil })
	line := make([]byte, 1<<20)
	for range MaxLogBytes>>20 + 3 {
		b.Send(&builderv1.BuildEvent{Step: 1, Event: &builderv1.BuildEvent_Output{Output: &builderv1.StepOutput{Data: line}}})
	}
	b.Send(step(2))
	b.Finish(&builderv1.BuildResult{}, nil, false)
	var outputs, warnings int
	var last *builderv1.BuildEvent
	b.Watch(context.Background(), 0, func(ev *builderv1.BuildEvent) error {
		if ev.GetOutput() != nil {
			outputs++
		}
		if ev.GetWarning() != nil {
			warnings++
		}
		last = ev
		return nil
	})
	if outputs != MaxLogBytes>>20 || warnings != 1 || last.GetStep() != 2 || primary != MaxLogBytes>>20+4 {
		t.Errorf("logged %d outputs and %d warnings, last %v, primary saw %d; want %d outputs, one warning, step 2 last, every event to the primary",
			outputs, warnings, last, primary, MaxLogBytes>>20)
	}
}
