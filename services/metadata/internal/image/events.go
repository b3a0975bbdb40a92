package image

import (
	"context"
	"strings"
	"time"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/reference"
)

// eventBatch is how many events a watcher reads at a time.
const eventBatch = 500

// ActionName returns the name `docker events` uses for an action, "tag".
func ActionName(a metadatav1.EventAction) string {
	return strings.ToLower(strings.TrimPrefix(a.String(), "EVENT_ACTION_"))
}

type eventFilters struct {
	images  []string
	actions map[metadatav1.EventAction]bool
}

func parseEventFilters(filters []*metadatav1.Filter) (*eventFilters, error) {
	f := &eventFilters{}
	for _, flt := range filters {
		k, v := flt.GetKey(), flt.GetValue()
		switch k {
		case "image":
			f.images = append(f.images, v)
		case "event":
			a, ok := metadatav1.EventAction_value["EVENT_ACTION_"+strings.ToUpper(v)]
			if !ok || a == 0 {
				return nil, invalidFilter(k, v, "not an event (build, import, load, pull, push, save, tag, untag, delete, prune, build_started, build_finished, build_failed)")
			}
			if f.actions == nil {
				f.actions = map[metadatav1.EventAction]bool{}
			}
			f.actions[metadatav1.EventAction(a)] = true
		case "type":
			if v != "image" {
				return nil, invalidFilter(k, v, "only image events exist here")
			}
		default:
			return nil, unknownFilter(k)
		}
	}
	return f, nil
}

func (f *eventFilters) match(ev *metadatav1.Event) bool {
	if f.actions != nil && !f.actions[ev.GetAction()] {
		return false
	}
	if len(f.images) == 0 {
		return true
	}
	for _, v := range f.images {
		if ev.GetImageId() != "" && len(idHex(v)) >= MinIDPrefix && isImageIDPrefix(ev.GetImageId(), v) {
			return true
		}
		if ev.GetReference() == "" {
			continue
		}
		want, err := reference.ParseDefaultTag(v)
		if err != nil {
			continue
		}
		got, err := reference.ParseDefaultTag(ev.GetReference())
		if err == nil && (got.String() == want.String() || (want.Tag() == reference.DefaultTag && !strings.Contains(v, ":") && got.Name() == want.Name())) {
			return true
		}
	}
	return false
}

func (s *Service) WatchEvents(ctx context.Context, since time.Time, filters []*metadatav1.Filter, fn func(*metadatav1.Event) error) error {
	if _, err := parseEventFilters(filters); err != nil {
		return err
	}
	cursor, err := s.EventCursor(ctx, since)
	if err != nil {
		return err
	}
	return s.WatchEventsFrom(ctx, cursor, filters, fn)
}

// ValidateEventFilters checks WatchEvents filters.
func (s *Service) ValidateEventFilters(filters []*metadatav1.Filter) error {
	_, err := parseEventFilters(filters)
	return err
}

// EventCursor returns the position in the event log of since: after the
// newest event when since is zero, else after the last event before it.
// Events appended after EventCursor returns come after the position.
func (s *Service) EventCursor(ctx context.Context, since time.Time) (EventPosition, error) {
	return s.b.EventPosition(ctx, since)
}

// WatchEventsFrom is WatchEvents from a position EventCursor returned.
func (s *Service) WatchEventsFrom(ctx context.Context, pos EventPosition, filters []*metadatav1.Filter, fn func(*metadatav1.Event) error) error {
	f, err := parseEventFilters(filters)
	if err != nil {
		return err
	}
	for {
		wake, remote := s.wakeChan(), s.b.EventsNotify()
		evs, next, err := s.b.EventsAfter(ctx, pos, eventBatch)
		if err != nil {
			return err
		}
		for _, ev := range evs {
			if f.match(ev) {
				if err := fn(ev); err != nil {
					return err
				}
			}
		}
		pos = next
		if len(evs) == eventBatch {
			continue
		}
		t := time.NewTimer(s.poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-wake:
		case <-remote:
		case <-t.C:
		}
		t.Stop()
	}
}

// Bounds of a build event's attributes: the builder's, but stored.
const (
	maxBuildEventAttrs    = 16
	maxBuildEventAttrSize = 4096
)

// RecordBuildEvent records a build's start or end for the event stream.
// Only the build actions are accepted; the time and the actor are the
// call's.
func (s *Service) RecordBuildEvent(ctx context.Context, in *metadatav1.Event) error {
	switch in.GetAction() {
	case metadatav1.EventAction_EVENT_ACTION_BUILD_STARTED, metadatav1.EventAction_EVENT_ACTION_BUILD_FINISHED, metadatav1.EventAction_EVENT_ACTION_BUILD_FAILED:
	default:
		return errdefs.InvalidArgument("build event: action %s is not a build's", in.GetAction())
	}
	if len(in.GetAttributes()) > maxBuildEventAttrs {
		return errdefs.InvalidArgument("build event: %d attributes; at most %d", len(in.GetAttributes()), maxBuildEventAttrs)
	}
	attrs := make(map[string]string, len(in.GetAttributes()))
	for k, v := range in.GetAttributes() {
		if len(k)+len(v) > maxBuildEventAttrSize {
			v = v[:max(0, maxBuildEventAttrSize-len(k))]
		}
		attrs[k] = v
	}
	ev := event(ctx, s.now(), in.GetAction(), in.GetImageId(), in.GetReference(), attrs)
	return s.update(ctx, func(tx Tx) error { return tx.AppendEvent(ctx, ev) })
}
