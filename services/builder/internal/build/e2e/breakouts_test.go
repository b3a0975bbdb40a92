package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/harness"
	"github.com/strata-build/strata/services/builder/internal/layer/layertest"
)

// TestImportAndLoadBreakouts runs the breakout table through `strata
// import` and `strata load`, which store layers as they are, and through
// the build that then uses them: the snapshot store unpacks the hostile
// layer for a COPY (into the symlink the layer planted, when it has one)
// and a RUN that lists the root the container sees. An import is one
// layer (busybox, the case's lower entries and its archive); a load has
// them as three layers. An archive import and load refuse as it is
// (absolute or climbing names) is tried as it is, then re-rooted, which
// means the same once unpacked. Whatever the case, the host directory is
// untouched; the build fails as invalid input or the container saw what
// the case says.
//
// The cases share one stack, and the cases a build can take share one
// multi-stage build per path.
func TestImportAndLoadBreakouts(t *testing.T) {
	s := withBusybox(t)
	busybox := harness.BusyboxRootfs(t)
	base := t.TempDir()
	var cases []layertest.Case
	var hosts []*layertest.Host
	for i, c := range layertest.Cases() {
		h := layertest.NewHost(t, filepath.Join(base, fmt.Sprintf("h%d", i)))
		hosts, cases = append(hosts, h), append(cases, c.Expand(h.Dir))
	}

	t.Run("import", func(t *testing.T) {
		tags := map[int]string{}
		for i, c := range cases {
			lower, archive := c.Lower, c.Archive
			if layertest.Unsafe(lower) || layertest.Unsafe(archive) {
				p := writeTemp(t, layertest.Tar(append(append([]layertest.Entry{}, lower...), archive...)))
				if r := s.strata(t, "", "import", p, fmt.Sprintf("verbatim%d", i)); r.code == 0 || !strings.Contains(r.stderr, "tar entry") {
					t.Errorf("%s: import of the archive as it is: exit %d %q, want it refused", c.Name, r.code, r.stderr)
				}
				lower, archive = layertest.Reroot(lower), layertest.Reroot(archive)
			}
			tags[i] = fmt.Sprintf("imported%d", i)
			s.ok(t, "", "import", writeTemp(t, rootfsWith(t, busybox, lower, archive)), tags[i])
		}
		buildBreakouts(t, s, cases, layertest.OneLayer, tags)
	})

	t.Run("load", func(t *testing.T) {
		a := newDockerArchive()
		bb := a.layer(busybox)
		tags := map[int]string{}
		for i, c := range cases {
			lower, archive := c.Lower, c.Archive
			if layertest.Unsafe(lower) || layertest.Unsafe(archive) {
				v := newDockerArchive()
				v.image(fmt.Sprintf("verbatim%d", i), v.layer(layertest.Tar(lower)), v.layer(layertest.Tar(archive)))
				if r := s.strata(t, "", "load", "-i", writeTemp(t, v.bytes(t))); r.code == 0 || !strings.Contains(r.stderr, "tar entry") {
					t.Errorf("%s: load of the archive as it is: exit %d %q, want it refused", c.Name, r.code, r.stderr)
				}
				lower, archive = layertest.Reroot(lower), layertest.Reroot(archive)
			}
			layers := []digest.Digest{bb}
			if len(lower) > 0 {
				layers = append(layers, a.layer(layertest.Tar(lower)))
			}
			tags[i] = fmt.Sprintf("loaded%d", i)
			a.image(tags[i], append(layers, a.layer(layertest.Tar(archive)))...)
		}
		s.ok(t, "", "load", "-i", writeTemp(t, a.bytes(t)))
		buildBreakouts(t, s, cases, layertest.Layers, tags)
	})

	for i, h := range hosts {
		for _, d := range h.Changes() {
			t.Errorf("%s changed the host directory: %s", cases[i].Name, d)
		}
	}
}

