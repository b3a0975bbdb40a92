// Package builds holds the builder's builds as resources: each has an ID,
// a state, and the log of every event it sent, so that a client other than
// the one that started it can list it, watch it from any point of its log,
// or cancel it, and a build outlives its client's stream for a grace
// period.
package builds

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/errdefs"
)

// Causes of a build's cancellation, as context.Cause reports them.
var (
	// ErrCanceledByRequest: CancelBuild.
	ErrCanceledByRequest = errors.New("canceled by request")
	// ErrNoWatcher: the grace after the last client went away ended.
	ErrNoWatcher = errors.New("no client watched the build for the detached grace")
)

// Registry holds the running builds and the last ended ones.
type Registry struct {
	grace time.Duration
	keep  int

	mu     sync.Mutex
	byID   map[string]*Build
	recent []*Build // in creation order
}

// NewRegistry returns a Registry whose builds wait grace for a watcher
// after their last one leaves, and which remembers the keep most recent
// ended builds.
func NewRegistry(grace time.Duration, keep int) *Registry {
	return &Registry{grace: grace, keep: max(keep, 1), byID: map[string]*Build{}}
}

// Start records a new build, queued, that cancel cancels (with a cause).
func (r *Registry) Start(tags []string, requester string, cancel context.CancelCauseFunc) *Build {
	var id [12]byte
	rand.Read(id[:])
	b := &Build{
		reg:     r,
		cancel:  cancel,
		done:    make(chan struct{}),
		changed: make(chan struct{}),
		info: &builderv1.Build{
			Id:        hex.EncodeToString(id[:]),
			State:     builderv1.BuildState_BUILD_STATE_QUEUED,
			Tags:      slices.Clone(tags),
			Requester: requester,
			Created:   timestamppb.Now(),
		},
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.byID[b.info.Id] = b
	r.recent = append(r.recent, b)
	r.trim()
	return b
}

// trim forgets the oldest ended builds beyond keep. r.mu is held.
func (r *Registry) trim() {
	ended := 0
	for _, b := range r.recent {
		if b.Ended() {
			ended++
		}
	}
	kept := r.recent[:0]
	for _, b := range r.recent {
		if ended > r.keep && b.Ended() {
			ended--
			delete(r.byID, b.ID())
			continue
		}
		kept = append(kept, b)
	}
	clear(r.recent[len(kept):])
	r.recent = kept
}

// Get returns the build with the ID, or an error matching
// errdefs.ErrNotFound.
func (r *Registry) Get(id string) (*Build, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b, ok := r.byID[id]
	if !ok {
		return nil, errdefs.NotFound("build %q: no such build on this builder", id).WithReason("BUILD_NOT_FOUND")
	}
	return b, nil
}

// List returns the builds, newest first.
func (r *Registry) List() []*Build {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := slices.Clone(r.recent)
	slices.Reverse(out)
	return out
}

// Build is one build. Its methods are safe for concurrent use.
type Build struct {
	reg    *Registry
	cancel context.CancelCauseFunc

	// send serializes the events' appends with the sends of the client
	// that started the build, so that it sees them in log order.
	send sync.Mutex

	mu        sync.Mutex
	info      *builderv1.Build
	log       []*builderv1.BuildEvent
	logBytes  int                               // RUN output bytes sent
	truncated bool                              // the log holds no more output
	primary   func(*builderv1.BuildEvent) error // the starting client's stream, until it fails
	watchers  int
	detach    bool // the build may outlive its watchers
	timer     *time.Timer
	changed   chan struct{} // closed and replaced when the log grows or the build ends
	done      chan struct{}
	result    *builderv1.BuildResult
	err       error
}

// ID returns the build's ID.
func (b *Build) ID() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.info.Id
}

// Requester returns who started the build.
func (b *Build) Requester() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.info.Requester
}

// Ended reports whether the build has ended.
func (b *Build) Ended() bool {
	select {
	case <-b.done:
		return true
	default:
		return false
	}
}

// Done is closed when the build ends.
func (b *Build) Done() <-chan struct{} { return b.done }

// Info returns a snapshot of the build.
func (b *Build) Info() *builderv1.Build {
	b.mu.Lock()
	defer b.mu.Unlock()
	info := proto.Clone(b.info).(*builderv1.Build)
	info.Attached = b.primary != nil || b.watchers > 0
	info.Events = int64(len(b.log))
	return info
}

// Attach makes send the receiver of the build's events as they are
// logged, in order, from the next one on; it stands for the client that
// started the build. When send fails, the client counts as gone.
func (b *Build) Attach(send func(*builderv1.BuildEvent) error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.primary = send
}

// Detach says the starting client went away.
func (b *Build) Detach() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.primary = nil
	b.idle()
}

// Detachable says the build no longer needs its starting client (its
// context is in): from now on it is canceled only when it has had no
// client for the grace.
func (b *Build) Detachable() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.detach = true
	b.idle()
}

