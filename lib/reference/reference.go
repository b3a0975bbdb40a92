// Package reference parses and prints image references with Docker's grammar,
// over github.com/distribution/reference (the grammar Docker itself uses).
//
// A Reference is always normalized: "nginx" is held as
// "docker.io/library/nginx", and Familiar prints it back the way Docker shows
// it ("nginx:latest", "davidainslie/nginx:latest",
// "localhost:5000/team/app:1.2"). Every parse error wraps
// errdefs.ErrInvalidArgument and names the input and the reason.
//
// Image IDs are not references: ParseID and ParseIDPrefix recognise them, as
// Docker's commands do before they try a string as a reference.
package reference

import (
	"path"
	"regexp"
	"strings"

	distref "github.com/distribution/reference"
	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/lib/errdefs"
)

// DefaultTag is the tag a reference without tag or digest stands for.
const DefaultTag = "latest"

// ReasonInvalidReference is the errdefs reason of every parse error.
const ReasonInvalidReference = "INVALID_REFERENCE"

// Reference is a parsed, normalized image reference: a repository name with
// a tag, a digest, both, or (from Parse only) neither. The zero Reference is
// empty and IsZero reports it.
type Reference struct {
	named distref.Named
}

// Parse parses a reference as Docker's commands accept it and normalizes its
// name. It keeps the tag and digest as given and adds none: Parse("nginx")
// has no tag. Use ParseDefaultTag where Docker implies ":latest".
func Parse(s string) (Reference, error) {
	named, err := parseNormalized(s)
	if err != nil {
		return Reference{}, err
	}
	return Reference{named: named}, nil
}

// parseNormalized is distref.ParseNormalizedNamed refusing the names it
// leaves without a registry: it takes a first component with a dot or a
// colon for a host, and when that is no valid host ("a_b.c/app") the whole
// still parses, as a path, which registries and clients then read apart.
func parseNormalized(s string) (distref.Named, error) {
	named, err := distref.ParseNormalizedNamed(s)
	if err != nil {
		return nil, invalid(s, err.Error())
	}
	if distref.Domain(named) == "" {
		return nil, invalid(s, "its first component looks like a registry host but is not a valid one")
	}
	return named, nil
}

// ParseDefaultTag parses a reference the way Docker resolves one: a bare name
// gets the "latest" tag, and a reference with both a tag and a digest keeps
// only the digest (the tag is ignored, as `docker pull name:tag@digest` does).
func ParseDefaultTag(s string) (Reference, error) {
	if _, err := parseNormalized(s); err != nil {
		return Reference{}, err
	}
	named, err := distref.ParseDockerRef(s)
	if err != nil {
		return Reference{}, invalid(s, err.Error())
	}
	return Reference{named: named}, nil
}

// ParseTag parses the name of a tag to create: "nginx" means "nginx:latest",
// and a digest is refused, as `docker tag` refuses one.
func ParseTag(s string) (Reference, error) {
	named, err := parseNormalized(s)
	if err != nil {
		return Reference{}, err
	}
	if _, ok := named.(distref.Digested); ok {
		return Reference{}, invalid(s, "a tag cannot contain a digest (refusing to create a tag with a digest reference)")
	}
	return Reference{named: distref.TagNameOnly(named)}, nil
}

// ParseRepository parses a repository name without tag or digest.
func ParseRepository(s string) (Reference, error) {
	named, err := parseNormalized(s)
	if err != nil {
		return Reference{}, err
	}
	if !distref.IsNameOnly(named) {
		return Reference{}, invalid(s, "a repository name cannot contain a tag or a digest")
	}
	return Reference{named: named}, nil
}

// ParseCanonical parses a "name@digest" reference; a tag next to the digest
// is dropped.
func ParseCanonical(s string) (Reference, error) {
	r, err := ParseDefaultTag(s)
	if err != nil {
		return Reference{}, err
	}
	if r.Digest() == "" {
		return Reference{}, invalid(s, "a digest is required (name@sha256:…)")
	}
	return r, nil
}

func invalid(s, reason string) *errdefs.Error {
	return errdefs.InvalidArgument("invalid reference %q: %s", s, reason).
		WithReason(ReasonInvalidReference).WithDetail("reference", s)
}

// IsZero reports whether r is the zero Reference.
func (r Reference) IsZero() bool { return r.named == nil }

// Named returns the distribution/reference value, for libraries that take
// one (go-containerregistry, distribution clients).
func (r Reference) Named() distref.Named { return r.named }

// String returns the normalized reference, "docker.io/library/nginx:latest".
func (r Reference) String() string {
	if r.named == nil {
		return ""
	}
	return r.named.String()
}

// Familiar returns the reference as Docker shows it: "nginx:latest",
// "davidainslie/nginx:latest", "localhost:5000/team/app:1.2",
// "nginx@sha256:…".
func (r Reference) Familiar() string {
	if r.named == nil {
		return ""
	}
	return familiar(r.named, distref.FamiliarString(r.named))
}

// familiar returns the familiar form f of n unless it names another
// reference: a Docker Hub repository whose first component looks like a
// host ("docker.io/foo.com/app") would read as one on that host, so it
// keeps its full name.
func familiar(n distref.Named, f string) string {
	if back, err := distref.ParseNormalizedNamed(f); err != nil || back.Name() != n.Name() {
		return n.String()
	}
	return f
}

