package parity

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"testing"
)

// A Golden is what a build made, as the suite compares it: history rows,
// config fields and the root filesystem as it differs from the base
// image. `make parity-golden` writes Docker's; Strata's is made the same
// way from its own build.
type Golden struct {
	// Engine is the Docker Engine version that made the golden.
	Engine string `json:"engine,omitempty"`
	// Error is the build's error when it failed (and nothing else is set).
	Error   string       `json:"error,omitempty"`
	History []HistoryRow `json:"history,omitempty"`
	// Config holds the config fields a Dockerfile sets, compact JSON,
	// absent when null; "author" is the image's.
	Config map[string]string `json:"config,omitempty"`
	// Files lists the root filesystem where it differs from the base
	// image's: "PATH TYPE MODE UID:GID [SHA256|-> TARGET]", or "PATH deleted".
	Files []string `json:"files,omitempty"`
}

type HistoryRow struct {
	CreatedBy  string `json:"created_by"`
	EmptyLayer bool   `json:"empty_layer,omitempty"`
}

// configKeys are the config fields a Dockerfile can set.
var configKeys = []string{"Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Volumes",
	"Labels", "StopSignal", "Healthcheck", "Shell", "OnBuild", "ArgsEscaped"}

// snapshot reads a docker-archive of one image.
func snapshot(t testing.TB, archive []byte, base map[string]string) (*Golden, map[string]string) {
	t.Helper()
	members := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("reading the saved image: %v", err)
		}
		b, _ := io.ReadAll(tr)
		members[path.Clean(h.Name)] = b
	}
	var manifest []struct {
		Config string
		Layers []string
	}
	if err := json.Unmarshal(members["manifest.json"], &manifest); err != nil || len(manifest) != 1 {
		t.Fatalf("manifest.json: %v (%d images)", err, len(manifest))
	}
	var cfg imageConfig
	if err := json.Unmarshal(members[path.Clean(manifest[0].Config)], &cfg); err != nil {
		t.Fatal(err)
	}
	g := cfg.golden()
	files := map[string]string{}
	fromBase := false
	for i, l := range manifest[0].Layers {
		applyLayer(t, files, layerReader(t, members[path.Clean(l)]))
		if i == 0 && equalMaps(files, base) {
			fromBase = true
		}
	}
	if !fromBase {
		base = nil
	}
	g.Files = diffFiles(base, files)
	return g, files
}

// configOnly is the Golden of an image without layers, from its config.
func configOnly(t testing.TB, config []byte) *Golden {
	t.Helper()
	var cfg imageConfig
	if err := json.Unmarshal(config, &cfg); err != nil {
		t.Fatalf("image config: %v", err)
	}
	return cfg.golden()
}

// imageConfig is what the suite reads of an image's config.
type imageConfig struct {
	Config  map[string]json.RawMessage `json:"config"`
	Author  string                     `json:"author"`
	History []struct {
		CreatedBy  string `json:"created_by"`
		EmptyLayer bool   `json:"empty_layer"`
	} `json:"history"`
}

func (cfg *imageConfig) golden() *Golden {
	g := &Golden{Config: map[string]string{}}
	for _, h := range cfg.History {
		g.History = append(g.History, HistoryRow{CreatedBy: h.CreatedBy, EmptyLayer: h.EmptyLayer})
	}
	if cfg.Author != "" {
		g.Config["author"] = fmt.Sprintf("%q", cfg.Author)
	}
	for _, k := range configKeys {
		v := cfg.Config[k]
		var buf bytes.Buffer
		if len(v) == 0 || json.Compact(&buf, v) != nil || buf.String() == "null" {
			continue
		}
		g.Config[k] = buf.String()
	}
	return g
}

func layerReader(t testing.TB, data []byte) io.Reader {
	if bytes.HasPrefix(data, []byte{0x1f, 0x8b}) {
		gz, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		return gz
	}
	return bytes.NewReader(data)
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// diffFiles lists files as Golden.Files does.
func diffFiles(base, files map[string]string) []string {
	var out []string
	for p, v := range files {
		if base[p] != v {
			out = append(out, p+" "+v)
		}
	}
	for p := range base {
		if _, ok := files[p]; !ok {
			out = append(out, p+" deleted")
		}
	}
	sort.Strings(out)
	return out
}

// applyLayer applies a layer tar to files (path → "TYPE MODE UID:GID
// [SHA256|-> TARGET]"), honouring whiteouts.
func applyLayer(t testing.TB, files map[string]string, r io.Reader) {
	t.Helper()
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		name := path.Clean("/" + h.Name)
		dir, base := path.Split(name)
		if base == ".wh..wh..opq" {
			for p := range files {
				if strings.HasPrefix(p, dir) && p != path.Clean(dir) {
					delete(files, p)
				}
			}
			continue
		}
		if strings.HasPrefix(base, ".wh.") {
			gone := path.Join(dir, strings.TrimPrefix(base, ".wh."))
			for p := range files {
				if p == gone || strings.HasPrefix(p, gone+"/") {
					delete(files, p)
				}
			}
			continue
		}
		if name == "/" {
			continue // an imported rootfs has an entry for the root, built layers do not
		}
		kind := map[byte]string{tar.TypeDir: "dir", tar.TypeSymlink: "symlink", tar.TypeLink: "hardlink",
			tar.TypeReg: "file", tar.TypeChar: "char", tar.TypeBlock: "block", tar.TypeFifo: "fifo"}[h.Typeflag]
		v := fmt.Sprintf("%s %04o %d:%d", kind, h.Mode&0o7777, h.Uid, h.Gid)
		switch h.Typeflag {
		case tar.TypeReg:
			sum := sha256.New()
			io.Copy(sum, tr)
			v += " " + hex.EncodeToString(sum.Sum(nil))
		case tar.TypeSymlink, tar.TypeLink:
			v += " -> " + h.Linkname
		}
		if old, ok := files[name]; ok && h.Typeflag != tar.TypeDir && strings.HasPrefix(old, "dir ") {
			for p := range files {
				if strings.HasPrefix(p, name+"/") {
					delete(files, p)
				}
			}
		}
		files[name] = v
	}
}

// rootfsFiles is the file list of a rootfs tarball.
func rootfsFiles(t testing.TB, rootfs []byte) map[string]string {
	files := map[string]string{}
	applyLayer(t, files, bytes.NewReader(rootfs))
	return files
}
