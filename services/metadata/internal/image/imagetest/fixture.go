// Package imagetest is the conformance suite of image.Store: TestStore runs
// every behaviour against a store, so that SQLite, PostgreSQL and the gRPC
// client prove the same contract. Fixtures build image records shaped as
// Docker's classic builder writes them.
package imagetest

import (
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
)

// DefaultPath is the PATH Docker puts in every config it writes.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Step describes one image of a test chain: a build step on top of Parent
// (or a base image when Parent is nil).
type Step struct {
	Parent *metadatav1.Image
	// CreatedBy is the history entry's instruction.
	CreatedBy string
	// Comment is the history entry's comment.
	Comment string
	// LayerSize > 0 adds a layer of that diff size; 0 is an empty layer.
	LayerSize int64
	// Env, Labels, Cmd are added to the config.
	Env    []string
	Labels map[string]string
	Cmd    []string
	// Created is the step's time; a fresh increasing time when zero.
	Created time.Time
	// NoParent leaves Parent out of the record (as for pulled images) while
	// still building on its config.
	NoParent bool
}

var clock atomic.Int64

// nextTime returns strictly increasing times, so that images sort by
// creation in the order tests make them.
func nextTime() time.Time {
	base := time.Date(2026, 11, 27, 4, 0, 0, 0, time.UTC).UnixNano()
	return time.Unix(0, base+clock.Add(int64(time.Second+123456789*time.Nanosecond))).UTC()
}

var seq atomic.Int64

type history struct {
	Created    time.Time `json:"created"`
	CreatedBy  string    `json:"created_by,omitempty"`
	Comment    string    `json:"comment,omitempty"`
	EmptyLayer bool      `json:"empty_layer,omitempty"`
}

