package exec

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
)

// A RUN step's output becomes one event per line (a line longer than
// maxLine in pieces, a last line without a newline at Flush), and the
// error of a failed step shows the last lines, stderr's first.
func TestLineWriter(t *testing.T) {
	var got []string
	events := func(ev *builderv1.BuildEvent) {
		if ev.GetStep() != 3 {
			t.Errorf("event of step %d, want 3", ev.GetStep())
		}
		got = append(got, string(ev.GetOutput().GetData()))
	}
	out := newLineWriter(3, builderv1.OutputStream_OUTPUT_STREAM_STDOUT, events)
	errw := newLineWriter(3, builderv1.OutputStream_OUTPUT_STREAM_STDERR, events)
	out.Write([]byte("one\ntw"))
	out.Write([]byte("o\n" + strings.Repeat("x", maxLine+1)))
	out.Flush()
	want := []string{"one\n", "two\n", strings.Repeat("x", maxLine), "x"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if tail := lastLines(out, errw); !strings.HasPrefix(tail, "one\ntwo\n") {
		t.Errorf("lastLines without stderr = %q, want stdout's lines", tail)
	}
	for i := range keepLines + 2 {
		errw.Write([]byte("e" + string(rune('a'+i)) + "\n"))
	}
	if tail := lastLines(out, errw); tail != "ec\ned\nee\nef\neg\neh\nei\nej\nek\nel" {
		t.Errorf("lastLines = %q, want stderr's last %d lines", tail, keepLines)
	}
}
