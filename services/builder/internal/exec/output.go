package exec

import (
	"bytes"
	"strings"
	"sync"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
)

// maxLine bounds one output line; a process writing megabytes without a
// newline is sent in pieces.
const maxLine = 64 << 10

// keepLines is how many last lines a failed RUN's error shows.
const keepLines = 10

// lineWriter turns a RUN step's output into one event per line, and keeps
// the last lines for the error of a failing step.
type lineWriter struct {
	step   int
	stream builderv1.OutputStream
	events Events

	mu   sync.Mutex
	buf  []byte
	last []string
}

func newLineWriter(step int, stream builderv1.OutputStream, events Events) *lineWriter {
	return &lineWriter{step: step, stream: stream, events: events}
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			if len(w.buf) >= maxLine {
				w.emit(w.buf[:maxLine])
				w.buf = w.buf[maxLine:]
				continue
			}
			break
		}
		w.emit(w.buf[:i+1])
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}

// Flush sends a last line without a newline.
func (w *lineWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.emit(w.buf)
		w.buf = nil
	}
}

func (w *lineWriter) emit(line []byte) {
	data := bytes.Clone(line)
	w.last = append(w.last, strings.TrimRight(string(data), "\n"))
	if len(w.last) > keepLines {
		w.last = w.last[len(w.last)-keepLines:]
	}
	w.events(&builderv1.BuildEvent{Step: int32(w.step), Event: &builderv1.BuildEvent_Output{Output: &builderv1.StepOutput{Stream: w.stream, Data: data}}})
}

// lastLines returns the last lines both streams wrote (stderr's when it
// wrote any, since that is where failures are explained).
func lastLines(out, errw *lineWriter) string {
	lines := errw.last
	if len(lines) == 0 {
		lines = out.last
	}
	return strings.Join(lines, "\n")
}