// Make returns the record of a step's image: a Docker-style config (with
// Docker's default PATH), a schema 2 manifest and layers, unique to the
// call even for equal steps.
func Make(t testing.TB, s Step) *metadatav1.Image {
	t.Helper()
	created := s.Created
	if created.IsZero() {
		created = nextTime()
	}
	n := seq.Add(1)
	var parentCfg map[string]any
	var hist []history
	var diffIDs []string
	var layers []*metadatav1.Layer
	env := []string{DefaultPath}
	labels := map[string]string{}
	var cmd []string
	if s.Parent != nil {
		if err := json.Unmarshal(s.Parent.GetConfig(), &parentCfg); err != nil {
			t.Fatalf("imagetest: parent config: %v", err)
		}
		pc := parentCfg["config"].(map[string]any)
		env = nil
		for _, e := range pc["Env"].([]any) {
			env = append(env, e.(string))
		}
		if l, ok := pc["Labels"].(map[string]any); ok {
			for k, v := range l {
				labels[k] = v.(string)
			}
		}
		if c, ok := pc["Cmd"].([]any); ok {
			for _, e := range c {
				cmd = append(cmd, e.(string))
			}
		}
		b, _ := json.Marshal(parentCfg["history"])
		_ = json.Unmarshal(b, &hist)
		for _, d := range parentCfg["rootfs"].(map[string]any)["diff_ids"].([]any) {
			diffIDs = append(diffIDs, d.(string))
		}
		for _, l := range s.Parent.GetLayers() {
			layers = append(layers, &metadatav1.Layer{Digest: l.GetDigest(), DiffId: l.GetDiffId(), Size: l.GetSize(), MediaType: l.GetMediaType(), DiffSize: l.GetDiffSize()})
		}
	}
	env = append(env, s.Env...)
	for k, v := range s.Labels {
		labels[k] = v
	}
	if s.Cmd != nil {
		cmd = s.Cmd
	}
	hist = append(hist, history{Created: created, CreatedBy: s.CreatedBy, Comment: s.Comment, EmptyLayer: s.LayerSize == 0})
	if s.LayerSize > 0 {
		diffID := digest.FromString(fmt.Sprintf("diff %d", n)).String()
		blob := digest.FromString(diffID).String() // the layer blob holds its diff ID: see Contents
		diffIDs = append(diffIDs, diffID)
		layers = append(layers, &metadatav1.Layer{
			Digest: blob, DiffId: diffID, Size: s.LayerSize/2 + 1,
			MediaType: "application/vnd.docker.image.rootfs.diff.tar.gzip", DiffSize: s.LayerSize,
		})
	}
	parentID := ""
	if s.Parent != nil && !s.NoParent {
		parentID = s.Parent.GetId()
	}
	var labelsJSON any
	if len(labels) > 0 {
		labelsJSON = labels
	}
	var cmdJSON any
	if cmd != nil {
		cmdJSON = cmd
	}
	containerCfg := func(c any) map[string]any {
		return map[string]any{
			"Hostname": "", "Domainname": "", "User": "", "AttachStdin": false, "AttachStdout": false,
			"AttachStderr": false, "Tty": false, "OpenStdin": false, "StdinOnce": false,
			"Env": env, "Cmd": c, "Image": parentID, "Volumes": nil, "WorkingDir": "",
			"Entrypoint": nil, "OnBuild": nil, "Labels": labelsJSON,
		}
	}
	cfg := map[string]any{
		"architecture":     "amd64",
		"os":               "linux",
		"created":          created,
		"config":           containerCfg(cmdJSON),
		"container":        fmt.Sprintf("%064x", n),
		"container_config": containerCfg([]string{"/bin/sh", "-c", s.CreatedBy}),
		"docker_version":   "20.10.24+dfsg1",
		"history":          hist,
		"rootfs":           map[string]any{"type": "layers", "diff_ids": nonNil(diffIDs)},
	}
	cfgBytes, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	id := digest.FromBytes(cfgBytes).String()
	type desc struct {
		MediaType string `json:"mediaType"`
		Size      int64  `json:"size"`
		Digest    string `json:"digest"`
	}
	m := struct {
		SchemaVersion int    `json:"schemaVersion"`
		MediaType     string `json:"mediaType"`
		Config        desc   `json:"config"`
		Layers        []desc `json:"layers"`
	}{SchemaVersion: 2, MediaType: "application/vnd.docker.distribution.manifest.v2+json",
		Config: desc{"application/vnd.docker.container.image.v1+json", int64(len(cfgBytes)), id}, Layers: []desc{}}
	for _, l := range layers {
		m.Layers = append(m.Layers, desc{l.GetMediaType(), l.GetSize(), l.GetDigest()})
	}
	mb, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return &metadatav1.Image{
		Id:            id,
		Manifest:      &metadatav1.Descriptor{MediaType: m.MediaType, Digest: digest.FromBytes(mb).String(), Size: int64(len(mb))},
		ManifestBytes: mb,
		Config:        cfgBytes,
		Layers:        layers,
		Parent:        parentID,
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Chain makes a base image with one layer and n build steps on top of it,
// each a child of the one before, alternating empty and non-empty layers.
// It returns the images bottom first.
func Chain(t testing.TB, n int) []*metadatav1.Image {
	t.Helper()
	base := Make(t, Step{CreatedBy: "", Comment: "Imported from -", LayerSize: 1984412})
	out := []*metadatav1.Image{base}
	for i := 0; i < n; i++ {
		var size int64
		if i%2 == 1 {
			size = int64(100 + i)
		}
		out = append(out, Make(t, Step{Parent: out[len(out)-1], CreatedBy: fmt.Sprintf("/bin/sh -c #(nop)  ENV STEP=%d", i), LayerSize: size, Env: []string{fmt.Sprintf("STEP=%d", i)}}))
	}
	return out
}

// Contents returns the bytes of every blob a fixture image needs, by
// digest, to upload them to a real blob store.
func Contents(img *metadatav1.Image) map[string][]byte {
	out := map[string][]byte{
		img.GetManifest().GetDigest(): img.GetManifestBytes(),
		img.GetId():                   img.GetConfig(),
	}
	for _, l := range img.GetLayers() {
		out[l.GetDigest()] = []byte(l.GetDiffId())
	}
	return out
}

// Blobs returns every digest an image needs: manifest, config, layers.
func Blobs(img *metadatav1.Image) []string {
	out := []string{img.GetManifest().GetDigest(), img.GetId()}
	for _, l := range img.GetLayers() {
		out = append(out, l.GetDigest())
	}
	return out
}
