package image

import (
	"encoding/base64"
	"strconv"
	"strings"
	"time"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/reference"
)

func invalidFilter(key, value, why string) error {
	return errdefs.InvalidArgument("invalid filter '%s=%s': %s", key, value, why).
		WithReason("INVALID_FILTER").WithDetail("filter", key+"="+value)
}

func unknownFilter(key string) error {
	return errdefs.InvalidArgument("invalid filter '%s'", key).WithReason("INVALID_FILTER").WithDetail("filter", key)
}

// listFilters are `docker image ls --filter` values.
type listFilters struct {
	patterns      []string
	dangling      *bool
	labels        []LabelMatch
	before, since []string // image references
	until         *time.Time
}

func parseListFilters(filters []*metadatav1.Filter, now time.Time) (*listFilters, error) {
	f := &listFilters{}
	for _, flt := range filters {
		k, v := flt.GetKey(), flt.GetValue()
		switch k {
		case "reference":
			if err := reference.ValidPattern(v); err != nil {
				return nil, err
			}
			f.patterns = append(f.patterns, v)
		case "dangling":
			b, err := parseBool(k, v)
			if err != nil {
				return nil, err
			}
			if f.dangling == nil || b {
				f.dangling = &b // Docker: any "true" wins
			}
		case "label":
			f.labels = append(f.labels, parseLabel(v))
		case "before":
			f.before = append(f.before, v)
		case "since":
			f.since = append(f.since, v)
		case "until":
			t, err := parseTimestamp(k, v, now)
			if err != nil {
				return nil, err
			}
			f.until = &t
		default:
			return nil, unknownFilter(k)
		}
	}
	return f, nil
}

func parseBool(k, v string) (bool, error) {
	switch strings.ToLower(v) {
	case "true", "1":
		return true, nil
	case "false", "0":
		return false, nil
	}
	return false, invalidFilter(k, v, "want true or false")
}

func parseLabel(v string) LabelMatch {
	key, value, ok := strings.Cut(v, "=")
	return LabelMatch{Key: key, Value: value, HasValue: ok}
}

// pruneFilters are `docker image prune --filter` values.
type pruneFilters struct {
	dangling  *bool
	until     *time.Time
	labels    []LabelMatch
	notLabels []LabelMatch
}

func parsePruneFilters(filters []*metadatav1.Filter, now time.Time) (*pruneFilters, error) {
	f := &pruneFilters{}
	for _, flt := range filters {
		k, v := flt.GetKey(), flt.GetValue()
		switch k {
		case "dangling":
			b, err := parseBool(k, v)
			if err != nil {
				return nil, err
			}
			f.dangling = &b
		case "until":
			t, err := parseTimestamp(k, v, now)
			if err != nil {
				return nil, err
			}
			f.until = &t
		case "label":
			f.labels = append(f.labels, parseLabel(v))
		case "label!":
			f.notLabels = append(f.notLabels, parseLabel(v))
		default:
			return nil, unknownFilter(k)
		}
	}
	return f, nil
}

// matchLabels is Docker's: every label filter matches, and not all of the
// label! filters do.
func (f *pruneFilters) matchLabels(labels map[string]string) bool {
	if !matchAll(f.labels, labels) {
		return false
	}
	return len(f.notLabels) == 0 || !matchAll(f.notLabels, labels)
}

func matchAll(ms []LabelMatch, labels map[string]string) bool {
	for _, m := range ms {
		v, ok := labels[m.Key]
		if !ok || (m.HasValue && v != m.Value) {
			return false
		}
	}
	return true
}

// parseTimestamp reads Docker's filter times: a Go duration before now
// ("24h"), an RFC 3339 time or date, or Unix seconds.
func parseTimestamp(k, v string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(v); err == nil {
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02T15:04", "2006-01-02Z07:00", "2006-01-02"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t, nil
		}
	}
	if sec, frac, ok := strings.Cut(v, "."); true {
		s, err := strconv.ParseInt(sec, 10, 64)
		if err == nil {
			var ns int64
			if ok {
				frac = (frac + "000000000")[:9]
				ns, err = strconv.ParseInt(frac, 10, 64)
			}
			if err == nil {
				return time.Unix(s, ns), nil
			}
		}
	}
	return time.Time{}, invalidFilter(k, v, "want a duration (24h), an RFC 3339 time or Unix seconds")
}

// literalPrefix returns the part of a glob before its first special
// character.
func literalPrefix(pattern string) string {
	if i := strings.IndexAny(pattern, `*?[\`); i >= 0 {
		return pattern[:i]
	}
	return pattern
}

func commonPrefix(ss []string) string {
	if len(ss) == 0 {
		return ""
	}
	p := ss[0]
	for _, s := range ss[1:] {
		for !strings.HasPrefix(s, p) {
			p = p[:len(p)-1]
		}
	}
	return p
}

func encodeToken(a int64, b string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(a, 10) + "|" + b))
}

func decodeToken(tok string) (int64, string, error) {
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err == nil {
		a, b, ok := strings.Cut(string(raw), "|")
		if ok {
			n, perr := strconv.ParseInt(a, 10, 64)
			if perr == nil {
				return n, b, nil
			}
		}
	}
	return 0, "", errdefs.InvalidArgument("invalid page token %q", tok).WithReason("INVALID_PAGE_TOKEN")
}

func decodeStringToken(tok string) (string, error) {
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || !strings.HasPrefix(string(raw), "s|") {
		return "", errdefs.InvalidArgument("invalid page token %q", tok).WithReason("INVALID_PAGE_TOKEN")
	}
	return string(raw[2:]), nil
}

func encodeStringToken(s string) string {
	return base64.RawURLEncoding.EncodeToString([]byte("s|" + s))
}

func pageSize(n, def, max int) (int, error) {
	switch {
	case n < 0:
		return 0, errdefs.InvalidArgument("page size %d is negative", n).WithReason("INVALID_PAGE_SIZE")
	case n == 0:
		return def, nil
	case n > max:
		return max, nil
	}
	return n, nil
}
