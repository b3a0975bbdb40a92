// Package testimage makes the image the CLI's tests hold Strata's output
// against Docker's: a docker-archive (what `docker save` writes and both
// `docker load` and `strata load` read) of a small image shaped like the
// seed's nginx build — an imported base layer, LABEL, ENV, two RUN layers,
// EXPOSE, STOPSIGNAL and CMD — with fixed timestamps, so that its IDs and
// ages ("6 years ago") print the same on every run.
package testimage

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// Created is when the image's last step ran.
var Created = time.Date(2020, 3, 1, 10, 0, 40, 0, time.UTC)

// Image describes a written archive.
type Image struct {
	// ID is the image ID, "sha256:" and the config digest.
	ID string
	// DiffIDs are the layers' uncompressed digests, bottom first.
	DiffIDs []string
}

type file struct {
	name, body, link string
	dir              bool
}

type step struct {
	createdBy, comment string
	layer              []file // nil for an empty layer
}

// steps of the image, oldest first, as Docker's classic builder records them.
func steps() []step {
	passwd := "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
	return []step{
		{comment: "Imported from -", layer: []file{
			{name: "bin/", dir: true},
			{name: "bin/busybox", body: string(bytes.Repeat([]byte("busybox!"), 256))},
			{name: "bin/sh", link: "busybox"},
			{name: "etc/", dir: true},
			{name: "etc/passwd", body: passwd},
			{name: "etc/group", body: "root:x:0:\nnogroup:x:65534:\n"},
			{name: "tmp/", dir: true},
		}},
		{createdBy: `/bin/sh -c #(nop)  LABEL maintainer=NGINX Docker Maintainers <docker-maint@nginx.com>`},
		{createdBy: `/bin/sh -c #(nop)  ENV NGINX_VERSION=1.17.4`},
		{createdBy: `/bin/sh -c #(nop)  ENV NJS_VERSION=0.3.5`},
		{createdBy: `/bin/sh -c #(nop)  ENV PKG_RELEASE=1~buster`},
		{createdBy: `/bin/sh -c set -x && echo "nginx:x:101:101:nginx:/nonexistent:/bin/false" >> /etc/passwd && echo "nginx:x:101:" >> /etc/group && mkdir -p /var/log/nginx && echo ok > /var/log/nginx/install.log`, layer: []file{
			{name: "etc/", dir: true},
			{name: "etc/passwd", body: passwd + "nginx:x:101:101:nginx:/nonexistent:/bin/false\n"},
			{name: "etc/group", body: "root:x:0:\nnogroup:x:65534:\nnginx:x:101:\n"},
			{name: "var/", dir: true},
			{name: "var/log/", dir: true},
			{name: "var/log/nginx/", dir: true},
			{name: "var/log/nginx/install.log", body: "ok\n"},
		}},
		{createdBy: `/bin/sh -c ln -sf /dev/stdout /var/log/nginx/access.log && ln -sf /dev/stderr /var/log/nginx/error.log`, layer: []file{
			{name: "var/", dir: true},
			{name: "var/log/", dir: true},
			{name: "var/log/nginx/", dir: true},
			{name: "var/log/nginx/access.log", link: "/dev/stdout"},
			{name: "var/log/nginx/error.log", link: "/dev/stderr"},
		}},
		{createdBy: `/bin/sh -c #(nop)  EXPOSE 80`},
		{createdBy: `/bin/sh -c #(nop)  STOPSIGNAL SIGTERM`},
		{createdBy: `/bin/sh -c #(nop)  CMD ["nginx" "-g" "daemon off;"]`},
	}
}

// Write writes the archive with the image tagged tag. variant goes into a
// label, so that tests running at once can hold distinct images.
func Write(w io.Writer, tag, variant string) (Image, error) {
	type historyEntry struct {
		Created    string `json:"created"`
		CreatedBy  string `json:"created_by,omitempty"`
		Comment    string `json:"comment,omitempty"`
		EmptyLayer bool   `json:"empty_layer,omitempty"`
	}
	var (
		layers  [][]byte
		diffIDs []string
		history []historyEntry
	)
	all := steps()
	for i, s := range all {
		created := Created.Add(time.Duration(i-len(all)+1) * 5 * time.Second)
		h := historyEntry{Created: created.Format(time.RFC3339Nano), CreatedBy: s.createdBy, Comment: s.comment, EmptyLayer: s.layer == nil}
		history = append(history, h)
		if s.layer == nil {
			continue
		}
		layer, err := layerTar(s.layer, created)
		if err != nil {
			return Image{}, err
		}
		layers = append(layers, layer)
		diffIDs = append(diffIDs, digest(layer))
	}
	config := map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"created":      Created.Format(time.RFC3339Nano),
		"config": map[string]any{
			"Env": []string{
				"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
				"NGINX_VERSION=1.17.4", "NJS_VERSION=0.3.5", "PKG_RELEASE=1~buster",
			},
			"Cmd":          []string{"nginx", "-g", "daemon off;"},
			"ExposedPorts": map[string]any{"80/tcp": map[string]any{}},
			"Labels": map[string]string{
				"maintainer":   "NGINX Docker Maintainers <docker-maint@nginx.com>",
				"test.variant": variant,
			},
			"StopSignal": "SIGTERM",
		},
		"history": history,
		"rootfs":  map[string]any{"type": "layers", "diff_ids": diffIDs},
	}
	configJSON, err := json.Marshal(config)
	if err != nil {
		return Image{}, err
	}
	id := digest(configJSON)
	hexOf := func(d string) string { return d[len("sha256:"):] }

	tw := tar.NewWriter(w)
	add := func(name string, body []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), ModTime: Created, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(body)
		return err
	}
	var layerPaths []string
	for i, layer := range layers {
		p := hexOf(diffIDs[i]) + "/layer.tar"
		layerPaths = append(layerPaths, p)
		if err := add(p, layer); err != nil {
			return Image{}, err
		}
	}
	if err := add(hexOf(id)+".json", configJSON); err != nil {
		return Image{}, err
	}
	manifest, err := json.Marshal([]map[string]any{{
		"Config": hexOf(id) + ".json", "RepoTags": []string{tag}, "Layers": layerPaths,
	}})
	if err != nil {
		return Image{}, err
	}
	if err := add("manifest.json", manifest); err != nil {
		return Image{}, err
	}
	if err := tw.Close(); err != nil {
		return Image{}, err
	}
	return Image{ID: id, DiffIDs: diffIDs}, nil
}

func layerTar(files []file, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.name, ModTime: mtime, Format: tar.FormatPAX}
		switch {
		case f.dir:
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
		case f.link != "":
			h.Typeflag, h.Mode, h.Linkname = tar.TypeSymlink, 0o777, f.link
		default:
			h.Typeflag, h.Mode, h.Size = tar.TypeReg, 0o644, int64(len(f.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := io.WriteString(tw, f.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("writing a layer: %w", err)
	}
	return buf.Bytes(), nil
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}
