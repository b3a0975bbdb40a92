package formatter_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/strata-build/strata/cli/internal/formatter"
	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// now is the clock of the golden tests.
var now = time.Date(2026, 11, 27, 4, 5, 50, 0, time.UTC)

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to write it)", err)
	}
	if got != string(want) {
		t.Errorf("%s:\n--- got\n%s--- want (%s)\n%s", name, got, path, want)
	}
}

func goldenContext(out *bytes.Buffer, format formatter.Format, trunc bool) formatter.Context {
	return formatter.Context{Output: out, Format: format, Trunc: trunc, Now: func() time.Time { return now }, Location: time.UTC}
}

func ago(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(now.Add(-d)) }

// The seed's history, as docker-outputs.md shows it.
func seedHistory() []*metadatav1.HistoryRow {
	return []*metadatav1.HistoryRow{
		{Id: "sha256:cd84152b746847af5c75f3e53d0e19ccdcb17d9e9976961d74ab21c37c5ff89e", Created: ago(300 * time.Millisecond), CreatedBy: `/bin/sh -c #(nop)  CMD ["nginx" "-g" "daemon off;"]`, Tags: []string{"my-nginx:latest"}, EmptyLayer: true},
		{Id: "sha256:22183e11d634f88951d6f4b0c4f57f3ce1d0f7390f8173719cd1ccdd768f3eff", Created: ago(400 * time.Millisecond), CreatedBy: `/bin/sh -c #(nop)  STOPSIGNAL SIGTERM`, EmptyLayer: true},
		{Id: "sha256:2d5d16dc862bee771558597ef6ee26d13219cbaece9e7aaefd83bb22764a27f0", Created: ago(500 * time.Millisecond), CreatedBy: `/bin/sh -c #(nop)  EXPOSE 80`, EmptyLayer: true},
		{Id: "sha256:4b886560e6b747af5c75f3e53d0e19ccdcb17d9e9976961d74ab21c37c5ff89e", Created: ago(1100 * time.Millisecond), CreatedBy: `/bin/sh -c ln -sf /dev/stdout /var/log/nginx/access.log && ln -sf /dev/stderr /var/log/nginx/error.log`, Size: 22},
		{Id: "sha256:cb91398e6e9347af5c75f3e53d0e19ccdcb17d9e9976961d74ab21c37c5ff89e", Created: ago(1200 * time.Millisecond), CreatedBy: `/bin/sh -c set -x && echo "nginx:x:101:101:nginx:/nonexistent:/bin/false" >> /etc/passwd && echo "nginx:x:101:" >> /etc/group && mkdir -p /var/log/nginx && echo ok > /var/log/nginx/install.log`, Size: 160},
		{Id: "sha256:f2158ee6e34a47af5c75f3e53d0e19ccdcb17d9e9976961d74ab21c37c5ff89e", Created: ago(1300 * time.Millisecond), CreatedBy: `/bin/sh -c #(nop)  ENV PKG_RELEASE=1~buster`, EmptyLayer: true},
		{Id: "sha256:9aef81578c6b47af5c75f3e53d0e19ccdcb17d9e9976961d74ab21c37c5ff89e", Created: ago(1400 * time.Millisecond), CreatedBy: `/bin/sh -c #(nop)  ENV NJS_VERSION=0.3.5`, EmptyLayer: true},
		{Id: "sha256:c2f5ba54c44947af5c75f3e53d0e19ccdcb17d9e9976961d74ab21c37c5ff89e", Created: ago(1500 * time.Millisecond), CreatedBy: `/bin/sh -c #(nop)  ENV NGINX_VERSION=1.17.4`, EmptyLayer: true},
		{Id: "sha256:5d12813067aa47af5c75f3e53d0e19ccdcb17d9e9976961d74ab21c37c5ff89e", Created: ago(1600 * time.Millisecond), CreatedBy: `/bin/sh -c #(nop)  LABEL maintainer=NGINX Docker Maintainers <docker-maint@nginx.com>`, EmptyLayer: true},
		{Id: "sha256:3ac2395f119b47af5c75f3e53d0e19ccdcb17d9e9976961d74ab21c37c5ff89e", Created: ago(3 * time.Minute), Size: 1984412, Comment: "Imported from -"},
	}
}

