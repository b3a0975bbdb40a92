package e2e

import (
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/strata-build/strata/lib/harness"
)

// Two stages that do not build on each other, each sleeping 3 s, and a
// final stage copying from both.
const twoStagesDockerfile = `FROM busybox:latest AS a
RUN echo a-out && sleep 3 && echo a > /a
FROM busybox:latest AS b
RUN echo b-out && sleep 3 && echo b > /b
FROM busybox:latest
COPY --from=a /a /a
COPY --from=b /b /b
`

// TestIndependentStagesRunAtOnce: a builder runs the two sleeping stages
// at the same time, so the build takes about 3 s less than on a builder
// that runs stages one after another (--parallel-stages 1); the output
// reads as the sequential build's, each step's lines under its own
// "Step N/M", and the image is the same: its history row by row, its
// number of layers (their bytes differ by the files' times).
func TestIndependentStagesRunAtOnce(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"Dockerfile": twoStagesDockerfile})
	type built struct {
		took    time.Duration
		out     string
		layers  string
		history string
	}
	build := func(s *stack) built {
		s.ok(t, "", "import", rootfsTar(t), "busybox:latest")
		t0 := time.Now()
		out := s.ok(t, dir, "build", "-t", "two", ".")
		return built{
			took:    time.Since(t0),
			out:     out,
			layers:  s.ok(t, "", "inspect", "--format", "{{len .RootFS.Layers}}", "two"),
			history: s.ok(t, "", "history", "--no-trunc", "--format", "{{.CreatedBy}}", "two"),
		}
	}
	parallel := build(startStack(t))
	sequential := build(&stack{Stack: harness.StartStack(t, harness.StackOptions{S3: true, BuilderEnv: []string{"STRATA_PARALLEL_STAGES=1"}})})

	if saved := sequential.took - parallel.took; saved < 2*time.Second {
		t.Errorf("the build took %v with stages in parallel and %v one after another: want about 3 s saved", parallel.took, sequential.took)
	}
	if parallel.layers != sequential.layers {
		t.Errorf("%s layers in parallel, %s one after another", parallel.layers, sequential.layers)
	}
	if parallel.history != sequential.history {
		t.Errorf("history in parallel:\n%s\none after another:\n%s", parallel.history, sequential.history)
	}
	for name, b := range map[string]built{"parallel": parallel, "sequential": sequential} {
		checkSequentialOutput(t, name, b.out)
	}
}

// checkSequentialOutput checks that out numbers its steps 1 to the total
// in order and that each RUN's output follows its own step line.
func checkSequentialOutput(t *testing.T, name, out string) {
	t.Helper()
	var steps []int
	for _, m := range regexp.MustCompile(`(?m)^Step (\d+)/7 : `).FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(m[1])
		steps = append(steps, n)
	}
	if !slices.Equal(steps, []int{1, 2, 3, 4, 5, 6, 7}) {
		t.Errorf("%s: step lines %v, want 1 to 7 in order:\n%s", name, steps, out)
	}
	for _, c := range []struct{ step, output, next string }{
		{"Step 2/7 : RUN echo a-out", "\na-out\n", "Step 3/7"},
		{"Step 4/7 : RUN echo b-out", "\nb-out\n", "Step 5/7"},
	} {
		i, j, k := strings.Index(out, c.step), strings.Index(out, c.output), strings.Index(out, c.next)
		if i < 0 || j < i || k < j {
			t.Errorf("%s: %q is not between %q and %q:\n%s", name, strings.TrimSpace(c.output), c.step, c.next, out)
		}
	}
}

