package command

import (
	"fmt"
	"strings"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
)

// filterFlag is a repeatable --filter key=value, as Docker's.
type filterFlag struct {
	filters []*metadatav1.Filter
}

func (f *filterFlag) String() string {
	parts := make([]string, len(f.filters))
	for i, flt := range f.filters {
		parts[i] = flt.GetKey() + "=" + flt.GetValue()
	}
	return strings.Join(parts, ",")
}

func (f *filterFlag) Set(value string) error {
	key, val, ok := strings.Cut(value, "=")
	key = strings.ToLower(strings.TrimSpace(key))
	if !ok || key == "" {
		return fmt.Errorf("bad format of filter (expected name=value)")
	}
	f.filters = append(f.filters, &metadatav1.Filter{Key: key, Value: strings.TrimSpace(val)})
	return nil
}

func (f *filterFlag) Type() string { return "filter" }
