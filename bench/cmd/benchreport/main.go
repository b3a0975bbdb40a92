// Command benchreport turns the figures Strata's benchmarks record into the
// one table `make bench` prints, and compares two runs.
//
//	benchreport table [-o OUT.json] FIGURES.jsonl   print the table, write it as JSON
//	benchreport ingest BENCH < go-test-output        pass `go test -bench` output through,
//	                                                  recording its metrics as figures
//	benchreport compare OLD.json NEW.json            what changed between two runs
//
// A figure (one JSON object a line, written by lib/harness.RecordBench and
// scripts/bench-build.sh, to the file $STRATA_BENCH_RESULTS names) is
// Strata's median on one job, the median of the peer a user would pick for
// it, Strata's ratio to it, what each side did, and what issue 19 asks.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Figure is one figure of a benchmark; see lib/harness.BenchFigure, which
// writes them.
type Figure struct {
	Bench     string  `json:"bench"`
	Name      string  `json:"name"`
	Unit      string  `json:"unit"`
	Better    string  `json:"better"`
	Strata    float64 `json:"strata"`
	StrataDid string  `json:"strata_did"`
	Peer      string  `json:"peer,omitempty"`
	PeerValue float64 `json:"peer_value,omitempty"`
	PeerDid   string  `json:"peer_did,omitempty"`
	Ratio     float64 `json:"ratio,omitempty"`
	Target    string  `json:"target,omitempty"`
	Runs      int     `json:"runs"`
	// Met says whether Target is met; absent without a target.
	Met *bool `json:"met,omitempty"`
}

// key identifies a figure across runs.
func (f Figure) key() string { return f.Bench + "|" + f.Name + "|" + f.Peer }

// Report is a run of `make bench`, as latest.json holds it.
type Report struct {
	Date    time.Time `json:"date"`
	Commit  string    `json:"commit"`
	CPUs    int       `json:"cpus"`
	Load    string    `json:"load_average"`
	Figures []Figure  `json:"figures"`
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "table":
		err = table(os.Args[2:])
	case "ingest":
		if len(os.Args) != 3 {
			usage()
		}
		err = ingest(os.Stdin, os.Stdout, os.Args[2], os.Getenv("STRATA_BENCH_RESULTS"))
	case "compare":
		if len(os.Args) != 4 {
			usage()
		}
		err = compare(os.Stdout, os.Args[2], os.Args[3])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: benchreport table [-o OUT.json] FIGURES.jsonl | ingest BENCH | compare OLD.json NEW.json")
	os.Exit(2)
}

