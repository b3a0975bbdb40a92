package image

import (
	"encoding/json"
	"io"

	"github.com/strata-build/strata/lib/dockerimage"
	"github.com/strata-build/strata/lib/errdefs"
)

// MaxConfigSize bounds an image config (and a manifest) read from anywhere:
// the JSON is parsed in memory, so an unbounded one would be a memory bomb.
// Real configs are a few kilobytes; Docker's own limit for manifests is 4 MiB.
const MaxConfigSize = 4 << 20

// The Docker image config types are lib/dockerimage's, shared with the
// metadata service and the CLI; Config.Marshal yields the bytes whose digest
// is the image ID.
type (
	Config          = dockerimage.Config
	ContainerConfig = dockerimage.ContainerConfig
	HealthConfig    = dockerimage.HealthConfig
	History         = dockerimage.History
	RootFS          = dockerimage.RootFS
)

// ParseConfig parses an image config, Docker's or OCI's. It refuses configs
// over MaxConfigSize, malformed JSON, and configs without a rootfs of type
// "layers".
func ParseConfig(b []byte) (*Config, error) {
	if len(b) > MaxConfigSize {
		return nil, errdefs.ResourceExhausted("image config of %d bytes is over the %d-byte limit", len(b), MaxConfigSize)
	}
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, errdefs.InvalidArgument("image config is not valid JSON: %v", err)
	}
	if c.RootFS.Type != "layers" {
		return nil, errdefs.InvalidArgument("image config has rootfs type %q, want \"layers\"", c.RootFS.Type)
	}
	for _, d := range c.RootFS.DiffIDs {
		if err := d.Validate(); err != nil {
			return nil, errdefs.InvalidArgument("image config lists diff ID %q: %v", d, err)
		}
	}
	return &c, nil
}

// ReadJSON reads at most MaxConfigSize bytes of a JSON document (a config,
// manifest or index) from r, failing with RESOURCE_EXHAUSTED, naming what,
// when r holds more.
func ReadJSON(r io.Reader, what string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxConfigSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxConfigSize {
		return nil, errdefs.ResourceExhausted("%s is over the %d-byte limit for JSON documents", what, MaxConfigSize)
	}
	return b, nil
}