func TestHistoryGolden(t *testing.T) {
	extra := append(seedHistory(),
		&metadatav1.HistoryRow{Id: "<missing>", Created: timestamppb.New(time.Unix(0, 0)), CreatedBy: "/bin/sh -c #(nop) ADD file:0123\tin / ", Size: 126 << 20, Comment: "reproducible"},
	)
	for _, tc := range []struct {
		name   string
		rows   []*metadatav1.HistoryRow
		format string
		quiet  bool
		human  bool
		trunc  bool
	}{
		{name: "history-seed", rows: seedHistory(), human: true, trunc: true},
		{name: "history-table", rows: extra, human: true, trunc: true},
		{name: "history-no-human", rows: extra, trunc: true},
		{name: "history-no-trunc", rows: extra, human: true},
		{name: "history-quiet", rows: extra, quiet: true, human: true, trunc: true},
		{name: "history-json", rows: extra, format: "json", human: true, trunc: true},
		{name: "history-template", rows: extra, format: "table {{.ID}}\t{{.CreatedAt}}\t{{.Size}}", human: true, trunc: true},
	} {
		var out bytes.Buffer
		ctx := goldenContext(&out, formatter.NewHistoryFormat(tc.format, tc.quiet, tc.human), tc.trunc)
		if err := formatter.WriteHistory(ctx, tc.rows, tc.human); err != nil {
			t.Fatal(err)
		}
		golden(t, tc.name, out.String())
	}
}