// TestAFailingStageStopsTheOthers: when one of two parallel stages fails,
// the other is stopped rather than waited for, the build fails with the
// failing step's error and its output, and nothing is recorded.
func TestAFailingStageStopsTheOthers(t *testing.T) {
	s := withBusybox(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"Dockerfile": `FROM busybox:latest AS slow
RUN sleep 60
FROM busybox:latest AS broken
RUN echo about to fail && exit 3
FROM busybox:latest
COPY --from=slow /bin/sh /a
COPY --from=broken /bin/sh /b
`})
	t0 := time.Now()
	r := s.strata(t, dir, "build", "-t", "broken", ".")
	if took := time.Since(t0); took > 30*time.Second {
		t.Errorf("the build failed after %v: the sleeping stage was waited for", took)
	}
	if r.code == 0 {
		t.Fatalf("the build succeeded:\n%s", r.stdout)
	}
	if !strings.Contains(r.stdout, "about to fail\n") || !strings.Contains(r.stderr, "returned a non-zero code: 3") {
		t.Errorf("the failing step's output or error is missing:\n%s%s", r.stdout, r.stderr)
	}
	if r := s.strata(t, "", "inspect", "broken"); r.code == 0 {
		t.Error("the failed build recorded its image")
	}
}

// TestPlainProgressInterleavesStages: with --progress=plain the lines of
// two stages that run at once come as they are written, interleaved, each
// under the number of its step's vertex, whose header names the stage and
// the step ("[a 2/2] RUN …"); the build records what a default build
// makes, which then finds every step in the cache and ends with the same
// image.
func TestPlainProgressInterleavesStages(t *testing.T) {
	s := withBusybox(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"Dockerfile": `FROM busybox:latest AS a
RUN for i in 1 2 3; do echo a-line-$i; sleep 1; done > /dev/stderr; echo a > /a
FROM busybox:latest AS b
RUN for i in 1 2 3; do echo b-line-$i; sleep 1; done; echo b > /b
FROM busybox:latest
COPY --from=a /a /a
COPY --from=b /b /b
`})
	out := s.ok(t, dir, "build", "--progress=plain", "-t", "plain", ".")

	headers := map[string]string{} // vertex number → its header
	var lines []string             // the stages' lines, as printed
	for _, l := range strings.Split(out, "\n") {
		m := regexp.MustCompile(`^#(\d+) (.*)$`).FindStringSubmatch(l)
		if m == nil {
			continue
		}
		n, rest := m[1], m[2]
		if o := regexp.MustCompile(`^\d+\.\d{3} ([ab])-line-\d$`).FindStringSubmatch(rest); o != nil {
			stage := o[1]
			if want := "[" + stage + " 2/2] RUN for i in 1 2 3"; !strings.HasPrefix(headers[n], want) {
				t.Errorf("line %q is under #%s %q, want a vertex %q", l, n, headers[n], want)
			}
			lines = append(lines, stage)
			continue
		}
		if _, seen := headers[n]; !seen {
			headers[n] = rest
		}
	}
	if got := strings.Join(lines, ""); len(got) != 6 || strings.LastIndex(got, "a") < strings.Index(got, "b") || strings.LastIndex(got, "b") < strings.Index(got, "a") {
		t.Errorf("the stages' lines came in the order %q: want 3 of each, interleaved:\n%s", got, out)
	}
	for _, want := range []string{"[stage-2 1/3] FROM busybox:latest", "[stage-2 3/3] COPY --from=b /b /b"} {
		if !slices.Contains(slices.Collect(maps.Values(headers)), want) {
			t.Errorf("no vertex %q:\n%s", want, out)
		}
	}
	if !regexp.MustCompile(`(?m)^#\d+ naming to plain:latest done$`).MatchString(out) {
		t.Errorf("the build's output does not end naming the image:\n%s", out)
	}

	classic := s.ok(t, dir, "build", "-t", "classic", ".")
	if n := strings.Count(classic, " ---> Using cache\n"); n != 4 {
		t.Errorf("the default build after the plain one used the cache %d times, want 4:\n%s", n, classic)
	}
	id := func(ref string) string { return s.ok(t, "", "inspect", "--format", "{{.Id}}", ref) }
	if p, c := id("plain"), id("classic"); p != c {
		t.Errorf("the plain build made %s, the default build %s", p, c)
	}
}
