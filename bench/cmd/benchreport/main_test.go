package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseBenchLine(t *testing.T) {
	tests := []struct {
		line string
		want []string // name, unit, better of each figure
	}{
		{"BenchmarkStore200MBRandom-2   	       3	 812345678 ns/op	 258.2 MB/s", []string{"Store200MBRandom (ms/op) ms/op lower", "Store200MBRandom (MB/s) MB/s higher"}},
		{"BenchmarkRunTrue   5   1234 ns/op", []string{"RunTrue (ms/op) ms/op lower"}},
		{"PASS", nil},
		{"BenchmarkX-2 \tsome log line", nil},
	}
	for _, tt := range tests {
		var got []string
		for _, f := range parseBenchLine("exec", tt.line) {
			got = append(got, f.Name+" "+f.Unit+" "+f.Better)
		}
		if strings.Join(got, ";") != strings.Join(tt.want, ";") {
			t.Errorf("parseBenchLine(%q) = %q, want %q", tt.line, got, tt.want)
		}
	}
}

func TestMet(t *testing.T) {
	tests := []struct {
		f    Figure
		want string
	}{
		{Figure{Peer: "BuildKit", Ratio: 0.5, Target: "<= 0.6"}, "yes"},
		{Figure{Peer: "BuildKit", Ratio: 0.7, Target: "<= 0.6"}, "NO"},
		{Figure{Peer: "minio-go", Ratio: 0.95, Target: ">= 0.9"}, "yes"},
		{Figure{Strata: 130, Target: "<= 128"}, "NO"}, // no peer: the target is on Strata's figure
		{Figure{Peer: "crane pull"}, ""},
	}
	for _, tt := range tests {
		m, err := met(tt.f)
		if err != nil {
			t.Fatal(err)
		}
		if got := metText(m); got != tt.want {
			t.Errorf("met(%+v) = %q, want %q", tt.f, got, tt.want)
		}
	}
	if _, err := met(Figure{Target: "< 3"}); err == nil {
		t.Error(`met(target "< 3") = nil error, want one`)
	}
}

func TestCompare(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, figs ...Figure) string {
		b, err := json.Marshal(Report{Commit: name, Figures: figs})
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name+".json")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cold := Figure{Bench: "build", Name: "app workload, cold", Unit: "s", Better: "lower", Strata: 10, Peer: "BuildKit", PeerValue: 10, Ratio: 1}
	faster := cold
	faster.Strata, faster.Ratio = 5, 0.5
	gone := Figure{Bench: "meta", Name: "GetImage", Unit: "calls/s", Better: "higher", Strata: 100}
	var out bytes.Buffer
	if err := compare(&out, write("old", cold, gone), write("new", faster)); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"-50.0% better", "1.000", "0.500", "gone"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("compare output lacks %q:\n%s", want, out.String())
		}
	}
}
