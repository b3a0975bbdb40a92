package harness

import (
	"encoding/json"
	"os"
	"testing"
)

// BenchFigure is one figure of a benchmark: what Strata did, and what the
// peer a user would pick instead did on the same job in the same run.
// `make bench` collects them (bench/cmd/benchreport reads this JSON) into
// one table.
type BenchFigure struct {
	// Bench is the benchmark: blob, xfer, build, meta, exec or registry.
	Bench string `json:"bench"`
	// Name says what was measured, e.g. "upload 1 GiB, unsigned payload".
	Name string `json:"name"`
	// Unit of Strata and PeerValue ("MiB/s", "s", "ops/s", "MiB"), and
	// whether a higher or a lower figure is better ("higher", "lower").
	Unit   string `json:"unit"`
	Better string `json:"better"`
	// Strata is Strata's figure (a median over Runs), and StrataDid what
	// Strata did for it: compression, verification, signing, fsync.
	Strata    float64 `json:"strata"`
	StrataDid string  `json:"strata_did"`
	// Peer names the peer ("" for a figure without one), PeerValue is its
	// figure and PeerDid what it did.
	Peer      string  `json:"peer,omitempty"`
	PeerValue float64 `json:"peer_value,omitempty"`
	PeerDid   string  `json:"peer_did,omitempty"`
	// Ratio is Strata's figure over the peer's, in Unit: the median of the
	// runs' ratios, each run timing both back to back.
	Ratio float64 `json:"ratio,omitempty"`
	// Target is what issue 19 asks of Ratio (of Strata without a peer),
	// as "<= 0.6" or ">= 0.9"; empty when it asks nothing.
	Target string `json:"target,omitempty"`
	// Runs is how many runs the medians are of.
	Runs int `json:"runs"`
}

// RecordBench appends figures, one JSON object a line, to the file
// $STRATA_BENCH_RESULTS names (`make bench` sets it); without it, it does
// nothing, and the benchmark's own output is all there is.
func RecordBench(t testing.TB, figures ...BenchFigure) {
	t.Helper()
	path := os.Getenv("STRATA_BENCH_RESULTS")
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	enc := json.NewEncoder(f)
	for _, fig := range figures {
		if err := enc.Encode(fig); err != nil {
			t.Fatal(err)
		}
	}
}