// buildBreakouts builds on the images of the cases (tags, by case index)
// and checks each against its outcome in mode. A case whose outcome is a
// refusal gets a build of its own, which must fail as invalid input; the
// others are stages of one build, each COPYing the report script (and a
// file into the case's planted symlink) and RUNning it, and a last stage
// collects the reports.
func buildBreakouts(t *testing.T, s *stack, cases []layertest.Case, mode layertest.Mode, tags map[int]string) {
	t.Helper()
	baseGroup := string(savedFiles(t, s.save(t, "busybox"))["etc/group"])
	var df, collect strings.Builder
	var batch []int
	for i, c := range cases {
		tag, ok := tags[i]
		if !ok {
			continue
		}
		if want := c.Outcome(mode); want.Refused {
			_, err := rawBuild(t, s.BuilderAddr, &builderv1.BuildOptions{DockerfileContent: []byte("FROM " + tag + "\nRUN true\n")}, nil, nil)
			if status.Code(err) != codes.InvalidArgument {
				t.Errorf("%s: build on it: err = %v, want INVALID_ARGUMENT (%s)", c.Name, err, want.Why)
			}
			continue
		}
		batch = append(batch, i)
		fmt.Fprintf(&df, "FROM %s AS case%d\nCOPY report.sh /.layertest/\n", tag, i)
		if c.Via != "" {
			fmt.Fprintf(&df, "COPY probe /%s/\n", c.Via)
		}
		fmt.Fprintf(&df, "RUN sh /.layertest/report.sh > %s\n", layertest.ReportPath)
		fmt.Fprintf(&collect, "COPY --from=case%d %s /reports/%d\n", i, layertest.ReportPath, i)
	}
	df.WriteString("FROM scratch\n" + collect.String())
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"Dockerfile": df.String(), "report.sh": layertest.ReportScript, "probe": "probe"})
	tag := "breakouts-" + strings.ReplaceAll(mode.String(), " ", "-")
	if r := s.strata(t, dir, "build", "-q", "-t", tag, "."); r.code != 0 {
		t.Fatalf("the build of %d cases failed: exit %d\n%s", len(batch), r.code, r.stderr)
	}
	reports := savedFiles(t, s.save(t, tag))
	for _, i := range batch {
		c := cases[i]
		tree, err := layertest.ParseReport(reports["reports/"+fmt.Sprint(i)])
		if err != nil {
			t.Errorf("%s: %v", c.Name, err)
			continue
		}
		// The report is the container's view: the base's own files are in it.
		checks := append([]layertest.Check{layertest.IsFile("etc/group", baseGroup)}, c.Outcome(mode).Checks...)
		if c.Via != "" {
			checks = append(checks, layertest.IsFile(path.Join(c.Lands, "probe"), "probe"))
		}
		for _, err := range tree.Verify(checks) {
			t.Errorf("%s: %v", c.Name, err)
		}
	}
	t.Logf("%d cases in one build, %d refused as the table says", len(batch), len(tags)-len(batch))
}

// rootfsWith returns the root filesystem tarball rootfs with entries added
// at its end.
func rootfsWith(t *testing.T, rootfs []byte, entries ...[]layertest.Entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tr := tar.NewReader(bytes.NewReader(rootfs))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			t.Fatal(err)
		}
	}
	for _, es := range entries {
		if err := layertest.Write(tw, es); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func writeTemp(t *testing.T, b []byte) string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "*.tar")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// dockerArchive is a docker-archive as Docker 25 and later write it: blobs
// by digest (layers as plain tars) and a manifest.json.
type dockerArchive struct {
	blobs    map[digest.Digest][]byte
	order    []digest.Digest
	manifest []map[string]any
}

func newDockerArchive() *dockerArchive { return &dockerArchive{blobs: map[digest.Digest][]byte{}} }

func (a *dockerArchive) blob(b []byte) digest.Digest {
	d := digest.FromBytes(b)
	if _, ok := a.blobs[d]; !ok {
		a.blobs[d] = b
		a.order = append(a.order, d)
	}
	return d
}

// layer adds a plain layer tar and returns its diff ID (its digest).
func (a *dockerArchive) layer(tarBytes []byte) digest.Digest { return a.blob(tarBytes) }

// image adds an image tagged tag made of layers (bottom first).
func (a *dockerArchive) image(tag string, layers ...digest.Digest) {
	var paths []string
	var history []map[string]any
	for _, l := range layers {
		paths = append(paths, "blobs/sha256/"+l.Encoded())
		history = append(history, map[string]any{"created": "2001-09-09T01:46:40Z", "created_by": "layertest"})
	}
	cfg, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux", "created": "2001-09-09T01:46:40Z",
		"config":  map[string]any{"Cmd": []string{"/bin/sh"}},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": layers},
		"history": history,
	})
	a.manifest = append(a.manifest, map[string]any{
		"Config": "blobs/sha256/" + a.blob(cfg).Encoded(), "RepoTags": []string{tag + ":latest"}, "Layers": paths,
	})
}

func (a *dockerArchive) bytes(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, b []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(b))}); err != nil {
			t.Fatal(err)
		}
		tw.Write(b)
	}
	for _, d := range a.order {
		add("blobs/sha256/"+d.Encoded(), a.blobs[d])
	}
	m, _ := json.Marshal(a.manifest)
	add("manifest.json", m)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// savedFiles returns the regular files of the image a docker-archive of
// one image holds, with their contents: its layers applied in order. For
// images Strata built, whose layers hold no whiteouts of interest here.
func savedFiles(t *testing.T, archive []byte) map[string][]byte {
	t.Helper()
	members := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		members[path.Clean(h.Name)] = b
	}
	var manifest []struct{ Layers []string }
	if err := json.Unmarshal(members["manifest.json"], &manifest); err != nil || len(manifest) != 1 {
		t.Fatalf("manifest.json: %v (%d images)", err, len(manifest))
	}
	files := map[string][]byte{}
	for _, l := range manifest[0].Layers {
		var r io.Reader = bytes.NewReader(members[path.Clean(l)])
		if data := members[path.Clean(l)]; bytes.HasPrefix(data, []byte{0x1f, 0x8b}) {
			gz, err := gzip.NewReader(r)
			if err != nil {
				t.Fatal(err)
			}
			r = gz
		}
		lr := tar.NewReader(r)
		for {
			h, err := lr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if h.Typeflag == tar.TypeReg {
				b, _ := io.ReadAll(lr)
				files[strings.TrimPrefix(path.Clean("/"+h.Name), "/")] = b
			}
		}
	}
	return files
}
