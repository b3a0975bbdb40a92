package formatter_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/strata-build/strata/cli/internal/formatter"
	"github.com/strata-build/strata/cli/internal/testimage"
	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
)

// The Docker Engine of the machine renders the test image; the formatter,
// given the same data as proto messages, must print the same bytes.

func loadIntoDocker(t *testing.T, tag, variant string) testimage.Image {
	t.Helper()
	var archive bytes.Buffer
	img, err := testimage.Write(&archive, tag, variant)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("docker", "load")
	cmd.Stdin = &archive
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker load (the Docker Engine must run for parity tests): %v\n%s", err, out)
	}
	// Untag rather than delete: another package's test may hold the image too.
	t.Cleanup(func() { _ = exec.Command("docker", "rmi", tag).Run() })
	return img
}

func docker(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("docker", args...)
	cmd.Env = append(os.Environ(), "TZ=UTC")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("docker %v: %v\n%s", args, err, stderr.String())
	}
	return string(out)
}

func render(t *testing.T, write func(formatter.Context) error, format formatter.Format, trunc bool) string {
	t.Helper()
	var out bytes.Buffer
	ctx := formatter.Context{Output: &out, Format: format, Trunc: trunc, Location: time.UTC}
	if err := write(ctx); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func TestHistoryMatchesDocker(t *testing.T) {
	const tag = "strata-cli-formatter:history"
	loadIntoDocker(t, tag, "formatter-history")

	// The rows as data, from Docker's own JSON output.
	var rows []*metadatav1.HistoryRow
	for _, line := range strings.Split(strings.TrimSpace(docker(t, "history", "--no-trunc", "-H=false", "--format", "{{json .}}", tag)), "\n") {
		var r struct{ ID, CreatedAt, CreatedBy, Size, Comment string }
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		created, err := time.Parse(time.RFC3339, r.CreatedAt)
		if err != nil {
			t.Fatal(err)
		}
		size, err := strconv.ParseInt(r.Size, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, &metadatav1.HistoryRow{Id: r.ID, Created: timestamppb.New(created), CreatedBy: r.CreatedBy, Size: size, Comment: r.Comment})
	}

	for _, tc := range []struct {
		flags   []string
		format  string
		quiet   bool
		human   bool
		noTrunc bool
	}{
		{flags: nil, human: true},
		{flags: []string{"-H=false"}},
		{flags: []string{"--no-trunc"}, human: true, noTrunc: true},
		{flags: []string{"--no-trunc", "-H=false"}, noTrunc: true},
		{flags: []string{"-q"}, quiet: true, human: true},
		{flags: []string{"-q", "--no-trunc"}, quiet: true, human: true, noTrunc: true},
		{flags: []string{"--format", "json"}, format: "json", human: true},
		{flags: []string{"--format", "table {{.ID}}\t{{.CreatedBy}}\t{{.Size}}"}, format: "table {{.ID}}\t{{.CreatedBy}}\t{{.Size}}", human: true},
		{flags: []string{"--format", "{{.ID}}: {{.CreatedSince}} {{.Size}} {{json .Comment}}"}, format: "{{.ID}}: {{.CreatedSince}} {{.Size}} {{json .Comment}}", human: true},
	} {
		want := docker(t, append(append([]string{"history"}, tc.flags...), tag)...)
		got := render(t, func(ctx formatter.Context) error {
			return formatter.WriteHistory(ctx, rows, tc.human)
		}, formatter.NewHistoryFormat(tc.format, tc.quiet, tc.human), !tc.noTrunc)
		if got != want {
			t.Errorf("history %v:\n--- strata\n%s--- docker\n%s", tc.flags, got, want)
		}
	}
}

// dockerInspect returns Docker's JSON object for an image, as its daemon
// sends it.
func dockerInspect(t *testing.T, ref string) []byte {
	t.Helper()
	var objects []json.RawMessage
	if err := json.Unmarshal([]byte(docker(t, "image", "inspect", "--format", "json", ref)), &objects); err != nil || len(objects) != 1 {
		t.Fatalf("docker image inspect --format json %s: %v", ref, err)
	}
	return objects[0]
}

func TestImagesMatchDocker(t *testing.T) {
	const repo = "strata-cli-formatter-images"
	tag := repo + ":v1"
	loadIntoDocker(t, tag, "formatter-images")
	docker(t, "tag", tag, repo+":v2")
	docker(t, "tag", tag, "strata-cli-formatter-other:latest")
	t.Cleanup(func() {
		_ = exec.Command("docker", "rmi", repo+":v2", "strata-cli-formatter-other:latest").Run()
	})

	var info struct {
		ID          string `json:"Id"`
		RepoTags    []string
		RepoDigests []string
		Created     time.Time
		Size        int64
	}
	if err := json.Unmarshal(dockerInspect(t, tag), &info); err != nil {
		t.Fatal(err)
	}
	summary := &metadatav1.ImageSummary{
		Id: info.ID, RepoTags: info.RepoTags, RepoDigests: info.RepoDigests,
		Created: timestamppb.New(info.Created), Size: info.Size,
	}

	for _, tc := range []struct {
		flags   []string
		format  string
		quiet   bool
		digests bool
		noTrunc bool
	}{
		{flags: nil},
		{flags: []string{"--digests"}, digests: true},
		{flags: []string{"--no-trunc"}, noTrunc: true},
		{flags: []string{"--digests", "--no-trunc"}, digests: true, noTrunc: true},
		{flags: []string{"-q"}, quiet: true},
		{flags: []string{"--format", "json"}, format: "json"},
		{flags: []string{"--format", "table {{.Repository}}\t{{.ID}}\t{{.CreatedAt}}"}, format: "table {{.Repository}}\t{{.ID}}\t{{.CreatedAt}}"},
		{flags: []string{"--format", "table {{.Tag}}"}, format: "table {{.Tag}}", digests: true},
		{flags: []string{"--format", "{{.Repository}}:{{.Tag}} {{.Size}} {{.VirtualSize}} {{upper .Containers}}"}, format: "{{.Repository}}:{{.Tag}} {{.Size}} {{.VirtualSize}} {{upper .Containers}}"},
	} {
		// Docker orders an image's repositories at random; the filter keeps
		// one repository, whose tags it orders.
		want := docker(t, append(append([]string{"images"}, tc.flags...), repo)...)
		s := proto.Clone(summary).(*metadatav1.ImageSummary)
		s.RepoTags = nil
		for _, rt := range summary.RepoTags {
			if strings.HasPrefix(rt, repo+":") {
				s.RepoTags = append(s.RepoTags, rt)
			}
		}
		got := render(t, func(ctx formatter.Context) error {
			return formatter.WriteImages(ctx, []*metadatav1.ImageSummary{s}, tc.digests)
		}, formatter.NewImageFormat(tc.format, tc.quiet, tc.digests), !tc.noTrunc)
		if got != want {
			t.Errorf("images %v:\n--- strata\n%s--- docker\n%s", tc.flags, got, want)
		}
	}
}

func TestInspectMatchesDocker(t *testing.T) {
	const tag = "strata-cli-formatter:inspect"
	loadIntoDocker(t, tag, "formatter-inspect")
	raw := dockerInspect(t, tag)
	for _, format := range []string{
		"",
		"json",
		"{{.Id}}",
		"{{.Id}} {{.RepoTags}} {{.Created}} {{.Size}}",
		"{{.Config.Env}}",
		"{{.Config.ExposedPorts}}",
		"{{json .Config}}",
		"{{json .}}",
		"{{.Config.Hostname}}|{{.ContainerConfig.Hostname}}|{{.Config.User}}",
		"{{json .ContainerConfig}}",
		"{{.GraphDriver.Name}} {{.RootFS.Type}} {{.Parent}}|{{.Comment}}|{{.RepoDigests}}",
		"{{json .RootFS.Layers}}",
		"{{index .RepoTags 0}} {{.Os}}/{{.Architecture}}",
		"{{.Metadata.LastTagTime}}",
		"{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}",
		"{{.ContainerConfig.Cmd}} {{.Config.Cmd}} {{.Config.StopSignal}}",
		"{{join .Config.Cmd \",\"}} {{upper .Os}} {{title .Architecture}}",
	} {
		args := []string{"image", "inspect"}
		if format != "" {
			args = append(args, "--format", format)
		}
		want := docker(t, append(args, tag)...)
		var out bytes.Buffer
		inspector, err := formatter.NewInspector(&out, format)
		if err != nil {
			t.Fatal(err)
		}
		if err := inspector.Inspect(raw); err != nil {
			t.Fatalf("Inspect with %q: %v", format, err)
		}
		if err := inspector.Flush(); err != nil {
			t.Fatal(err)
		}
		if got := out.String(); got != want {
			t.Errorf("inspect --format %q:\n--- strata\n%s--- docker\n%s", format, got, want)
		}
	}
}
