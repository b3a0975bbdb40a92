package formatter

import (
	"fmt"
	"strconv"

	units "github.com/docker/go-units"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
)

const defaultDiskUsageTableFormat = "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}"

var diskUsageHeader = map[string]string{
	"Type":        "TYPE",
	"TotalCount":  "TOTAL",
	"Active":      "ACTIVE",
	"Size":        "SIZE",
	"Reclaimable": "RECLAIMABLE",
}

// NewDiskUsageFormat returns the format `system df` renders with.
func NewDiskUsageFormat(source string) Format {
	if source == "" || source == TableFormatKey {
		return defaultDiskUsageTableFormat
	}
	return Format(source)
}

// WriteDiskUsage renders `system df`: one row each for images, layers and
// the build cache, in Docker's columns. Docker's other rows (containers,
// local volumes) have no counterpart in Strata.
func WriteDiskUsage(ctx Context, du *metadatav1.GetDiskUsageResponse) error {
	return ctx.write(diskUsageHeader, func(emit func(any) error) error {
		for _, row := range []*diskUsageRow{
			{typ: "Images", usage: du.GetImages(), percent: true},
			{typ: "Layers", usage: du.GetLayers(), percent: true},
			{typ: "Build Cache", usage: du.GetBuildCache()},
		} {
			if err := emit(row); err != nil {
				return err
			}
		}
		return nil
	})
}

// diskUsageRow is one row of `system df`; its methods are the template's
// fields, named as Docker names them.
type diskUsageRow struct {
	typ     string
	usage   *metadatav1.DiskUsage
	percent bool // Docker shows the reclaimable share except for the build cache
}

func (r *diskUsageRow) MarshalJSON() ([]byte, error) { return marshalFields(r) }

func (r *diskUsageRow) Type() string { return r.typ }

func (r *diskUsageRow) TotalCount() string { return strconv.FormatInt(r.usage.GetTotal(), 10) }

func (r *diskUsageRow) Active() string { return strconv.FormatInt(r.usage.GetActive(), 10) }

func (r *diskUsageRow) Size() string { return units.HumanSize(float64(r.usage.GetSize())) }

func (r *diskUsageRow) Reclaimable() string {
	size, reclaimable := r.usage.GetSize(), r.usage.GetReclaimable()
	if r.percent && size > 0 {
		return fmt.Sprintf("%s (%v%%)", units.HumanSize(float64(reclaimable)), reclaimable*100/size)
	}
	return units.HumanSize(float64(reclaimable))
}