// Name returns the normalized repository name, "docker.io/library/nginx".
func (r Reference) Name() string {
	if r.named == nil {
		return ""
	}
	return r.named.Name()
}

// FamiliarName returns the repository name as Docker shows it, "nginx".
func (r Reference) FamiliarName() string {
	if r.named == nil {
		return ""
	}
	return familiar(distref.TrimNamed(r.named), distref.FamiliarName(r.named))
}

// Domain returns the registry host, "docker.io" or "localhost:5000".
func (r Reference) Domain() string {
	if r.named == nil {
		return ""
	}
	return distref.Domain(r.named)
}

// Path returns the repository path within its registry, "library/nginx".
func (r Reference) Path() string {
	if r.named == nil {
		return ""
	}
	return distref.Path(r.named)
}

// Tag returns the tag, or "" when there is none.
func (r Reference) Tag() string {
	if t, ok := r.named.(distref.Tagged); ok {
		return t.Tag()
	}
	return ""
}

// Digest returns the digest, or "" when there is none.
func (r Reference) Digest() digest.Digest {
	if d, ok := r.named.(distref.Digested); ok {
		return d.Digest()
	}
	return ""
}

// IsNameOnly reports whether r has neither tag nor digest.
func (r Reference) IsNameOnly() bool { return r.named != nil && distref.IsNameOnly(r.named) }

// Repository returns r without tag and digest.
func (r Reference) Repository() Reference {
	if r.named == nil {
		return r
	}
	return Reference{named: distref.TrimNamed(r.named)}
}

// WithTag returns r's repository with the given tag (and no digest).
func (r Reference) WithTag(tag string) (Reference, error) {
	if r.named == nil {
		return Reference{}, invalid(":"+tag, "no repository name")
	}
	t, err := distref.WithTag(distref.TrimNamed(r.named), tag)
	if err != nil {
		return Reference{}, invalid(r.FamiliarName()+":"+tag, err.Error())
	}
	return Reference{named: t}, nil
}

// WithDigest returns r's repository with the given digest (and no tag).
func (r Reference) WithDigest(d digest.Digest) (Reference, error) {
	if r.named == nil {
		return Reference{}, invalid("@"+d.String(), "no repository name")
	}
	c, err := distref.WithDigest(distref.TrimNamed(r.named), d)
	if err != nil {
		return Reference{}, invalid(r.FamiliarName()+"@"+d.String(), err.Error())
	}
	return Reference{named: c}, nil
}

// DefaultTagged returns r with the "latest" tag when it has neither a tag
// nor a digest, and r unchanged otherwise.
func (r Reference) DefaultTagged() Reference {
	if r.named == nil {
		return r
	}
	return Reference{named: distref.TagNameOnly(r.named)}
}

// Match reports whether the glob pattern (path.Match syntax, as
// `docker image ls --filter reference=…`) matches the familiar reference or
// the familiar repository name. A malformed pattern is INVALID_ARGUMENT.
func Match(pattern string, r Reference) (bool, error) {
	if r.named == nil {
		return false, nil
	}
	ok, err := distref.FamiliarMatch(pattern, r.named)
	if err != nil {
		return false, errdefs.InvalidArgument("invalid reference pattern %q: %v", pattern, err).
			WithReason("INVALID_FILTER").WithDetail("pattern", pattern)
	}
	return ok, nil
}

// ValidPattern reports whether pattern is a well-formed glob.
func ValidPattern(pattern string) error {
	if _, err := path.Match(pattern, ""); err != nil {
		return errdefs.InvalidArgument("invalid reference pattern %q: %v", pattern, err).
			WithReason("INVALID_FILTER").WithDetail("pattern", pattern)
	}
	return nil
}

var (
	hex64    = regexp.MustCompile(`^[a-f0-9]{64}$`)
	hexShort = regexp.MustCompile(`^[a-f0-9]{1,64}$`)
)

// ParseID recognises a full image ID: "sha256:<64 hex>" or the 64 hex digits
// alone, as Docker's commands accept. It returns the ID as "sha256:<hex>".
func ParseID(s string) (digest.Digest, bool) {
	hex := strings.TrimPrefix(s, "sha256:")
	if !hex64.MatchString(hex) {
		return "", false
	}
	return digest.NewDigestFromEncoded(digest.SHA256, hex), true
}

// ParseIDPrefix recognises a possible image ID prefix: hex digits, with or
// without "sha256:". It returns the hex digits. Whether a prefix is long
// enough, and unique, is for the image store to decide.
func ParseIDPrefix(s string) (string, bool) {
	hex := strings.TrimPrefix(s, "sha256:")
	if !hexShort.MatchString(hex) {
		return "", false
	}
	return hex, true
}

// TruncateID returns the 12 hex digits Docker shows for an image ID.
func TruncateID(id string) string {
	hex := id
	if i := strings.IndexByte(id, ':'); i >= 0 {
		hex = id[i+1:]
	}
	if len(hex) > 12 {
		hex = hex[:12]
	}
	return hex
}
