package image

import (
	"bytes"
	"encoding/json"
	"sort"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/dockerimage"
	"github.com/strata-build/strata/lib/errdefs"
)

// dockerInspect is Docker 20.10's types.ImageInspect, in its field order
// with its JSON tags: the JSON `docker image inspect` prints.
type dockerInspect struct {
	ID              string `json:"Id"`
	RepoTags        []string
	RepoDigests     []string
	Parent          string
	Comment         string
	Created         string
	Container       string
	ContainerConfig *dockerimage.ContainerConfig
	DockerVersion   string
	Author          string
	Config          *dockerimage.ContainerConfig
	Architecture    string
	Variant         string `json:",omitempty"`
	Os              string
	OsVersion       string `json:",omitempty"`
	Size            int64
	VirtualSize     int64
	GraphDriver     struct {
		Data map[string]string
		Name string
	}
	RootFS struct {
		Type   string
		Layers []string `json:",omitempty"`
	}
	Metadata struct {
		LastTagTime time.Time
	}
}

// graphDriverName is what Inspect reports as the storage driver: Strata's
// builder keeps layers as overlay directories, as Docker's overlay2 does.
const graphDriverName = "overlay2"

// inspect builds the inspect view of an image whose RepoTags, RepoDigests
// and LastTagTime are filled in.
func inspect(img *metadatav1.Image) (*metadatav1.ImageInspect, []byte, error) {
	cfg, err := parseConfig(img.GetConfig())
	if err != nil {
		return nil, nil, errdefs.Internal("image %s: stored config does not parse: %v", img.GetId(), err)
	}
	d := dockerInspect{
		ID:              img.GetId(),
		RepoTags:        nonNil(img.GetRepoTags()),
		RepoDigests:     nonNil(img.GetRepoDigests()),
		Parent:          img.GetParent(),
		Comment:         cfg.Comment,
		Container:       cfg.Container,
		ContainerConfig: cfg.ContainerConfig,
		DockerVersion:   cfg.DockerVersion,
		Author:          cfg.Author,
		Config:          cfg.Config,
		Architecture:    cfg.Architecture,
		Variant:         cfg.Variant,
		Os:              cfg.OS,
		OsVersion:       cfg.OSVersion,
		Size:            img.GetSize(),
		VirtualSize:     img.GetSize(),
	}
	d.Created = cfg.Created.Format(time.RFC3339Nano)
	if d.ContainerConfig == nil {
		// Docker's image holds ContainerConfig by value: an image without one
		// shows the empty config, never null.
		d.ContainerConfig = &dockerimage.ContainerConfig{}
	}
	d.GraphDriver.Name = graphDriverName
	d.RootFS.Type = "layers"
	if cfg.RootFS.Type != "" {
		d.RootFS.Type = cfg.RootFS.Type
	}
	d.RootFS.Layers = diffIDStrings(cfg)
	if img.GetLastTagTime() != nil {
		d.Metadata.LastTagTime = img.GetLastTagTime().AsTime()
	}
	// Docker's API writes JSON without HTML escaping ("<" stays "<").
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(d); err != nil {
		return nil, nil, errdefs.Internal("image %s: marshalling inspect: %v", img.GetId(), err)
	}
	b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))

	out := &metadatav1.ImageInspect{
		Id:              d.ID,
		RepoTags:        d.RepoTags,
		RepoDigests:     d.RepoDigests,
		Parent:          d.Parent,
		Comment:         d.Comment,
		Container:       d.Container,
		ContainerConfig: containerConfigProto(d.ContainerConfig),
		DockerVersion:   d.DockerVersion,
		Author:          d.Author,
		Config:          containerConfigProto(cfg.Config),
		Architecture:    d.Architecture,
		Variant:         d.Variant,
		Os:              d.Os,
		Size:            d.Size,
		RootFs:          &metadatav1.RootFS{Type: d.RootFS.Type, Layers: d.RootFS.Layers},
		Metadata:        &metadatav1.ImageMetadata{LastTagTime: img.GetLastTagTime()},
	}
	if !cfg.Created.IsZero() {
		out.Created = timestamppb.New(cfg.Created)
	}
	return out, b, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func containerConfigProto(c *dockerimage.ContainerConfig) *metadatav1.ContainerConfig {
	if c == nil {
		return nil
	}
	out := &metadatav1.ContainerConfig{
		Hostname:     c.Hostname,
		Domainname:   c.Domainname,
		User:         c.User,
		AttachStdin:  c.AttachStdin,
		AttachStdout: c.AttachStdout,
		AttachStderr: c.AttachStderr,
		ExposedPorts: sortedKeys(c.ExposedPorts),
		Tty:          c.Tty,
		OpenStdin:    c.OpenStdin,
		StdinOnce:    c.StdinOnce,
		Env:          c.Env,
		Cmd:          c.Cmd,
		ArgsEscaped:  c.ArgsEscaped,
		Image:        c.Image,
		Volumes:      sortedKeys(c.Volumes),
		WorkingDir:   c.WorkingDir,
		Entrypoint:   c.Entrypoint,
		OnBuild:      c.OnBuild,
		Labels:       c.Labels,
		StopSignal:   c.StopSignal,
		Shell:        c.Shell,
	}
	if h := c.Healthcheck; h != nil {
		out.Healthcheck = &metadatav1.HealthConfig{
			Test:          h.Test,
			Interval:      duration(h.Interval),
			Timeout:       duration(h.Timeout),
			StartPeriod:   duration(h.StartPeriod),
			StartInterval: duration(h.StartInterval),
			Retries:       int32(h.Retries),
		}
	}
	return out
}

func duration(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}

func sortedKeys(m map[string]struct{}) []string {
	if len(m) == 0 {
		return nil
	}
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
