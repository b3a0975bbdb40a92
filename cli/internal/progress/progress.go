// Package progress shows the progress of a transfer's blobs (pull, push,
// load, import) as Docker does: on a terminal one line per blob, redrawn in
// place with a progress bar; elsewhere one plain line each time a blob's
// state changes, so that logs stay readable.
package progress

import (
	"fmt"
	"io"
	"strings"

	units "github.com/docker/go-units"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
)

// Words are what a transfer calls each action, as Docker's messages do.
// An empty word hides the action.
type Words map[builderv1.TransferAction]string

// The words of each transfer.
var (
	PullWords = Words{
		builderv1.TransferAction_TRANSFER_ACTION_WAITING:     "Waiting",
		builderv1.TransferAction_TRANSFER_ACTION_DOWNLOADING: "Downloading",
		builderv1.TransferAction_TRANSFER_ACTION_VERIFYING:   "Verifying Checksum",
		builderv1.TransferAction_TRANSFER_ACTION_EXISTS:      "Already exists",
		builderv1.TransferAction_TRANSFER_ACTION_DONE:        "Pull complete",
		builderv1.TransferAction_TRANSFER_ACTION_RETRYING:    "Retrying",
	}
	PushWords = Words{
		builderv1.TransferAction_TRANSFER_ACTION_WAITING:   "Waiting",
		builderv1.TransferAction_TRANSFER_ACTION_UPLOADING: "Pushing",
		builderv1.TransferAction_TRANSFER_ACTION_EXISTS:    "Layer already exists",
		builderv1.TransferAction_TRANSFER_ACTION_MOUNTED:   "Mounted from",
		builderv1.TransferAction_TRANSFER_ACTION_DONE:      "Pushed",
		builderv1.TransferAction_TRANSFER_ACTION_RETRYING:  "Retrying",
	}
	LoadWords = Words{
		builderv1.TransferAction_TRANSFER_ACTION_WAITING:     "Waiting",
		builderv1.TransferAction_TRANSFER_ACTION_DOWNLOADING: "Loading layer",
		builderv1.TransferAction_TRANSFER_ACTION_VERIFYING:   "Verifying Checksum",
		builderv1.TransferAction_TRANSFER_ACTION_EXISTS:      "Already exists",
		builderv1.TransferAction_TRANSFER_ACTION_DONE:        "Loading layer",
	}
	ImportWords = Words{
		builderv1.TransferAction_TRANSFER_ACTION_DOWNLOADING: "Importing",
		builderv1.TransferAction_TRANSFER_ACTION_VERIFYING:   "Verifying Checksum",
		builderv1.TransferAction_TRANSFER_ACTION_DONE:        "Imported",
	}
)

// Display shows the progress events of one transfer. It is not safe for
// concurrent use.
type Display struct {
	out      io.Writer
	terminal bool
	words    Words
	order    []string // blob IDs in the order their lines appeared
	last     map[string]*builderv1.TransferProgress
}

// New returns a display writing to out; terminal chooses the live view.
func New(out io.Writer, terminal bool, words Words) *Display {
	return &Display{out: out, terminal: terminal, words: words, last: map[string]*builderv1.TransferProgress{}}
}

// Update shows one progress event.
func (d *Display) Update(p *builderv1.TransferProgress) {
	word := d.words[p.GetAction()]
	if word == "" {
		return
	}
	id := ShortID(p.GetId())
	prev, seen := d.last[id]
	d.last[id] = p
	if !d.terminal {
		// One line per change of state; byte counts only move a bar.
		if seen && prev.GetAction() == p.GetAction() {
			return
		}
		fmt.Fprintln(d.out, d.line(id, word, p, false))
		return
	}
	if !seen {
		d.order = append(d.order, id)
		fmt.Fprintln(d.out, d.line(id, word, p, true))
		return
	}
	// Move up to the blob's line, redraw it, and come back down.
	up := len(d.order) - indexOf(d.order, id)
	fmt.Fprintf(d.out, "\x1b[%dA\r\x1b[2K%s\r\x1b[%dB", up, d.line(id, word, p, true), up)
}

func (d *Display) line(id, word string, p *builderv1.TransferProgress, bar bool) string {
	s := id + ": " + word
	if p.GetAction() == builderv1.TransferAction_TRANSFER_ACTION_MOUNTED || p.GetAction() == builderv1.TransferAction_TRANSFER_ACTION_RETRYING {
		if m := p.GetMessage(); m != "" {
			s += " " + m
		}
	}
	if bar {
		if b := Bar(p.GetCurrent(), p.GetTotal()); b != "" {
			s += " " + b
		}
	}
	return s
}

func indexOf(ids []string, id string) int {
	for i, x := range ids {
		if x == id {
			return i
		}
	}
	return -1
}

// ShortID is how Docker names a blob in progress lines: the first 12 hex
// digits of its digest. Labels that are not digests pass unchanged.
func ShortID(id string) string {
	if _, hex, ok := strings.Cut(id, ":"); ok && len(hex) >= 12 {
		return hex[:12]
	}
	return id
}

// Bar is Docker's progress bar: 50 cells and the byte counts,
// "[=====>      ]  1.05MB/2.13MB". Without a total only the count shows.
func Bar(current, total int64) string {
	if current <= 0 && total <= 0 {
		return ""
	}
	if total <= 0 {
		return fmt.Sprintf("%8v", units.HumanSize(float64(current)))
	}
	cells := int(float64(current)/float64(total)*100) / 2
	cells = min(max(cells, 0), 50)
	return fmt.Sprintf("[%s>%s] %8v/%v", strings.Repeat("=", cells), strings.Repeat(" ", 50-cells),
		units.HumanSize(float64(current)), units.HumanSize(float64(total)))
}