func listImages() []*metadatav1.ImageSummary {
	return []*metadatav1.ImageSummary{
		{Id: "sha256:cd84152b746847af5c75f3e53d0e19ccdcb17d9e9976961d74ab21c37c5ff89e", RepoTags: []string{"my-nginx:latest", "davidainslie/nginx:latest", "my-nginx:1.17"}, Created: ago(4 * time.Second), Size: 1984412},
		{Id: "sha256:0a1b2c3d4e5f47af5c75f3e53d0e19ccdcb17d9e9976961d74ab21c37c5ff89e", Created: ago(10 * 24 * time.Hour), Size: 132 << 20},
		{Id: "sha256:77aa88bb99cc47af5c75f3e53d0e19ccdcb17d9e9976961d74ab21c37c5ff89e", RepoTags: []string{"localhost:5000/team/app:1.2"}, RepoDigests: []string{"localhost:5000/team/app@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}, Created: ago(3 * 30 * 24 * time.Hour), Size: 77_800_000},
		{Id: "sha256:3ac2395f119b47af5c75f3e53d0e19ccdcb17d9e9976961d74ab21c37c5ff89e", RepoDigests: []string{"busybox@sha256:9ae97d36d26566ff84e8893c64a6dc4fe8ca6d1144bf5b87b2b85a32def253c7"}, Created: ago(2 * 365 * 24 * time.Hour), Size: 4_260_000},
	}
}

func TestImagesGolden(t *testing.T) {
	for _, tc := range []struct {
		name    string
		format  string
		quiet   bool
		digests bool
		trunc   bool
	}{
		{name: "images-table", trunc: true},
		{name: "images-digests", digests: true, trunc: true},
		{name: "images-no-trunc", trunc: false},
		{name: "images-quiet", quiet: true, trunc: true},
		{name: "images-json", format: "json", trunc: true},
		{name: "images-template", format: "table {{.Repository}}:{{.Tag}}\t{{.Digest}}\t{{.CreatedAt}}", trunc: true},
	} {
		var out bytes.Buffer
		ctx := goldenContext(&out, formatter.NewImageFormat(tc.format, tc.quiet, tc.digests), tc.trunc)
		if err := formatter.WriteImages(ctx, listImages(), tc.digests); err != nil {
			t.Fatal(err)
		}
		golden(t, tc.name, out.String())
	}
}

func TestDiskUsageGolden(t *testing.T) {
	du := &metadatav1.GetDiskUsageResponse{
		Images:     &metadatav1.DiskUsage{Total: 7, Active: 3, Size: 214_600_000, Reclaimable: 80_120_000},
		Layers:     &metadatav1.DiskUsage{Total: 12, Active: 9, Size: 98_100_000, Reclaimable: 1_200_000},
		BuildCache: &metadatav1.DiskUsage{Total: 40, Active: 10, Size: 12_300_000, Reclaimable: 9_000_000},
	}
	for _, tc := range []struct{ name, format string }{
		{"df-table", ""},
		{"df-json", "json"},
		{"df-template", "table {{.Type}}\t{{.Reclaimable}}"},
	} {
		var out bytes.Buffer
		if err := formatter.WriteDiskUsage(goldenContext(&out, formatter.NewDiskUsageFormat(tc.format), true), du); err != nil {
			t.Fatal(err)
		}
		golden(t, tc.name, out.String())
	}
	var out bytes.Buffer
	if err := formatter.WriteDiskUsage(goldenContext(&out, formatter.NewDiskUsageFormat(""), true), &metadatav1.GetDiskUsageResponse{}); err != nil {
		t.Fatal(err)
	}
	golden(t, "df-empty", out.String())
}

// The seed's `docker image inspect` of docker-outputs.md, from Docker's JSON
// object as the metadata service returns it.
func TestInspectGolden(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "inspect-seed.golden"))
	if err != nil {
		t.Fatal(err)
	}
	var objects []json.RawMessage
	if err := json.Unmarshal(raw, &objects); err != nil {
		t.Fatal(err)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, objects[0]); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, format string }{
		{"inspect-seed", ""},
		{"inspect-seed-json", "json"},
		{"inspect-seed-template", `{{.Id}} {{.Parent}} {{.Config.Cmd}} {{.Config.ExposedPorts}} {{.Metadata.LastTagTime}} {{json .RepoTags}}`},
	} {
		var out bytes.Buffer
		in, err := formatter.NewInspector(&out, tc.format)
		if err != nil {
			t.Fatal(err)
		}
		if err := in.Inspect(compact.Bytes()); err != nil {
			t.Fatal(err)
		}
		if err := in.Flush(); err != nil {
			t.Fatal(err)
		}
		if tc.name == "inspect-seed" {
			// The golden file itself is Docker's output: it must not be rewritten.
			if out.String() != string(raw) {
				t.Errorf("inspect of the seed differs from Docker's:\n--- got\n%s--- want\n%s", out.String(), raw)
			}
			continue
		}
		golden(t, tc.name, out.String())
	}
}

func TestInspectNothingFound(t *testing.T) {
	for format, want := range map[string]string{"": "[]\n", "json": "[]\n", "{{.Id}}": "\n"} {
		var out bytes.Buffer
		in, err := formatter.NewInspector(&out, format)
		if err != nil {
			t.Fatal(err)
		}
		if err := in.Flush(); err != nil {
			t.Fatal(err)
		}
		if out.String() != want {
			t.Errorf("inspect --format %q of nothing = %q, want %q", format, out.String(), want)
		}
	}
}

func TestBadTemplate(t *testing.T) {
	if _, err := formatter.NewInspector(&bytes.Buffer{}, "{{.Id"); err == nil {
		t.Error("NewInspector({{.Id) succeeded; want a template parsing error")
	}
	var out bytes.Buffer
	err := formatter.WriteImages(goldenContext(&out, "{{.NoSuchField}}", true), listImages(), false)
	if err == nil {
		t.Error("WriteImages with {{.NoSuchField}} succeeded; want an error")
	}
}
