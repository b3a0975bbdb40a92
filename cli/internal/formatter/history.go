package formatter

import (
	"strconv"
	"strings"
	"time"

	units "github.com/docker/go-units"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
)

const (
	defaultHistoryTableFormat  = "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"
	nonHumanHistoryTableFormat = "table {{.ID}}\t{{.CreatedAt}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"

	// createdByWidth is where Docker cuts the CREATED BY column.
	createdByWidth = 45
)

var historyHeader = map[string]string{
	"ID":           "IMAGE",
	"CreatedSince": "CREATED",
	"CreatedAt":    "CREATED AT",
	"CreatedBy":    "CREATED BY",
	"Size":         "SIZE",
	"Comment":      "COMMENT",
}

// historyEpoch: Docker leaves the age blank for steps dated before 2000,
// such as those of images built with reproducible (zero) timestamps.
var historyEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC).Unix()

// NewHistoryFormat returns the format `history` renders with, given its
// --format, -q and -H.
func NewHistoryFormat(source string, quiet, human bool) Format {
	if source == "" || source == TableFormatKey {
		switch {
		case quiet:
			return QuietFormat
		case !human:
			return nonHumanHistoryTableFormat
		default:
			return defaultHistoryTableFormat
		}
	}
	return Format(source)
}

// WriteHistory renders history rows, newest first, as `docker history`
// does. human prints sizes and ages for people (-H, the default).
func WriteHistory(ctx Context, rows []*metadatav1.HistoryRow, human bool) error {
	return ctx.write(historyHeader, func(emit func(any) error) error {
		for _, row := range rows {
			if err := emit(&historyRow{ctx: ctx, row: row, human: human}); err != nil {
				return err
			}
		}
		return nil
	})
}

// historyRow is one row of `history`; its methods are the template's
// fields, named as Docker names them.
type historyRow struct {
	ctx   Context
	row   *metadatav1.HistoryRow
	human bool
}

func (r *historyRow) MarshalJSON() ([]byte, error) { return marshalFields(r) }

func (r *historyRow) ID() string {
	if r.ctx.Trunc {
		return TruncateID(r.row.GetId())
	}
	return r.row.GetId()
}

func (r *historyRow) CreatedAt() string {
	return time.Unix(r.row.GetCreated().GetSeconds(), 0).In(r.ctx.location()).Format(time.RFC3339)
}

func (r *historyRow) CreatedSince() string {
	if !r.human {
		return r.CreatedAt()
	}
	created := r.row.GetCreated().GetSeconds()
	if created <= historyEpoch {
		return ""
	}
	return units.HumanDuration(r.ctx.now().UTC().Sub(time.Unix(created, 0))) + " ago"
}

func (r *historyRow) CreatedBy() string {
	createdBy := strings.ReplaceAll(r.row.GetCreatedBy(), "\t", " ")
	if r.ctx.Trunc {
		return Ellipsis(createdBy, createdByWidth)
	}
	return createdBy
}

func (r *historyRow) Size() string {
	if r.human {
		return units.HumanSizeWithPrecision(float64(r.row.GetSize()), 3)
	}
	return strconv.FormatInt(r.row.GetSize(), 10)
}

func (r *historyRow) Comment() string { return r.row.GetComment() }
