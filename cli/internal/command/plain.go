package command

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/strata-build/strata/client"
	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
)

// plainPrinter prints BuildKit's plain progress (`docker buildx build
// --progress=plain`, moby/buildkit util/progress/progressui): each step
// is a numbered vertex, "#5 [build 2/4] RUN make", its output lines
// "#5 0.512 line" (seconds since the step started), its end "#5 DONE
// 1.2s", "#5 CACHED", "#5 ERROR: …" or "#5 CANCELED". It asks for the
// events as they happen, so the steps of stages that run at once
// interleave; as in BuildKit, when the output moves to another vertex the
// one left gets "#5 ..." and the next one's header is printed again, so
// that every line says which stage and step it belongs to.
type plainPrinter struct {
	out   io.Writer
	now   func() time.Time
	start time.Time

	vertices map[int32]*vertex // by step number
	n        int               // vertices numbered so far
	current  *vertex           // the vertex whose lines are being printed
	printed  bool              // anything printed yet
	loading  *vertex           // the context's transfer, until a step starts
}

// vertex is one thing plain progress reports on: a step, or the build's
// own work (the context, the export).
type vertex struct {
	index   int
	name    string
	started time.Time
	line    int32 // the Dockerfile line, for steps but FROM
	cached  bool
	ended   bool
}

func newPlainPrinter(out io.Writer, now func() time.Time) *plainPrinter {
	return &plainPrinter{out: out, now: now, start: now(), vertices: map[int32]*vertex{}}
}

// open numbers a new vertex and prints its header.
func (p *plainPrinter) open(name string) *vertex {
	p.n++
	v := &vertex{index: p.n, name: name, started: p.now()}
	p.to(v)
	return v
}

// to makes v the vertex being printed: the one left, if it has not ended,
// gets "#N ...", and v's header is printed after a blank line.
func (p *plainPrinter) to(v *vertex) {
	if p.current == v {
		return
	}
	p.leave()
	if p.printed {
		fmt.Fprintln(p.out)
	}
	p.printed = true
	fmt.Fprintf(p.out, "#%d %s\n", v.index, v.name)
	p.current = v
}

// leave marks the current vertex, unfinished, as left for another.
func (p *plainPrinter) leave() {
	if p.current != nil && !p.current.ended {
		fmt.Fprintf(p.out, "#%d ...\n", p.current.index)
	}
	p.current = nil
}

// end prints how v ended: status is DONE (with v's time), CACHED,
// CANCELED or "ERROR: …".
func (p *plainPrinter) end(v *vertex, status string) {
	if v.ended {
		return
	}
	p.to(v)
	if status == "DONE" {
		status = fmt.Sprintf("DONE %.1fs", p.now().Sub(v.started).Seconds())
	}
	fmt.Fprintf(p.out, "#%d %s\n", v.index, status)
	v.ended = true
	p.current = nil
}

func (p *plainPrinter) context(sending, unique, total int64) {
	p.loading = p.open("[internal] load build context")
	fmt.Fprintf(p.out, "#%d transferring context: %s\n", p.loading.index, strings.TrimPrefix(sendingLine(sending, unique, total), sendingPrefix))
}

func (p *plainPrinter) event(ev *builderv1.BuildEvent) {
	switch e := ev.GetEvent().(type) {
	case *builderv1.BuildEvent_Started:
		if p.loading != nil {
			p.end(p.loading, "DONE")
			p.loading = nil
		}
		v := p.open(stepName(e.Started))
		v.line = e.Started.GetLine()
		p.vertices[ev.GetStep()] = v
	case *builderv1.BuildEvent_Cached:
		if v := p.vertices[ev.GetStep()]; v != nil {
			v.cached = true
		}
	case *builderv1.BuildEvent_Output:
		v := p.vertices[ev.GetStep()]
		if v == nil {
			return
		}
		p.to(v)
		line := strings.TrimSuffix(string(e.Output.GetData()), "\n")
		fmt.Fprintf(p.out, "#%d %.3f %s\n", v.index, p.now().Sub(v.started).Seconds(), line)
	case *builderv1.BuildEvent_Done:
		v := p.vertices[ev.GetStep()]
		if v == nil {
			return
		}
		if v.cached {
			p.end(v, "CACHED")
		} else {
			p.end(v, "DONE")
		}
	case *builderv1.BuildEvent_Warning:
		p.note("WARNING: " + e.Warning.GetMessage())
	case *builderv1.BuildEvent_Queued:
		p.note(queuedLine(e.Queued.GetAhead()))
	}
}

// note prints a line of the build's own, apart from the vertices.
func (p *plainPrinter) note(line string) {
	p.leave()
	if p.printed {
		fmt.Fprintln(p.out)
	}
	p.printed = true
	fmt.Fprintln(p.out, line)
}

// stepName is BuildKit's name of a step's vertex: "[build 2/4] RUN make",
// the stage named "stage-N" when it has no name, and not at all when it
// is the build's only stage; the step's place padded to the width of the
// stage's count.
func stepName(s *builderv1.StepStarted) string {
	stage := s.GetStageName()
	if stage == "" && s.GetStageSteps() != s.GetTotalSteps() {
		stage = fmt.Sprintf("stage-%d", s.GetStageIndex())
	}
	if stage != "" {
		stage += " "
	}
	width := len(fmt.Sprint(s.GetStageSteps()))
	return fmt.Sprintf("[%s%*d/%d] %s", stage, width, s.GetStageStep(), s.GetStageSteps(), s.GetInstruction())
}

// fail ends the steps still running: the one err names by its Dockerfile
// line (else the last one started) with ERROR and err's first line, the
// others, stopped by the failure, CANCELED.
func (p *plainPrinter) fail(err error) {
	var open []*vertex
	for _, v := range p.vertices {
		if !v.ended {
			open = append(open, v)
		}
	}
	if p.loading != nil {
		open = append(open, p.loading)
	}
	if len(open) == 0 {
		return
	}
	slices.SortFunc(open, func(a, b *vertex) int { return a.index - b.index })
	failed := open[len(open)-1]
	var be *client.BuildError
	if errors.As(err, &be) && be.Line > 0 {
		for _, v := range open {
			if int(v.line) == be.Line {
				failed = v
			}
		}
	}
	for _, v := range open {
		if v != failed {
			p.end(v, "CANCELED")
		}
	}
	msg, _, _ := strings.Cut(err.Error(), "\n")
	p.end(failed, "ERROR: "+msg)
}

// result is BuildKit's export vertex.
func (p *plainPrinter) result(r *builderv1.BuildResult) {
	v := p.open("exporting to image")
	fmt.Fprintf(p.out, "#%d writing image %s done\n", v.index, r.GetImageId())
	for _, t := range r.GetTags() {
		fmt.Fprintf(p.out, "#%d naming to %s done\n", v.index, t)
	}
	p.end(v, "DONE")
}
