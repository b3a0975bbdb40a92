// Package dockerimage holds the Docker image config, the one type every
// Strata service reads and writes it with: the builder marshals it into the
// bytes whose digest is an image's ID, the metadata service parses it for
// inspect and history, and the CLI prints its container config.
//
// Docker's own types are not imported: the current moby API module no
// longer has the 20.10 fields (container, container_config) that classic
// builds write and `docker image inspect` still shows, and its
// github.com/moby/docker-image-spec omits empty lists that Docker's
// classic builder writes as null, which would change image IDs.
package dockerimage

import (
	"bytes"
	"encoding/json"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/lib/errdefs"
)

// Config is an image config as Docker writes it: the OCI image config plus
// Docker's fields (container_config, docker_version, …). Marshalled with
// encoding/json it yields the bytes `docker build` and `docker import` write,
// byte for byte, so an image built or imported the same way gets the same ID:
// Docker sorts the top-level keys, and the fields below are declared in that
// order; ContainerConfig's fields follow Docker's container.Config.
//
// A Config parsed from a pulled or loaded image drops fields it does not know.
// That matters only when a new image is derived from it (as Docker's own
// struct does); a pulled or loaded image keeps its config bytes verbatim.
type Config struct {
	Architecture    string           `json:"architecture"`
	Author          string           `json:"author,omitempty"`
	Comment         string           `json:"comment,omitempty"`
	Config          *ContainerConfig `json:"config,omitempty"`
	Container       string           `json:"container,omitempty"`
	ContainerConfig *ContainerConfig `json:"container_config,omitempty"`
	Created         time.Time        `json:"created"`
	DockerVersion   string           `json:"docker_version,omitempty"`
	History         []History        `json:"history,omitempty"`
	OS              string           `json:"os"`
	OSFeatures      []string         `json:"os.features,omitempty"`
	OSVersion       string           `json:"os.version,omitempty"`
	RootFS          RootFS           `json:"rootfs"`
	Variant         string           `json:"variant,omitempty"`
}

// ContainerConfig is Docker's container configuration (container.Config),
// the "config" and "container_config" objects of an image config. Nil slices
// and maps marshal as null, as Docker writes them. Cmd, Entrypoint and Shell
// read a JSON string too, as Docker's strslice does.
type ContainerConfig struct {
	Hostname        string              `json:"Hostname"`
	Domainname      string              `json:"Domainname"`
	User            string              `json:"User"`
	AttachStdin     bool                `json:"AttachStdin"`
	AttachStdout    bool                `json:"AttachStdout"`
	AttachStderr    bool                `json:"AttachStderr"`
	ExposedPorts    map[string]struct{} `json:"ExposedPorts,omitempty"`
	Tty             bool                `json:"Tty"`
	OpenStdin       bool                `json:"OpenStdin"`
	StdinOnce       bool                `json:"StdinOnce"`
	Env             []string            `json:"Env"`
	Cmd             StrSlice            `json:"Cmd"`
	Healthcheck     *HealthConfig       `json:"Healthcheck,omitempty"`
	ArgsEscaped     bool                `json:"ArgsEscaped,omitempty"`
	Image           string              `json:"Image"`
	Volumes         map[string]struct{} `json:"Volumes"`
	WorkingDir      string              `json:"WorkingDir"`
	Entrypoint      StrSlice            `json:"Entrypoint"`
	NetworkDisabled bool                `json:"NetworkDisabled,omitempty"`
	MacAddress      string              `json:"MacAddress,omitempty"`
	OnBuild         []string            `json:"OnBuild"`
	Labels          map[string]string   `json:"Labels"`
	StopSignal      string              `json:"StopSignal,omitempty"`
	StopTimeout     *int                `json:"StopTimeout,omitempty"`
	Shell           StrSlice            `json:"Shell,omitempty"`
}

// HealthConfig is Docker's health check configuration. Durations are in
// nanoseconds, as Docker writes them.
type HealthConfig struct {
	Test          []string      `json:"Test,omitempty"`
	Interval      time.Duration `json:"Interval,omitempty"`
	Timeout       time.Duration `json:"Timeout,omitempty"`
	StartPeriod   time.Duration `json:"StartPeriod,omitempty"`
	StartInterval time.Duration `json:"StartInterval,omitempty"`
	Retries       int           `json:"Retries,omitempty"`
}

// History is one entry of an image config's history.
type History struct {
	Created    time.Time `json:"created"`
	CreatedBy  string    `json:"created_by,omitempty"`
	Author     string    `json:"author,omitempty"`
	Comment    string    `json:"comment,omitempty"`
	EmptyLayer bool      `json:"empty_layer,omitempty"`
}

// RootFS lists the diff IDs of an image's layers, bottom first.
type RootFS struct {
	Type    string          `json:"type"`
	DiffIDs []digest.Digest `json:"diff_ids"`
}

// Clone returns a deep copy of c, for deriving a new image config from a
// parent's without changing the parent's.
func (c *Config) Clone() *Config {
	out := *c
	out.Config = c.Config.Clone()
	out.ContainerConfig = c.ContainerConfig.Clone()
	out.History = append([]History(nil), c.History...)
	out.OSFeatures = append([]string(nil), c.OSFeatures...)
	out.RootFS.DiffIDs = append([]digest.Digest(nil), c.RootFS.DiffIDs...)
	return &out
}

// Clone returns a deep copy of c; nil stays nil, and so do nil slices and
// maps, which Docker writes as null.
func (c *ContainerConfig) Clone() *ContainerConfig {
	if c == nil {
		return nil
	}
	out := *c
	out.ExposedPorts = cloneSet(c.ExposedPorts)
	out.Volumes = cloneSet(c.Volumes)
	out.Env = cloneStrings(c.Env)
	out.Cmd = cloneStrings(c.Cmd)
	out.Entrypoint = cloneStrings(c.Entrypoint)
	out.OnBuild = cloneStrings(c.OnBuild)
	out.Shell = cloneStrings(c.Shell)
	if c.Labels != nil {
		out.Labels = make(map[string]string, len(c.Labels))
		for k, v := range c.Labels {
			out.Labels[k] = v
		}
	}
	if c.Healthcheck != nil {
		h := *c.Healthcheck
		h.Test = cloneStrings(h.Test)
		out.Healthcheck = &h
	}
	if c.StopTimeout != nil {
		t := *c.StopTimeout
		out.StopTimeout = &t
	}
	return &out
}

func cloneStrings(s []string) []string {
	if s == nil {
		return nil
	}
	return append([]string{}, s...)
}

func cloneSet(m map[string]struct{}) map[string]struct{} {
	if m == nil {
		return nil
	}
	out := make(map[string]struct{}, len(m))
	for k := range m {
		out[k] = struct{}{}
	}
	return out
}

// Marshal returns the config's JSON, the bytes whose digest is the image ID.
// It fails only for a time outside the years 0–9999.
func (c *Config) Marshal() ([]byte, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, errdefs.InvalidArgument("marshalling the image config: %v", err)
	}
	return b, nil
}

// StrSlice is Docker's strslice.StrSlice: a list of strings that reads a
// JSON string as a list of one.
type StrSlice []string

// UnmarshalJSON reads a JSON array of strings, a string, or null.
func (s *StrSlice) UnmarshalJSON(b []byte) error {
	if len(b) == 0 || bytes.Equal(b, []byte("null")) {
		return nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err == nil {
		*s = list
		return nil
	}
	var one string
	if err := json.Unmarshal(b, &one); err != nil {
		return err
	}
	*s = StrSlice{one}
	return nil
}
