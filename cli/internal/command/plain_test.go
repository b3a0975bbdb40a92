package command

import (
	"bytes"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/strata-build/strata/client"
	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
)

// The plain printer prints BuildKit's plain progress: steps of two stages
// that run at once interleave, every line numbered for its step, the step
// left marked "...", and its header printed again when its lines resume.
func TestPlainPrinterInterleavesStages(t *testing.T) {
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := func() time.Time { return clock }
	tick := func(ms int) { clock = clock.Add(time.Duration(ms) * time.Millisecond) }
	started := func(step, stage int32, name string, i, n int32, text string, line int32) *builderv1.BuildEvent {
		return &builderv1.BuildEvent{Step: step, Event: &builderv1.BuildEvent_Started{Started: &builderv1.StepStarted{
			TotalSteps: 5, Instruction: text, StageIndex: stage, StageName: name, StageStep: i, StageSteps: n, Line: line,
		}}}
	}
	output := func(step int32, line string) *builderv1.BuildEvent {
		return &builderv1.BuildEvent{Step: step, Event: &builderv1.BuildEvent_Output{Output: &builderv1.StepOutput{Data: []byte(line + "\n")}}}
	}
	doneEv := func(step int32) *builderv1.BuildEvent {
		return &builderv1.BuildEvent{Step: step, Event: &builderv1.BuildEvent_Done{Done: &builderv1.StepDone{}}}
	}
	var out bytes.Buffer
	p := newPlainPrinter(&out, now)
	p.context(10, 10, 10)
	tick(100)
	for _, ev := range []*builderv1.BuildEvent{
		started(1, 0, "a", 1, 2, "FROM busybox AS a", 0),
		{Step: 1, Event: &builderv1.BuildEvent_Cached{Cached: &builderv1.StepCached{}}},
		doneEv(1),
		started(3, 1, "", 1, 2, "FROM busybox", 0),
		doneEv(3),
		started(2, 0, "a", 2, 2, "RUN echo a1; sleep 1; echo a2", 2),
		output(2, "a1"),
		started(4, 1, "", 2, 2, "RUN echo b1", 4),
		output(4, "b1"),
		output(2, "a2"),
		doneEv(4),
		doneEv(2),
	} {
		tick(250)
		p.event(ev)
	}
	p.result(&builderv1.BuildResult{ImageId: "sha256:cd84", Tags: []string{"app:latest"}})
	want := `#1 [internal] load build context
#1 transferring context: 10B
#1 DONE 0.3s

#2 [a 1/2] FROM busybox AS a
#2 CACHED

#3 [stage-1 1/2] FROM busybox
#3 DONE 0.2s

#4 [a 2/2] RUN echo a1; sleep 1; echo a2
#4 0.250 a1
#4 ...

#5 [stage-1 2/2] RUN echo b1
#5 0.250 b1
#5 ...

#4 [a 2/2] RUN echo a1; sleep 1; echo a2
#4 1.000 a2
#4 ...

#5 [stage-1 2/2] RUN echo b1
#5 DONE 0.8s

#4 [a 2/2] RUN echo a1; sleep 1; echo a2
#4 DONE 1.5s

#6 exporting to image
#6 writing image sha256:cd84 done
#6 naming to app:latest done
#6 DONE 0.0s
`
	if diff := cmp.Diff(want, out.String()); diff != "" {
		t.Errorf("plain progress (-want +got):\n%s", diff)
	}
}

// A failed build ends the step its error names by line with ERROR, and
// the steps it stopped with CANCELED; a stage's name is left out when the
// build has one stage.
func TestPlainPrinterFailure(t *testing.T) {
	now := func() time.Time { return time.Time{} }
	var out bytes.Buffer
	p := newPlainPrinter(&out, now)
	for _, ev := range []*builderv1.BuildEvent{
		{Step: 2, Event: &builderv1.BuildEvent_Started{Started: &builderv1.StepStarted{TotalSteps: 12, Instruction: "RUN exit 3", StageStep: 2, StageSteps: 12, Line: 2}}},
		{Step: 3, Event: &builderv1.BuildEvent_Started{Started: &builderv1.StepStarted{TotalSteps: 12, Instruction: "RUN sleep 9", StageStep: 3, StageSteps: 12, Line: 3}}},
	} {
		p.event(ev)
	}
	p.fail(&client.BuildError{Line: 2, Message: "Dockerfile:2: The command 'exit 3' returned a non-zero code: 3\nlast output:\nx"})
	want := `#1 [ 2/12] RUN exit 3
#1 ...

#2 [ 3/12] RUN sleep 9
#2 CANCELED

#1 [ 2/12] RUN exit 3
#1 ERROR: Dockerfile:2: The command 'exit 3' returned a non-zero code: 3
`
	if diff := cmp.Diff(want, out.String()); diff != "" {
		t.Errorf("plain progress of a failure (-want +got):\n%s", diff)
	}
}
