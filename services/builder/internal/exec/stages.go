package exec

import (
	"context"
	"sync"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/services/builder/internal/plan"
)

// DefaultParallelStages is how many stages of one build run at once when
// the builder is not told (its flag --parallel-stages).
const DefaultParallelStages = 4

// stages runs the plan's stages, each as soon as the stages it builds on
// (its base, the sources of its COPY --from and its RUN --mount from=)
// are done, at most
// Options.ParallelStages at a time, as BuildKit runs independent stages.
// The first error cancels ctx, through cancel, stopping the others, and is
// the one returned. Stage results are what a sequential run makes: a
// stage reads only the results of stages it waited for. ctx outlives the
// stages (the layer uploads they start go on under it), so the caller
// cancels it when the build is over.
func (r *run) stages(ctx context.Context, cancel context.CancelFunc) error {
	limit := max(r.o.ParallelStages, 1)
	r.prep = make(chan struct{}, limit)
	done := map[*plan.Stage]chan struct{}{}
	for _, sp := range r.pl.Stages {
		done[sp] = make(chan struct{})
	}
	var (
		once  sync.Once
		first error
		wg    sync.WaitGroup
	)
	fail := func(err error) {
		once.Do(func() { first = err })
		cancel()
	}
	slots := make(chan struct{}, limit)
	for _, sp := range r.pl.Stages {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer r.seq.finish(sp)
			for _, dep := range dependencies(sp) {
				select {
				case <-done[dep]:
				case <-ctx.Done():
					return
				}
			}
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return
			}
			cur, err := r.stage(ctx, sp)
			<-slots
			if err != nil {
				fail(err)
				return
			}
			r.mu.Lock()
			r.results[sp] = cur
			r.mu.Unlock()
			close(done[sp])
		}()
	}
	wg.Wait()
	r.seq.flush()
	if first == nil {
		// Canceled from outside before any stage failed.
		first = ctx.Err()
	}
	return first
}

// dependencies are the stages sp needs done before it starts: its base,
// and those its COPY --from and RUN --mount from= read.
func dependencies(sp *plan.Stage) []*plan.Stage {
	var deps []*plan.Stage
	if sp.BaseStage != nil {
		deps = append(deps, sp.BaseStage)
	}
	for _, st := range sp.Steps {
		if st.Copy != nil && st.Copy.FromStage != nil {
			deps = append(deps, st.Copy.FromStage)
		}
		for _, m := range st.Mounts {
			if m.FromStage != nil {
				deps = append(deps, m.FromStage)
			}
		}
	}
	return deps
}

// sequencer passes a build's events on in the order a sequential build
// sends them, whatever order parallel stages make them in: the events of
// the first unfinished stage go through as they come, a later stage's
// wait until every stage before it has finished. So `Step N/M` lines and
// the output under them read as Docker's classic builder prints them,
// while the stages run at once. A live sequencer holds nothing: it only
// sends one event at a time.
type sequencer struct {
	mu    sync.Mutex
	send  Events
	live  bool
	order []*plan.Stage // the plan's stages
	of    map[int32]int // a step number's stage, by position in order
	front int           // the first stage not finished
	ended map[*plan.Stage]bool
	held  map[int][]*builderv1.BuildEvent
}

func newSequencer(pl *plan.Plan, send Events, live bool) *sequencer {
	s := &sequencer{send: send, live: live, order: pl.Stages, of: map[int32]int{}, ended: map[*plan.Stage]bool{}, held: map[int][]*builderv1.BuildEvent{}}
	for i, sp := range pl.Stages {
		s.of[int32(sp.Number)] = i
		for _, st := range sp.Steps {
			s.of[int32(st.Number)] = i
		}
	}
	return s
}

// event passes ev on, or holds it until its stage is the first unfinished
// one. Events of no step go through at once.
func (s *sequencer) event(ev *builderv1.BuildEvent) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.of[ev.GetStep()]
	if s.live || !ok || i <= s.front {
		s.send(ev)
		return
	}
	s.held[i] = append(s.held[i], ev)
}

// finish marks sp's events all sent, and passes on those of the stages
// after it that are now first.
func (s *sequencer) finish(sp *plan.Stage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ended[sp] = true
	for s.front < len(s.order) && s.ended[s.order[s.front]] {
		s.front++
		s.release(s.front)
	}
}

// flush passes on everything held, in stage order: once the build ended,
// a failed stage's output must reach the caller even if a stage before it
// was cancelled.
func (s *sequencer) flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := s.front; i < len(s.order); i++ {
		s.release(i)
	}
}

// release sends the events held for stage i. s.mu is held.
func (s *sequencer) release(i int) {
	for _, ev := range s.held[i] {
		s.send(ev)
	}
	delete(s.held, i)
}
