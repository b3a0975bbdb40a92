package client

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
)

// The metadata service's messages a caller reads.
type (
	Image        = metadatav1.Image
	ImageSummary = metadatav1.ImageSummary
	HistoryRow   = metadatav1.HistoryRow
	DeletedItem  = metadatav1.DeletedItem
	Filter       = metadatav1.Filter
	Event        = metadatav1.Event
	DiskUsage    = metadatav1.GetDiskUsageResponse
)

// ListOptions are docker images' options.
type ListOptions struct {
	// All includes intermediate images (-a).
	All bool
	// Filters are Docker's: reference, dangling, label, before, since.
	Filters []*Filter
}

// Images lists images, every page of them.
func (c *Client) Images(ctx context.Context, opts ListOptions) ([]*ImageSummary, error) {
	images, err := c.images()
	if err != nil {
		return nil, err
	}
	req := &metadatav1.ListImagesRequest{All: opts.All, Filters: opts.Filters}
	var list []*ImageSummary
	for {
		resp, err := images.ListImages(ctx, req)
		if err != nil {
			return nil, err
		}
		list = append(list, resp.GetImages()...)
		if resp.GetNextPageToken() == "" {
			return list, nil
		}
		req.PageToken = resp.GetNextPageToken()
	}
}

// Image returns the image ref names (a tag, an ID or a prefix of one,
// repo@digest); ErrNotFound when none does.
func (c *Client) Image(ctx context.Context, ref string) (*Image, error) {
	images, err := c.images()
	if err != nil {
		return nil, err
	}
	resp, err := images.GetImage(ctx, &metadatav1.GetImageRequest{Reference: ref})
	if err != nil {
		return nil, err
	}
	return resp.GetImage(), nil
}

// Inspect returns docker image inspect's JSON document of the image ref
// names.
func (c *Client) Inspect(ctx context.Context, ref string) ([]byte, error) {
	images, err := c.images()
	if err != nil {
		return nil, err
	}
	resp, err := images.InspectImage(ctx, &metadatav1.InspectImageRequest{Reference: ref})
	if err != nil {
		return nil, err
	}
	if len(resp.GetDockerJson()) == 0 {
		return nil, fmt.Errorf("the metadata service returned no Docker JSON for %s", ref)
	}
	return resp.GetDockerJson(), nil
}

// History returns docker history's rows of the image ref names, newest
// first.
func (c *Client) History(ctx context.Context, ref string) ([]*HistoryRow, error) {
	images, err := c.images()
	if err != nil {
		return nil, err
	}
	resp, err := images.ImageHistory(ctx, &metadatav1.ImageHistoryRequest{Reference: ref})
	if err != nil {
		return nil, err
	}
	return resp.GetRows(), nil
}

// Tag makes target name the image source names, moving target if it
// named another image.
func (c *Client) Tag(ctx context.Context, source, target string) error {
	images, err := c.images()
	if err != nil {
		return err
	}
	_, err = images.TagImage(ctx, &metadatav1.TagImageRequest{Source: source, Target: target})
	return err
}

// Untag removes the tag ref, leaving its image.
func (c *Client) Untag(ctx context.Context, ref string) error {
	images, err := c.images()
	if err != nil {
		return err
	}
	_, err = images.UntagImage(ctx, &metadatav1.UntagImageRequest{Reference: ref})
	return err
}

// Tags lists the tags of a repository as a registry names it
// ("localhost:5000/team/app" is "team/app"), in lexical order.
func (c *Client) Tags(ctx context.Context, repository string) ([]string, error) {
	images, err := c.images()
	if err != nil {
		return nil, err
	}
	resp, err := images.ListTags(ctx, &metadatav1.ListTagsRequest{Repository: repository})
	if err != nil {
		return nil, err
	}
	return resp.GetTags(), nil
}

// RemoveOptions are docker rmi's options.
type RemoveOptions struct {
	// Force removes an image that several tags name, or that a child needs.
	Force bool
	// NoPrune keeps untagged parents.
	NoPrune bool
}

// Remove untags or deletes the image ref names, with docker rmi's rules,
// and returns what went, in order.
func (c *Client) Remove(ctx context.Context, ref string, opts RemoveOptions) ([]*DeletedItem, error) {
	images, err := c.images()
	if err != nil {
		return nil, err
	}
	resp, err := images.DeleteImage(ctx, &metadatav1.DeleteImageRequest{Reference: ref, Force: opts.Force, NoPrune: opts.NoPrune})
	if err != nil {
		return nil, err
	}
	return resp.GetItems(), nil
}

// PruneOptions are docker image prune's options.
type PruneOptions struct {
	// All removes every unused image, not only dangling ones.
	All bool
	// Filters are until=… and label=….
	Filters []*Filter
}

// PruneReport is what Prune removed.
type PruneReport struct {
	Items          []*DeletedItem
	SpaceReclaimed int64
}

// Prune removes unused images.
func (c *Client) Prune(ctx context.Context, opts PruneOptions) (PruneReport, error) {
	images, err := c.images()
	if err != nil {
		return PruneReport{}, err
	}
	resp, err := images.PruneImages(ctx, &metadatav1.PruneImagesRequest{All: opts.All, Filters: opts.Filters})
	if err != nil {
		return PruneReport{}, err
	}
	return PruneReport{Items: resp.GetItems(), SpaceReclaimed: resp.GetSpaceReclaimed()}, nil
}

// DiskUsage returns docker system df's figures.
func (c *Client) DiskUsage(ctx context.Context) (*DiskUsage, error) {
	images, err := c.images()
	if err != nil {
		return nil, err
	}
	return images.GetDiskUsage(ctx, &metadatav1.GetDiskUsageRequest{})
}

// WatchOptions choose the events WatchEvents delivers.
type WatchOptions struct {
	// Since replays recorded events from this time first; zero: only new
	// events.
	Since time.Time
	// Filters are "image" (an ID or reference) and "event" (an action such
	// as "tag").
	Filters []*Filter
}

// WatchEvents calls fn with each event (tag, untag, delete, push, …) until
// ctx is canceled, fn returns an error (which WatchEvents returns), or the
// stream fails.
func (c *Client) WatchEvents(ctx context.Context, opts WatchOptions, fn func(*Event) error) error {
	images, err := c.images()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req := &metadatav1.WatchEventsRequest{Filters: opts.Filters}
	if !opts.Since.IsZero() {
		req.Since = timestamppb.New(opts.Since)
	}
	stream, err := images.WatchEvents(ctx, req)
	if err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		if err := fn(resp.GetEvent()); err != nil {
			return err
		}
	}
}