func table(args []string) error {
	fs := flag.NewFlagSet("table", flag.ExitOnError)
	out := fs.String("o", "", "write the report as JSON to this file too")
	_ = fs.Parse(args)
	if fs.NArg() != 1 {
		usage()
	}
	figs, err := readFigures(fs.Arg(0))
	if err != nil {
		return err
	}
	for i := range figs {
		figs[i].Met, err = met(figs[i])
		if err != nil {
			return err
		}
	}
	printTable(os.Stdout, figs)
	if *out == "" {
		return nil
	}
	load, _ := os.ReadFile("/proc/loadavg")
	rep := Report{Date: time.Now().UTC(), Commit: commit(), CPUs: runtime.NumCPU(), Figures: figs}
	if f := strings.Fields(string(load)); len(f) >= 3 {
		rep.Load = strings.Join(f[:3], " ")
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(*out, append(b, '\n'), 0o644)
}

func readFigures(path string) ([]Figure, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var figs []Figure
	dec := json.NewDecoder(f)
	for {
		var fig Figure
		if err := dec.Decode(&fig); errors.Is(err, io.EOF) {
			return figs, nil
		} else if err != nil {
			return nil, fmt.Errorf("%s: figure %d: %w", path, len(figs)+1, err)
		}
		figs = append(figs, fig)
	}
}

func commit() string {
	out, err := exec.Command("git", "describe", "--always", "--dirty").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// met says whether a figure meets its target, which is on its ratio when
// it has a peer and on Strata's figure otherwise; nil without a target.
func met(f Figure) (*bool, error) {
	if f.Target == "" {
		return nil, nil
	}
	op, num, ok := strings.Cut(strings.TrimSpace(f.Target), " ")
	want, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if !ok || err != nil || (op != "<=" && op != ">=") {
		return nil, fmt.Errorf("%s %q: target %q: want \"<= N\" or \">= N\"", f.Bench, f.Name, f.Target)
	}
	got := f.Strata
	if f.Peer != "" {
		got = f.Ratio
	}
	ok = got <= want
	if op == ">=" {
		ok = got >= want
	}
	return &ok, nil
}

// printTable prints one row a figure, and under the table what each side
// did, numbered, since those notes are longer than a row.
func printTable(w io.Writer, figs []Figure) {
	var notes []string
	noteOf := map[string]int{}
	note := func(s string) string {
		if s == "" {
			return ""
		}
		if _, ok := noteOf[s]; !ok {
			notes = append(notes, s)
			noteOf[s] = len(notes)
		}
		return fmt.Sprintf("[%d]", noteOf[s])
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "bench\tfigure\tStrata\tpeer\tpeer's\tratio\ttarget\tmet\truns")
	for _, f := range figs {
		peer, peerValue, ratio := "—", "", ""
		if f.Peer != "" {
			peer = f.Peer + " " + note(f.PeerDid)
			peerValue = value(f.PeerValue, f.Unit)
			ratio = fmt.Sprintf("%.3f", f.Ratio)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s %s\t%s\t%s\t%s\t%s\t%s\t%d\n", f.Bench, f.Name, value(f.Strata, f.Unit), note(f.StrataDid),
			peer, peerValue, ratio, f.Target, metText(f.Met), f.Runs)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nratio: Strata's figure over the peer's (the median of the runs' ratios); above 1 is better for rates, below 1 for times, CPU and memory.")
	fmt.Fprintln(w, "What each side did:")
	for i, n := range notes {
		fmt.Fprintf(w, "  [%d] %s\n", i+1, n)
	}
}

func value(v float64, unit string) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f %s", v, unit)
	case v >= 10:
		return fmt.Sprintf("%.1f %s", v, unit)
	}
	return fmt.Sprintf("%.3g %s", v, unit)
}

func metText(m *bool) string {
	switch {
	case m == nil:
		return ""
	case *m:
		return "yes"
	}
	return "NO"
}

// ingest copies `go test -bench` output from r to w and records each
// benchmark line's metrics as figures of bench, without a peer, in the
// file named results (when it is not empty).
func ingest(r io.Reader, w io.Writer, bench, results string) error {
	var figs []Figure
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(w, line)
		figs = append(figs, parseBenchLine(bench, line)...)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if results == "" {
		return nil
	}
	f, err := os.OpenFile(results, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f)
	for _, fig := range figs {
		if err := enc.Encode(fig); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

// parseBenchLine reads "BenchmarkName-2  3  123 ns/op  45.6 MB/s ..." as
// one figure per metric; other lines give none.
func parseBenchLine(bench, line string) []Figure {
	fields := strings.Fields(line)
	if len(fields) < 4 || !strings.HasPrefix(fields[0], "Benchmark") {
		return nil
	}
	runs, err := strconv.Atoi(fields[1])
	if err != nil {
		return nil
	}
	name := strings.TrimPrefix(fields[0], "Benchmark")
	if i := strings.LastIndexByte(name, '-'); i > 0 {
		if _, err := strconv.Atoi(name[i+1:]); err == nil {
			name = name[:i] // the GOMAXPROCS suffix
		}
	}
	var figs []Figure
	for i := 2; i+1 < len(fields); i += 2 {
		v, err := strconv.ParseFloat(fields[i], 64)
		if err != nil {
			return figs
		}
		unit := fields[i+1]
		if unit == "ns/op" { // figures of seconds read better in ms
			v, unit = v/1e6, "ms/op"
		}
		better := "higher"
		if strings.HasSuffix(unit, "/op") {
			better = "lower"
		}
		figs = append(figs, Figure{Bench: bench, Name: name + " (" + unit + ")", Unit: unit, Better: better, Strata: v,
			StrataDid: "go test -bench " + fields[0] + ", the mean of b.N runs", Runs: runs})
	}
	return figs
}

// compare prints, for each figure of the new report, the old and new
// figures and ratios and how much better or worse Strata got.
func compare(w io.Writer, oldPath, newPath string) error {
	oldRep, err := readReport(oldPath)
	if err != nil {
		return err
	}
	newRep, err := readReport(newPath)
	if err != nil {
		return err
	}
	old := map[string]Figure{}
	for _, f := range oldRep.Figures {
		old[f.key()] = f
	}
	fmt.Fprintf(w, "old: %s (%s), new: %s (%s)\n", oldPath, oldRep.Commit, newPath, newRep.Commit)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "bench\tfigure\tpeer\tStrata old\tStrata new\tchange\told ratio\tnew ratio\ttarget\tmet")
	seen := map[string]bool{}
	for _, f := range newRep.Figures {
		seen[f.key()] = true
		o, ok := old[f.key()]
		oldValue, change, oldRatio := "—", "new", ""
		if ok {
			oldValue, change = value(o.Strata, o.Unit), changeText(o.Strata, f.Strata, f.Better)
			if o.Peer != "" {
				oldRatio = fmt.Sprintf("%.3f", o.Ratio)
			}
		}
		newRatio := ""
		if f.Peer != "" {
			newRatio = fmt.Sprintf("%.3f", f.Ratio)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", f.Bench, f.Name, orDash(f.Peer), oldValue, value(f.Strata, f.Unit),
			change, oldRatio, newRatio, f.Target, metText(f.Met))
	}
	for _, o := range oldRep.Figures {
		if !seen[o.key()] {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t—\tgone\t\t\t%s\t\n", o.Bench, o.Name, orDash(o.Peer), value(o.Strata, o.Unit), o.Target)
		}
	}
	return tw.Flush()
}

func readReport(path string) (Report, error) {
	var rep Report
	b, err := os.ReadFile(path)
	if err != nil {
		return rep, err
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		return rep, fmt.Errorf("%s: %w", path, err)
	}
	return rep, nil
}

// changeText says how Strata's figure moved, as a percentage, and whether
// that is better or worse.
func changeText(old, cur float64, better string) string {
	if old == 0 {
		return "—"
	}
	pct := (cur - old) / old * 100
	switch {
	case pct > -1 && pct < 1:
		return fmt.Sprintf("%+.1f%%", pct)
	case (pct > 0) == (better == "higher"):
		return fmt.Sprintf("%+.1f%% better", pct)
	}
	return fmt.Sprintf("%+.1f%% worse", pct)
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}
