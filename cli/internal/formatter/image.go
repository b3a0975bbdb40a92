package formatter

import (
	"sort"
	"time"

	"github.com/distribution/reference"
	units "github.com/docker/go-units"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
)

const (
	defaultImageTableFormat           = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{if .CreatedSince }}{{.CreatedSince}}{{else}}N/A{{end}}\t{{.Size}}"
	defaultImageTableFormatWithDigest = "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{if .CreatedSince }}{{.CreatedSince}}{{else}}N/A{{end}}\t{{.Size}}"
)

var imageHeader = map[string]string{
	"ID":           "IMAGE ID",
	"Repository":   "REPOSITORY",
	"Tag":          "TAG",
	"Digest":       "DIGEST",
	"CreatedSince": "CREATED",
	"CreatedAt":    "CREATED AT",
	"Size":         "SIZE",
	"Containers":   "CONTAINERS",
	"VirtualSize":  "SIZE",
	"SharedSize":   "SHARED SIZE",
	"UniqueSize":   "UNIQUE SIZE",
}

// NewImageFormat returns the format `images` renders with, given its
// --format, -q and --digests.
func NewImageFormat(source string, quiet, digest bool) Format {
	if source == "" {
		source = TableFormatKey
	}
	if source == TableFormatKey {
		switch {
		case quiet:
			return QuietFormat
		case digest:
			return defaultImageTableFormatWithDigest
		default:
			return defaultImageTableFormat
		}
	}
	// Docker 28 no longer adds a DIGEST column to a custom table format.
	return Format(source)
}

// WriteImages renders images as `docker images` does: one row per tag (per
// tag and digest with --digests), "<none>" for dangling images, in the order
// given (newest first), and within an image by repository name.
func WriteImages(ctx Context, images []*metadatav1.ImageSummary, digests bool) error {
	needDigest := digests || ctx.Format.Contains("{{.Digest}}")
	return ctx.write(imageHeader, func(emit func(any) error) error {
		for _, img := range images {
			for _, row := range imageRows(ctx, img, needDigest, digests) {
				if err := emit(row); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// imageRows splits an image into Docker's rows. Docker walks a map here, so
// its order of repositories varies from run to run; Strata sorts them.
func imageRows(ctx Context, img *metadatav1.ImageSummary, needDigest, showDigestRows bool) []*imageRow {
	newRow := func(repo, tag, dgst string) *imageRow {
		return &imageRow{ctx: ctx, img: img, repo: repo, tag: tag, digest: dgst}
	}
	if len(img.GetRepoTags()) == 0 && len(img.GetRepoDigests()) == 0 {
		return []*imageRow{newRow("<none>", "<none>", "<none>")}
	}
	repoTags := map[string][]string{}
	repoDigests := map[string][]string{}
	for _, s := range img.GetRepoTags() {
		ref, err := reference.ParseNormalizedNamed(s)
		if err != nil {
			continue
		}
		if tagged, ok := ref.(reference.NamedTagged); ok {
			name := reference.FamiliarName(ref)
			repoTags[name] = append(repoTags[name], tagged.Tag())
		}
	}
	for _, s := range img.GetRepoDigests() {
		ref, err := reference.ParseNormalizedNamed(s)
		if err != nil {
			continue
		}
		if c, ok := ref.(reference.Canonical); ok {
			name := reference.FamiliarName(ref)
			repoDigests[name] = append(repoDigests[name], c.Digest().String())
		}
	}
	var rows []*imageRow
	for _, repo := range sortedKeys(repoTags) {
		dgsts := repoDigests[repo]
		delete(repoDigests, repo)
		if !needDigest {
			dgsts = nil
		}
		for _, tag := range repoTags[repo] {
			if len(dgsts) == 0 {
				rows = append(rows, newRow(repo, tag, "<none>"))
				continue
			}
			for _, d := range dgsts {
				rows = append(rows, newRow(repo, tag, d))
			}
		}
	}
	for _, repo := range sortedKeys(repoDigests) {
		if !showDigestRows {
			rows = append(rows, newRow(repo, "<none>", ""))
			continue
		}
		for _, d := range repoDigests[repo] {
			rows = append(rows, newRow(repo, "<none>", d))
		}
	}
	return rows
}

func sortedKeys(m map[string][]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// imageRow is one row of `images`; its methods are the template's fields,
// named as Docker names them.
type imageRow struct {
	ctx               Context
	img               *metadatav1.ImageSummary
	repo, tag, digest string
}

func (r *imageRow) MarshalJSON() ([]byte, error) { return marshalFields(r) }

func (r *imageRow) ID() string {
	if r.ctx.Trunc {
		return TruncateID(r.img.GetId())
	}
	return r.img.GetId()
}

func (r *imageRow) Repository() string { return r.repo }

func (r *imageRow) Tag() string { return r.tag }

func (r *imageRow) Digest() string { return r.digest }

func (r *imageRow) created() time.Time { return time.Unix(r.img.GetCreated().GetSeconds(), 0) }

func (r *imageRow) CreatedSince() string {
	return units.HumanDuration(r.ctx.now().UTC().Sub(r.created())) + " ago"
}

func (r *imageRow) CreatedAt() string { return r.created().In(r.ctx.location()).String() }

func (r *imageRow) Size() string { return units.HumanSizeWithPrecision(float64(r.img.GetSize()), 3) }

// Containers, SharedSize and UniqueSize are what Docker prints when its
// daemon did not count them; Strata runs no containers and shares nothing
// it would count.
func (r *imageRow) Containers() string { return "N/A" }

func (r *imageRow) VirtualSize() string { return units.HumanSize(float64(r.img.GetSize())) }

func (r *imageRow) SharedSize() string { return "N/A" }

func (r *imageRow) UniqueSize() string { return "N/A" }
