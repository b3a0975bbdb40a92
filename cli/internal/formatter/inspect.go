package formatter

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"text/template"
	"time"

	"github.com/strata-build/strata/lib/dockerimage"
)

// Inspector renders `inspect` as Docker does: with no format an indented
// JSON array of the elements, with "json" the same array compacted, and
// with a template one line per element.
type Inspector struct {
	out  io.Writer
	tmpl *template.Template // nil for the JSON forms
	// indent is the JSON array's indentation; "" compacts it.
	indent string
	raws   [][]byte
	lines  bytes.Buffer
}

// NewInspector returns an inspector for a --format value. A template that
// does not parse is an error.
func NewInspector(out io.Writer, format string) (*Inspector, error) {
	switch format {
	case "":
		return &Inspector{out: out, indent: "    "}, nil
	case JSONFormatKey:
		return &Inspector{out: out}, nil
	}
	tmpl, err := parse(format)
	if err != nil {
		return nil, err
	}
	return &Inspector{out: out, tmpl: tmpl}, nil
}

// Inspect adds one element, given as Docker's JSON object.
func (i *Inspector) Inspect(dockerJSON []byte) error {
	if i.tmpl == nil {
		i.raws = append(i.raws, dockerJSON)
		return nil
	}
	// As Docker: the template runs over the typed object first, so that
	// fields print as Docker's types print; over the raw JSON when that
	// fails (a field Strata's type lacks), where a missing key is an error.
	var typed ImageInspect
	var buf bytes.Buffer
	if err := json.Unmarshal(dockerJSON, &typed); err == nil {
		if err := i.tmpl.Execute(&buf, &typed); err == nil {
			i.lines.Write(buf.Bytes())
			i.lines.WriteByte('\n')
			return nil
		}
	}
	var raw any
	dec := json.NewDecoder(bytes.NewReader(dockerJSON))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return fmt.Errorf("unable to read inspect data: %w", err)
	}
	buf.Reset()
	if err := i.tmpl.Option("missingkey=error").Execute(&buf, raw); err != nil {
		return fmt.Errorf("template parsing error: %w", err)
	}
	i.lines.Write(buf.Bytes())
	i.lines.WriteByte('\n')
	return nil
}

// Flush writes what was inspected.
func (i *Inspector) Flush() error {
	if i.tmpl != nil {
		if i.lines.Len() == 0 {
			_, err := io.WriteString(i.out, "\n")
			return err
		}
		_, err := i.lines.WriteTo(i.out)
		return err
	}
	if len(i.raws) == 0 {
		_, err := io.WriteString(i.out, "[]\n")
		return err
	}
	array := append([]byte("["), bytes.Join(i.raws, []byte(","))...)
	array = append(array, ']')
	var out bytes.Buffer
	var err error
	if i.indent == "" {
		err = json.Compact(&out, array)
	} else {
		err = json.Indent(&out, array, "", i.indent)
	}
	if err != nil {
		return fmt.Errorf("reading inspect data: %w", err)
	}
	out.WriteByte('\n')
	_, err = out.WriteTo(i.out)
	return err
}

// ImageInspect mirrors the Go type Docker's CLI decodes `image inspect`
// into (Docker 28's image.InspectResponse), so that templates print fields
// as Docker prints them: a time as a time, a port set as a map, and
// `{{json .Config}}` with the OCI config's fields only.
type ImageInspect struct {
	ID              string `json:"Id"`
	RepoTags        []string
	RepoDigests     []string
	Parent          string
	Comment         string
	Created         string           `json:",omitempty"`
	Container       string           `json:",omitempty"`
	ContainerConfig *ContainerConfig `json:",omitempty"`
	DockerVersion   string
	Author          string
	Config          *ImageConfig
	Architecture    string
	Variant         string `json:",omitempty"`
	Os              string
	OsVersion       string `json:",omitempty"`
	Size            int64
	VirtualSize     int64 `json:",omitempty"`
	GraphDriver     GraphDriver
	RootFS          RootFS
	Metadata        ImageMetadata
}

// ImageConfig mirrors Docker's DockerOCIImageConfig: the OCI image config
// with Docker's extensions.
type ImageConfig struct {
	User         string              `json:",omitempty"`
	ExposedPorts map[string]struct{} `json:",omitempty"`
	Env          []string            `json:",omitempty"`
	Entrypoint   []string            `json:",omitempty"`
	Cmd          []string            `json:",omitempty"`
	Volumes      map[string]struct{} `json:",omitempty"`
	WorkingDir   string              `json:",omitempty"`
	Labels       map[string]string   `json:",omitempty"`
	StopSignal   string              `json:",omitempty"`
	ArgsEscaped  bool                `json:",omitempty"`
	Healthcheck  *HealthConfig       `json:",omitempty"`
	OnBuild      []string            `json:",omitempty"`
	Shell        []string            `json:",omitempty"`
}

// ContainerConfig is Docker's container.Config, and HealthConfig its
// health check: lib/dockerimage's, the type the services read and write
// image configs with.
type (
	ContainerConfig = dockerimage.ContainerConfig
	HealthConfig    = dockerimage.HealthConfig
)

// GraphDriver mirrors Docker's storage driver data.
type GraphDriver struct {
	Data map[string]string
	Name string
}

// RootFS mirrors Docker's image RootFS.
type RootFS struct {
	Type      string
	Layers    []string `json:",omitempty"`
	BaseLayer string   `json:",omitempty"`
}

// ImageMetadata mirrors Docker's image Metadata.
type ImageMetadata struct {
	LastTagTime time.Time `json:",omitempty"`
}
