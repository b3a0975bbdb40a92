package command

import (
	"bytes"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/durationpb"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
)

// The classic printer turns the builder's events into the lines Docker's
// classic builder prints (shared/reference/docker-outputs.md).
func TestClassicPrinterPrintsDockerOutput(t *testing.T) {
	const cid = "4f18fb748d28aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	started := func(step int32, text, container, base string) *builderv1.BuildEvent {
		return &builderv1.BuildEvent{Step: step, Event: &builderv1.BuildEvent_Started{Started: &builderv1.StepStarted{
			TotalSteps: 4, Instruction: text, ContainerId: container, BaseImageId: base,
		}}}
	}
	doneEv := func(step int32, id string) *builderv1.BuildEvent {
		return &builderv1.BuildEvent{Step: step, Event: &builderv1.BuildEvent_Done{Done: &builderv1.StepDone{ImageId: id, Duration: durationpb.New(0)}}}
	}
	var out bytes.Buffer
	p := &classicPrinter{out: &out}
	p.context(0, 2048, 2048)
	for _, ev := range []*builderv1.BuildEvent{
		started(1, "FROM busybox:latest", "", "sha256:3ac2395f119b0000"),
		doneEv(1, "sha256:3ac2395f119b0000"),
		started(2, "ENV A=1", "", ""),
		{Step: 2, Event: &builderv1.BuildEvent_Cached{Cached: &builderv1.StepCached{ImageId: "sha256:5d12813067aa0000"}}},
		doneEv(2, "sha256:5d12813067aa0000"),
		started(3, "RUN set -x && echo ok", cid, ""),
		{Step: 3, Event: &builderv1.BuildEvent_Output{Output: &builderv1.StepOutput{Stream: builderv1.OutputStream_OUTPUT_STREAM_STDERR, Data: []byte("+ echo ok\n")}}},
		{Step: 3, Event: &builderv1.BuildEvent_Output{Output: &builderv1.StepOutput{Stream: builderv1.OutputStream_OUTPUT_STREAM_STDOUT, Data: []byte("ok\n")}}},
		doneEv(3, "sha256:cb91398e6e930000"),
		started(4, "COPY . /app", "", ""),
		doneEv(4, "sha256:cd84152b74680000"),
	} {
		p.event(ev)
	}
	p.result(&builderv1.BuildResult{ImageId: "sha256:cd84152b74680000", Tags: []string{"my-nginx:latest"}})
	want := `Sending build context to Strata builder  0B (of 2.048kB; the builder has all of it)

Step 1/4 : FROM busybox:latest
 ---> 3ac2395f119b
Step 2/4 : ENV A=1
 ---> Using cache
 ---> 5d12813067aa
Step 3/4 : RUN set -x && echo ok
 ---> Running in 4f18fb748d28
+ echo ok
ok
Removing intermediate container 4f18fb748d28
 ---> cb91398e6e93
Step 4/4 : COPY . /app
 ---> cd84152b7468
Successfully built cd84152b7468
Successfully tagged my-nginx:latest
`
	if diff := cmp.Diff(want, out.String()); diff != "" {
		t.Errorf("output (-want +got):\n%s", diff)
	}
}

// The context line says what travels to the builder: all of it the first
// time (each content once), then only what changed, out of how much.
func TestSendingLineSaysWhatMoves(t *testing.T) {
	for _, tc := range []struct {
		sending, unique, total int64
		want                   string
	}{
		{2048, 2048, 2048, "Sending build context to Strata builder  2.048kB"},
		{50_800_000, 50_800_000, 68_200_000, "Sending build context to Strata builder  50.8MB"},
		{326, 50_800_000, 68_200_000, "Sending build context to Strata builder  326B (of 68.2MB; the builder has the rest)"},
		{0, 50_800_000, 68_200_000, "Sending build context to Strata builder  0B (of 68.2MB; the builder has all of it)"},
	} {
		if got := sendingLine(tc.sending, tc.unique, tc.total); got != tc.want {
			t.Errorf("sendingLine(%d, %d, %d) = %q, want %q", tc.sending, tc.unique, tc.total, got, tc.want)
		}
	}
}