// idle starts the grace when nobody watches. b.mu is held.
func (b *Build) idle() {
	if !b.detach || b.primary != nil || b.watchers > 0 || b.timer != nil || b.Ended() {
		return
	}
	b.timer = time.AfterFunc(b.reg.grace, func() { b.cancel(ErrNoWatcher) })
}

// busy stops the grace. b.mu is held.
func (b *Build) busy() {
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
}

// MaxLogBytes bounds the RUN output a build's log keeps: past it, output
// lines still reach the client that started the build, unnumbered, but
// WatchBuild no longer sees them (a warning in the log says so). The
// other events are always kept.
const MaxLogBytes = 16 << 20

// Send logs ev, numbering it, and sends it to the starting client.
func (b *Build) Send(ev *builderv1.BuildEvent) {
	b.send.Lock()
	defer b.send.Unlock()
	b.mu.Lock()
	if out := ev.GetOutput(); out != nil {
		b.logBytes += len(out.GetData())
	}
	if ev.GetOutput() == nil || b.logBytes <= MaxLogBytes {
		b.append(ev)
	} else if !b.truncated {
		b.truncated = true
		b.append(&builderv1.BuildEvent{Step: ev.GetStep(), Event: &builderv1.BuildEvent_Warning{Warning: &builderv1.BuildWarning{
			Message: fmt.Sprintf("[warning]: the build's log is over %d MiB: later RUN output is not kept for WatchBuild", MaxLogBytes>>20),
		}}})
	}
	primary := b.primary
	b.mu.Unlock()
	if primary != nil && primary(ev) != nil {
		b.Detach()
	}
}

// append numbers ev and adds it to the log. b.mu is held.
func (b *Build) append(ev *builderv1.BuildEvent) {
	ev.Sequence = int64(len(b.log) + 1)
	b.log = append(b.log, ev)
	b.note(ev)
	close(b.changed)
	b.changed = make(chan struct{})
}

// SendOther sends a message that is not part of the log (a context
// request) to the starting client, in order with the events.
func (b *Build) SendOther(send func() error) error {
	b.send.Lock()
	defer b.send.Unlock()
	return send()
}

// note updates the build's summary with ev. b.mu is held.
func (b *Build) note(ev *builderv1.BuildEvent) {
	switch e := ev.GetEvent().(type) {
	case *builderv1.BuildEvent_Queued:
		b.info.QueueAhead = e.Queued.GetAhead()
	case *builderv1.BuildEvent_Started:
		b.info.TotalSteps = e.Started.GetTotalSteps()
		b.info.CurrentStep = ev.GetStep()
	case *builderv1.BuildEvent_Cached:
		b.info.CacheHits++
	}
}

// Running says the build has its slot.
func (b *Build) Running() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.info.State = builderv1.BuildState_BUILD_STATE_RUNNING
	b.info.Started = timestamppb.Now()
	b.info.QueueAhead = 0
}

// Finish ends the build with its result or its error; canceled says the
// error is a cancellation.
func (b *Build) Finish(res *builderv1.BuildResult, err error, canceled bool) {
	b.mu.Lock()
	b.busy()
	b.info.Ended = timestamppb.Now()
	switch {
	case err == nil:
		b.info.State = builderv1.BuildState_BUILD_STATE_SUCCEEDED
		b.info.ImageId = res.GetImageId()
	case canceled:
		b.info.State = builderv1.BuildState_BUILD_STATE_CANCELED
		b.info.Error = err.Error()
	default:
		b.info.State = builderv1.BuildState_BUILD_STATE_FAILED
		b.info.Error = err.Error()
	}
	b.result, b.err = res, err
	close(b.done)
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
	b.reg.mu.Lock()
	b.reg.trim()
	b.reg.mu.Unlock()
}

// Outcome returns the build's result or error once it has ended.
func (b *Build) Outcome() (*builderv1.BuildResult, error) {
	<-b.done
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.result, b.err
}

// Cancel cancels the build with cause; FAILED_PRECONDITION when it has
// ended.
func (b *Build) Cancel(cause error) error {
	if b.Ended() {
		return errdefs.FailedPrecondition("build %s has ended", b.ID()).WithReason("BUILD_ENDED")
	}
	b.cancel(cause)
	return nil
}

// Watch sends the build's logged events after sequence from, then each
// new one, until the build ends (returning its result or error) or ctx
// ends. While it watches, the build is not canceled for want of a client.
func (b *Build) Watch(ctx context.Context, from int64, send func(*builderv1.BuildEvent) error) (*builderv1.BuildResult, error) {
	b.mu.Lock()
	b.watchers++
	b.busy()
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		b.watchers--
		b.idle()
		b.mu.Unlock()
	}()
	next := max(from, 0)
	for {
		b.mu.Lock()
		evs := b.log[min(next, int64(len(b.log))):]
		changed := b.changed
		ended := b.Ended()
		b.mu.Unlock()
		for _, ev := range evs {
			if err := send(ev); err != nil {
				return nil, err
			}
			next = ev.GetSequence()
		}
		if ended && len(evs) == 0 {
			return b.Outcome()
		}
		if len(evs) > 0 {
			continue
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
