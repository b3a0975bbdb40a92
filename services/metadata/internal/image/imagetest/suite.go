package imagetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"
	"google.golang.org/protobuf/testing/protocmp"

	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/metadata/internal/image"
)

// Clock is a time source tests move by hand.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock at a fixed time.
func NewClock() *Clock {
	return &Clock{t: time.Date(2026, 11, 27, 5, 0, 0, 0, time.UTC)}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Add moves the clock.
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// NewStore returns an empty store whose notion of now is the given clock.
type NewStore func(t *testing.T, now func() time.Time) image.Store

// TestStore runs the conformance suite against the stores newStore makes.
func TestStore(t *testing.T, newStore NewStore) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, image.Store, *Clock)
	}{
		{"PutAndGet", testPutAndGet},
		{"PutInvalid", testPutInvalid},
		{"Resolve", testResolve},
		{"Tag", testTag},
		{"History", testHistory},
		{"Inspect", testInspect},
		{"ListFilters", testListFilters},
		{"ListPaging", testListPaging},
		{"DeleteRules", testDeleteRules},
		{"DeleteParentChain", testDeleteParentChain},
		{"Prune", testPrune},
		{"CacheRecords", testCacheRecords},
		{"ReferencedBlobs", testReferencedBlobs},
		{"DiskUsage", testDiskUsage},
		{"Events", testEvents},
		{"ParallelTagMoves", testParallelTagMoves},
		{"EventsUnderConcurrentWrites", func(t *testing.T, s image.Store, c *Clock) {
			EventsUnderConcurrentWrites(t, s, []image.Store{s}, c)
		}},
		{"PagingUnderWrites", testPagingUnderWrites},
		{"DefaultPageSize", testDefaultPageSize},
		{"Leases", testLeases},
		{"Repository", testRepository},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewClock()
			tc.fn(t, newStore(t, c.Now), c)
		})
	}
}

func put(t *testing.T, s image.Store, img *metadatav1.Image, tags ...string) *metadatav1.Image {
	t.Helper()
	out, err := s.PutImage(context.Background(), img, image.PutOptions{Tags: tags, Action: metadatav1.EventAction_EVENT_ACTION_BUILD})
	if err != nil {
		t.Fatalf("PutImage(%s, %v) = %v", img.GetId(), tags, err)
	}
	return out
}

func get(t *testing.T, s image.Store, ref string) *metadatav1.Image {
	t.Helper()
	img, err := s.GetImage(context.Background(), ref)
	if err != nil {
		t.Fatalf("GetImage(%q) = %v", ref, err)
	}
	return img
}

func wantKind(t *testing.T, what string, err error, kind error) {
	t.Helper()
	if err == nil || !errorsIs(err, kind) {
		t.Errorf("%s = %v, want an error of kind %q", what, err, kind)
	}
}

func errorsIs(err, kind error) bool {
	for _, k := range []struct {
		kind error
		is   func(error) bool
	}{
		{errdefs.ErrNotFound, errdefs.IsNotFound},
		{errdefs.ErrInvalidArgument, errdefs.IsInvalidArgument},
		{errdefs.ErrFailedPrecondition, errdefs.IsFailedPrecondition},
		{errdefs.ErrAlreadyExists, errdefs.IsAlreadyExists},
		{errdefs.ErrAborted, func(err error) bool { return errors.Is(err, errdefs.ErrAborted) }},
	} {
		if k.kind == kind {
			return k.is(err)
		}
	}
	return false
}

func testPutAndGet(t *testing.T, s image.Store, c *Clock) {
	ctx := context.Background()
	chain := Chain(t, 1)
	base := Make(t, Step{Comment: "Imported from -", LayerSize: 1000, Labels: map[string]string{"maintainer": "me"}})
	got := put(t, s, base, "my-nginx", "davidainslie/nginx:latest")
	if got.GetId() != base.GetId() {
		t.Fatalf("PutImage ID = %s, want %s", got.GetId(), base.GetId())
	}
	// Docker orders RepoTags by the normalized reference:
	// docker.io/davidainslie/… before docker.io/library/….
	if want := []string{"davidainslie/nginx:latest", "my-nginx:latest"}; !cmp.Equal(got.GetRepoTags(), want) {
		t.Errorf("RepoTags = %q, want %q", got.GetRepoTags(), want)
	}
	if got.GetSize() != 1000 || got.GetOs() != "linux" || got.GetArchitecture() != "amd64" || got.GetLabels()["maintainer"] != "me" {
		t.Errorf("derived fields: size %d os %q arch %q labels %v", got.GetSize(), got.GetOs(), got.GetArchitecture(), got.GetLabels())
	}
	if len(got.GetHistory()) != 1 || got.GetHistory()[0].GetComment() != "Imported from -" || got.GetCreated() == nil {
		t.Errorf("history/created not derived from the config: %v, %v", got.GetHistory(), got.GetCreated())
	}
	if got.GetLastTagTime() == nil || !got.GetLastTagTime().AsTime().Equal(c.Now()) || got.GetRecordedAt() == nil {
		t.Errorf("LastTagTime = %v, RecordedAt = %v; want the store's now %v", got.GetLastTagTime(), got.GetRecordedAt(), c.Now())
	}
	for _, ref := range []string{"my-nginx", "my-nginx:latest", "docker.io/library/my-nginx:latest", "davidainslie/nginx", base.GetId(), strings.TrimPrefix(base.GetId(), "sha256:"), base.GetId()[7:19], base.GetId()[:13]} {
		img := get(t, s, ref)
		if diff := cmp.Diff(got, img, protocmp.Transform()); diff != "" {
			t.Errorf("GetImage(%q) differs from PutImage's result (-put +get):\n%s", ref, diff)
		}
	}
	// Idempotent on the ID: the same image again changes nothing but tags.
	c.Add(time.Minute)
	again, err := s.PutImage(ctx, base, image.PutOptions{})
	if err != nil {
		t.Fatalf("second PutImage = %v", err)
	}
	if !again.GetRecordedAt().AsTime().Equal(got.GetRecordedAt().AsTime()) || len(again.GetRepoTags()) != 2 {
		t.Errorf("second PutImage changed the record: %v", again)
	}
	// A child with a parent.
	put(t, s, chain[0])
	child := put(t, s, chain[1], "child:1")
	if child.GetParent() != chain[0].GetId() {
		t.Errorf("Parent = %q, want %q", child.GetParent(), chain[0].GetId())
	}
	// Repository digests.
	rd := "localhost:5000/team/app@" + base.GetManifest().GetDigest()
	withDigest, err := s.PutImage(ctx, base, image.PutOptions{RepoDigests: []string{rd}})
	if err != nil {
		t.Fatal(err)
	}
	if !cmp.Equal(withDigest.GetRepoDigests(), []string{rd}) {
		t.Errorf("RepoDigests = %q, want [%q]", withDigest.GetRepoDigests(), rd)
	}
	if img := get(t, s, rd); img.GetId() != base.GetId() {
		t.Errorf("GetImage(%q) = %s, want %s", rd, img.GetId(), base.GetId())
	}
}

func testPutInvalid(t *testing.T, s image.Store, _ *Clock) {
	ctx := context.Background()
	good := Make(t, Step{LayerSize: 10})
	mut := func(f func(*metadatav1.Image)) *metadatav1.Image {
		img := Make(t, Step{LayerSize: 10})
		f(img)
		return img
	}
	for name, img := range map[string]*metadatav1.Image{
		"no config":         mut(func(i *metadatav1.Image) { i.Config = nil }),
		"wrong id":          mut(func(i *metadatav1.Image) { i.Id = good.GetId() }),
		"config not json":   {Config: []byte("nope"), Manifest: good.GetManifest(), ManifestBytes: good.GetManifestBytes()},
		"missing layer":     mut(func(i *metadatav1.Image) { i.Layers = nil }),
		"wrong diff id":     mut(func(i *metadatav1.Image) { i.Layers[0].DiffId = good.GetLayers()[0].GetDiffId() }),
		"no manifest":       mut(func(i *metadatav1.Image) { i.Manifest = nil }),
		"manifest mismatch": mut(func(i *metadatav1.Image) { i.ManifestBytes = good.GetManifestBytes() }),
		"other config":      mut(func(i *metadatav1.Image) { i.Manifest, i.ManifestBytes = good.GetManifest(), good.GetManifestBytes() }),
	} {
		_, err := s.PutImage(ctx, img, image.PutOptions{})
		wantKind(t, "PutImage("+name+")", err, errdefs.ErrInvalidArgument)
	}
	_, err := s.PutImage(ctx, good, image.PutOptions{Tags: []string{"Bad:tag"}})
	wantKind(t, "PutImage(tag Bad:tag)", err, errdefs.ErrInvalidArgument)
	if err != nil && !strings.Contains(err.Error(), `"Bad:tag"`) {
		t.Errorf("error %q does not name the reference", err)
	}
	orphan := Make(t, Step{Parent: Make(t, Step{LayerSize: 1}), LayerSize: 2})
	_, err = s.PutImage(ctx, orphan, image.PutOptions{})
	wantKind(t, "PutImage(child of an unrecorded parent)", err, errdefs.ErrFailedPrecondition)
	// Nothing half-written: the image with the bad tag was not recorded.
	_, err = s.GetImage(ctx, good.GetId())
	wantKind(t, "GetImage after failed PutImage", err, errdefs.ErrNotFound)
}

func testResolve(t *testing.T, s image.Store, _ *Clock) {
	ctx := context.Background()
	_, err := s.GetImage(ctx, "nginx")
	wantKind(t, "GetImage(nginx)", err, errdefs.ErrNotFound)
	if err != nil && err.Error() != "No such image: nginx" {
		t.Errorf("GetImage(nginx) error = %q, want Docker's %q", err, "No such image: nginx")
	}
	_, err = s.GetImage(ctx, "Nginx:latest")
	wantKind(t, "GetImage(Nginx:latest)", err, errdefs.ErrInvalidArgument)
	// Two images whose IDs share a prefix: find them by generating.
	var imgs []*metadatav1.Image
	byPrefix := map[string]*metadatav1.Image{}
	var shared string
	for shared == "" {
		img := Make(t, Step{LayerSize: 1})
		p := img.GetId()[7:11]
		if other, ok := byPrefix[p]; ok {
			imgs = append(imgs, other, img)
			shared = p
		}
		byPrefix[p] = img
	}
	for _, img := range imgs {
		put(t, s, img)
	}
	_, err = s.GetImage(ctx, shared)
	wantKind(t, "GetImage(ambiguous prefix)", err, errdefs.ErrInvalidArgument)
	// A tag that looks like a prefix wins over the prefix, as in Docker.
	put(t, s, imgs[0], shared)
	if got := get(t, s, shared); got.GetId() != imgs[0].GetId() {
		t.Errorf("GetImage(%q) = %s, want the tagged %s", shared, got.GetId(), imgs[0].GetId())
	}
	_, err = s.GetImage(ctx, imgs[0].GetId()[7:10]) // 3 digits: too short to be a prefix
	wantKind(t, "GetImage(3-digit prefix)", err, errdefs.ErrNotFound)
}

func testTag(t *testing.T, s image.Store, c *Clock) {
	ctx := context.Background()
	a := put(t, s, Make(t, Step{LayerSize: 1}), "app:1")
	b := put(t, s, Make(t, Step{LayerSize: 2}))
	c.Add(time.Second)
	id, tag, err := s.TagImage(ctx, "app:1", "localhost:5000/team/app:1.2")
	if err != nil || id != a.GetId() || tag != "localhost:5000/team/app:1.2" {
		t.Fatalf("TagImage = %q, %q, %v", id, tag, err)
	}
	// Move "app:1" from a to b.
	if _, _, err := s.TagImage(ctx, b.GetId(), "app:1"); err != nil {
		t.Fatal(err)
	}
	if got := get(t, s, "app:1"); got.GetId() != b.GetId() {
		t.Errorf("app:1 → %s after the move, want %s", got.GetId(), b.GetId())
	}
	if got := get(t, s, a.GetId()).GetRepoTags(); !cmp.Equal(got, []string{"localhost:5000/team/app:1.2"}) {
		t.Errorf("a's RepoTags after the move = %q", got)
	}
	gb := get(t, s, b.GetId())
	if !cmp.Equal(gb.GetRepoTags(), []string{"app:1"}) || !gb.GetLastTagTime().AsTime().Equal(c.Now()) {
		t.Errorf("b = tags %q last tag time %v, want [app:1] at %v", gb.GetRepoTags(), gb.GetLastTagTime().AsTime(), c.Now())
	}
	if _, _, err := s.TagImage(ctx, b.GetId(), "app@"+b.GetManifest().GetDigest()); !errdefs.IsInvalidArgument(err) {
		t.Errorf("TagImage(digest target) = %v, want INVALID_ARGUMENT", err)
	}
	if _, _, err := s.TagImage(ctx, "missing:1", "x"); !errdefs.IsNotFound(err) {
		t.Errorf("TagImage(unknown source) = %v, want NOT_FOUND", err)
	}
	// nginx is nginx:latest.
	if _, _, err := s.TagImage(ctx, b.GetId(), "nginx"); err != nil {
		t.Fatal(err)
	}
	if id, err := s.UntagImage(ctx, "nginx:latest"); err != nil || id != b.GetId() {
		t.Errorf("UntagImage(nginx:latest) = %q, %v", id, err)
	}
	if _, err := s.UntagImage(ctx, "nginx"); !errdefs.IsNotFound(err) {
		t.Errorf("UntagImage(nginx) again = %v, want NOT_FOUND", err)
	}
	if got := get(t, s, b.GetId()).GetRepoTags(); !cmp.Equal(got, []string{"app:1"}) {
		t.Errorf("b's RepoTags after untag = %q", got)
	}
}

func testHistory(t *testing.T, s image.Store, _ *Clock) {
	ctx := context.Background()
	base := Make(t, Step{Comment: "Imported from -", LayerSize: 1984412})
	env := Make(t, Step{Parent: base, CreatedBy: "/bin/sh -c #(nop)  ENV A=1", Env: []string{"A=1"}})
	run := Make(t, Step{Parent: env, CreatedBy: "/bin/sh -c echo hi > /x", LayerSize: 160})
	cmdImg := Make(t, Step{Parent: run, CreatedBy: `/bin/sh -c #(nop)  CMD ["nginx"]`, Cmd: []string{"nginx"}})
	put(t, s, base, "busybox")
	put(t, s, env)
	put(t, s, run)
	put(t, s, cmdImg, "my-nginx")
	rows, err := s.ImageHistory(ctx, "my-nginx")
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		ID, CreatedBy, Comment string
		Size                   int64
		Tags                   []string
	}
	var got []row
	for _, r := range rows {
		got = append(got, row{r.GetId(), r.GetCreatedBy(), r.GetComment(), r.GetSize(), r.GetTags()})
		if r.GetCreated().GetNanos() != 0 {
			t.Errorf("row %s created %v: Docker gives whole seconds", r.GetId(), r.GetCreated().AsTime())
		}
	}
	want := []row{
		{cmdImg.GetId(), `/bin/sh -c #(nop)  CMD ["nginx"]`, "", 0, []string{"my-nginx:latest"}},
		{run.GetId(), "/bin/sh -c echo hi > /x", "", 160, nil},
		{env.GetId(), "/bin/sh -c #(nop)  ENV A=1", "", 0, nil},
		{base.GetId(), "", "Imported from -", 1984412, []string{"busybox:latest"}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ImageHistory(my-nginx) (-want +got):\n%s", diff)
	}
	// A pulled image records no parents: every row but the top is <missing>.
	pulled := Make(t, Step{Parent: run, CreatedBy: "/bin/sh -c #(nop)  EXPOSE 80", NoParent: true})
	put(t, s, pulled, "pulled")
	rows, err = s.ImageHistory(ctx, "pulled")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range rows {
		ids = append(ids, r.GetId())
	}
	if want := []string{pulled.GetId(), "<missing>", "<missing>", "<missing>"}; !cmp.Equal(ids, want) {
		t.Errorf("ImageHistory(pulled) IDs = %q, want %q", ids, want)
	}
}

func testInspect(t *testing.T, s image.Store, c *Clock) {
	ctx := context.Background()
	base := Make(t, Step{Comment: "Imported from -", LayerSize: 1984412})
	child := Make(t, Step{Parent: base, CreatedBy: `/bin/sh -c #(nop)  CMD ["nginx" "-g" "daemon off;"]`,
		Cmd: []string{"nginx", "-g", "daemon off;"}, Labels: map[string]string{"maintainer": "NGINX Docker Maintainers <docker-maint@nginx.com>"}})
	put(t, s, base)
	put(t, s, child, "my-nginx", "davidainslie/nginx")
	insp, raw, err := s.InspectImage(ctx, "my-nginx")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Created   string `json:"created"`
		Container string `json:"container"`
		RootFS    struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(child.GetConfig(), &cfg); err != nil {
		t.Fatal(err)
	}
	created, _ := time.Parse(time.RFC3339Nano, cfg.Created)
	want := fmt.Sprintf(`{
    "Id": %q,
    "RepoTags": [
        "davidainslie/nginx:latest",
        "my-nginx:latest"
    ],
    "RepoDigests": [],
    "Parent": %q,
    "Comment": "",
    "Created": %q,
    "Container": %q,
    "ContainerConfig": {
        "Hostname": "",
        "Domainname": "",
        "User": "",
        "AttachStdin": false,
        "AttachStdout": false,
        "AttachStderr": false,
        "Tty": false,
        "OpenStdin": false,
        "StdinOnce": false,
        "Env": [
            %q
        ],
        "Cmd": [
            "/bin/sh",
            "-c",
            "/bin/sh -c #(nop)  CMD [\"nginx\" \"-g\" \"daemon off;\"]"
        ],
        "Image": %q,
        "Volumes": null,
        "WorkingDir": "",
        "Entrypoint": null,
        "OnBuild": null,
        "Labels": {
            "maintainer": "NGINX Docker Maintainers <docker-maint@nginx.com>"
        }
    },
    "DockerVersion": "20.10.24+dfsg1",
    "Author": "",
    "Config": {
        "Hostname": "",
        "Domainname": "",
        "User": "",
        "AttachStdin": false,
        "AttachStdout": false,
        "AttachStderr": false,
        "Tty": false,
        "OpenStdin": false,
        "StdinOnce": false,
        "Env": [
            %q
        ],
        "Cmd": [
            "nginx",
            "-g",
            "daemon off;"
        ],
        "Image": %q,
        "Volumes": null,
        "WorkingDir": "",
        "Entrypoint": null,
        "OnBuild": null,
        "Labels": {
            "maintainer": "NGINX Docker Maintainers <docker-maint@nginx.com>"
        }
    },
    "Architecture": "amd64",
    "Os": "linux",
    "Size": 1984412,
    "VirtualSize": 1984412,
    "GraphDriver": {
        "Data": null,
        "Name": "overlay2"
    },
    "RootFS": {
        "Type": "layers",
        "Layers": [
            %q
        ]
    },
    "Metadata": {
        "LastTagTime": %q
    }
}`, child.GetId(), base.GetId(), created.Format(time.RFC3339Nano), cfg.Container, DefaultPath, base.GetId(),
		DefaultPath, base.GetId(), cfg.RootFS.DiffIDs[0], c.Now().Format(time.RFC3339Nano))
	var indented bytes.Buffer
	if err := json.Indent(&indented, raw, "", "    "); err != nil {
		t.Fatalf("docker_json is not JSON: %v\n%s", err, raw)
	}
	if diff := cmp.Diff(want, indented.String()); diff != "" {
		t.Errorf("docker_json differs from Docker's shape (-want +got):\n%s", diff)
	}
	if insp.GetId() != child.GetId() || insp.GetParent() != base.GetId() || insp.GetSize() != 1984412 ||
		!cmp.Equal(insp.GetConfig().GetCmd(), []string{"nginx", "-g", "daemon off;"}) ||
		insp.GetConfig().GetEnv()[0] != DefaultPath || insp.GetRootFs().GetType() != "layers" ||
		!insp.GetMetadata().GetLastTagTime().AsTime().Equal(c.Now()) {
		t.Errorf("structured inspect = %v", insp)
	}
	// An untagged image: [] tags, and Docker's zero LastTagTime.
	_, raw, err = s.InspectImage(ctx, base.GetId())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(raw, []byte(`"RepoTags":[],`)) || !bytes.Contains(raw, []byte(`"LastTagTime":"0001-01-01T00:00:00Z"`)) {
		t.Errorf("untagged inspect = %s", raw)
	}
}

func ids(sums []*metadatav1.ImageSummary) []string {
	var out []string
	for _, s := range sums {
		out = append(out, s.GetId())
	}
	return out
}

func list(t *testing.T, s image.Store, all bool, filters ...string) []string {
	t.Helper()
	var fs []*metadatav1.Filter
	for _, f := range filters {
		k, v, _ := strings.Cut(f, "=")
		fs = append(fs, &metadatav1.Filter{Key: k, Value: v})
	}
	sums, next, err := s.ListImages(context.Background(), image.ListOptions{Filters: fs, All: all})
	if err != nil {
		t.Fatalf("ListImages(all=%v, %q) = %v", all, filters, err)
	}
	if next != "" {
		t.Errorf("ListImages without page size returned a next page token")
	}
	return ids(sums)
}

func testListFilters(t *testing.T, s image.Store, _ *Clock) {
	ctx := context.Background()
	chain := Chain(t, 2) // base ← step0 ← step1
	for _, img := range chain {
		put(t, s, img)
	}
	base, mid, top := chain[0].GetId(), chain[1].GetId(), chain[2].GetId()
	if _, _, err := s.TagImage(ctx, base, "busybox"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.TagImage(ctx, top, "my-nginx:v1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.TagImage(ctx, top, "davidainslie/nginx"); err != nil {
		t.Fatal(err)
	}
	labelled := put(t, s, Make(t, Step{LayerSize: 5, Labels: map[string]string{"team": "a", "tier": "web"}})).GetId()
	dangling := put(t, s, Make(t, Step{LayerSize: 6})).GetId()

	tests := []struct {
		all     bool
		filters []string
		want    []string
	}{
		{false, nil, []string{dangling, labelled, top, base}},            // mid is intermediate
		{true, nil, []string{dangling, labelled, top, mid, base}},        // -a
		{false, []string{"dangling=true"}, []string{dangling, labelled}}, // untagged heads
		{false, []string{"dangling=false"}, []string{top, base}},
		{false, []string{"reference=busybox"}, []string{base}},
		{false, []string{"reference=*nginx*"}, []string{top}},
		{false, []string{"reference=*/nginx"}, []string{top}},
		{false, []string{"reference=my-nginx:v*"}, []string{top}},
		{false, []string{"reference=busybox", "reference=my-nginx"}, []string{top, base}},
		{false, []string{"reference=nothing*"}, nil},
		{false, []string{"label=team"}, []string{labelled}},
		{false, []string{"label=team=a", "label=tier=web"}, []string{labelled}},
		{false, []string{"label=team=b"}, nil},
		{false, []string{"before=my-nginx:v1"}, []string{base}},
		{true, []string{"before=my-nginx:v1"}, []string{mid, base}},
		{false, []string{"since=my-nginx:v1"}, []string{dangling, labelled}},
		{false, []string{"since=busybox", "before=" + labelled}, []string{top}},
	}
	for _, tt := range tests {
		if got := list(t, s, tt.all, tt.filters...); !cmp.Equal(got, tt.want) {
			t.Errorf("ListImages(all=%v, %q) = %q, want %q", tt.all, tt.filters, got, tt.want)
		}
	}
	// Reference filters show only the matching tags.
	sums, _, err := s.ListImages(ctx, image.ListOptions{Filters: []*metadatav1.Filter{{Key: "reference", Value: "*/nginx"}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(sums) != 1 || !cmp.Equal(sums[0].GetRepoTags(), []string{"davidainslie/nginx:latest"}) {
		t.Errorf("reference=*/nginx summaries = %v", sums)
	}
	sums, _, _ = s.ListImages(ctx, image.ListOptions{})
	if sums[2].GetId() != top || !cmp.Equal(sums[2].GetRepoTags(), []string{"davidainslie/nginx:latest", "my-nginx:v1"}) ||
		sums[2].GetParentId() != mid || sums[2].GetSize() != chain[2].GetLayers()[0].GetDiffSize()+chain[2].GetLayers()[1].GetDiffSize() ||
		sums[2].GetManifestDigest() != chain[2].GetManifest().GetDigest() || sums[1].GetLabels()["tier"] != "web" {
		t.Errorf("summary of my-nginx = %v", sums[2])
	}
	for _, f := range []*metadatav1.Filter{{Key: "colour", Value: "x"}, {Key: "dangling", Value: "maybe"}, {Key: "reference", Value: "["}} {
		_, _, err := s.ListImages(ctx, image.ListOptions{Filters: []*metadatav1.Filter{f}})
		wantKind(t, fmt.Sprintf("ListImages(%s=%s)", f.GetKey(), f.GetValue()), err, errdefs.ErrInvalidArgument)
	}
	_, _, err = s.ListImages(ctx, image.ListOptions{Filters: []*metadatav1.Filter{{Key: "before", Value: "missing"}}})
	wantKind(t, "ListImages(before=missing)", err, errdefs.ErrNotFound)
}

func testListPaging(t *testing.T, s image.Store, _ *Clock) {
	ctx := context.Background()
	var want []string
	for i := 0; i < 25; i++ {
		want = append([]string{put(t, s, Make(t, Step{LayerSize: int64(i + 1)}), fmt.Sprintf("app:%d", i)).GetId()}, want...)
	}
	var got []string
	token := ""
	pages := 0
	for {
		sums, next, err := s.ListImages(ctx, image.ListOptions{PageSize: 10, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		got = append(got, ids(sums)...)
		if next == "" {
			break
		}
		token = next
	}
	if pages != 3 || !cmp.Equal(got, want) {
		t.Errorf("paging by 10 = %d pages %q, want 3 pages %q", pages, got, want)
	}
	// Paging with a glob filter.
	sums, next, err := s.ListImages(ctx, image.ListOptions{PageSize: 2, Filters: []*metadatav1.Filter{{Key: "reference", Value: "app:1*"}}})
	if err != nil || len(sums) != 2 || next == "" {
		t.Fatalf("filtered first page = %d images, %q, %v", len(sums), next, err)
	}
	if _, _, err := s.ListImages(ctx, image.ListOptions{PageToken: "garbage!"}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("ListImages(bad token) = %v, want INVALID_ARGUMENT", err)
	}
}

func deleted(items []*metadatav1.DeletedItem) []string {
	var out []string
	for _, it := range items {
		if it.GetUntagged() != "" {
			out = append(out, "Untagged: "+it.GetUntagged())
		} else {
			out = append(out, "Deleted: "+it.GetDeleted())
		}
	}
	return out
}

func testDeleteRules(t *testing.T, s image.Store, _ *Clock) {
	ctx := context.Background()
	img := Make(t, Step{LayerSize: 7})
	put(t, s, img, "a:1", "a:2", "b:1")
	diffID := img.GetLayers()[0].GetDiffId()

	// A tag of an image with other tags only removes the tag.
	items, err := s.DeleteImage(ctx, "a:1", image.DeleteOptions{})
	if err != nil || !cmp.Equal(deleted(items), []string{"Untagged: a:1"}) {
		t.Errorf("rmi a:1 = %q, %v", deleted(items), err)
	}
	// By ID with tags in two repositories: refused unless forced.
	_, err = s.DeleteImage(ctx, img.GetId()[7:19], image.DeleteOptions{})
	wantKind(t, "rmi <id> with tags in two repositories", err, errdefs.ErrFailedPrecondition)
	if err != nil && !strings.Contains(err.Error(), "conflict: unable to delete "+img.GetId()[7:19]+" (must be forced) - image is referenced in multiple repositories") {
		t.Errorf("conflict message = %q", err)
	}
	items, err = s.DeleteImage(ctx, img.GetId()[7:19], image.DeleteOptions{Force: true})
	if want := []string{"Untagged: a:2", "Untagged: b:1", "Deleted: " + img.GetId(), "Deleted: " + diffID}; err != nil || !cmp.Equal(deleted(items), want) {
		t.Errorf("rmi -f <id> = %q, %v; want %q", deleted(items), err, want)
	}
	if _, err := s.GetImage(ctx, img.GetId()); !errdefs.IsNotFound(err) {
		t.Errorf("image still there after rmi -f: %v", err)
	}

	// By ID with all tags in one repository: untags and deletes.
	one := Make(t, Step{LayerSize: 8})
	put(t, s, one, "solo:1", "solo:2")
	_, err = s.DeleteImage(ctx, one.GetId(), image.DeleteOptions{})
	wantKind(t, "rmi <id> with two tags of one repository", err, errdefs.ErrFailedPrecondition)
	_, _ = s.DeleteImage(ctx, "solo:2", image.DeleteOptions{})
	items, err = s.DeleteImage(ctx, one.GetId(), image.DeleteOptions{})
	if want := []string{"Untagged: solo:1", "Deleted: " + one.GetId(), "Deleted: " + one.GetLayers()[0].GetDiffId()}; err != nil || !cmp.Equal(deleted(items), want) {
		t.Errorf("rmi <id> with one tag = %q, %v; want %q", deleted(items), err, want)
	}

	// A parent: by ID refused (FAILED_PRECONDITION) unless forced; by its
	// last tag only untagged, the image staying as an intermediate.
	chain := Chain(t, 1)
	put(t, s, chain[0], "base")
	put(t, s, chain[1], "child")
	_, err = s.DeleteImage(ctx, chain[0].GetId(), image.DeleteOptions{})
	wantKind(t, "rmi <parent id>", err, errdefs.ErrFailedPrecondition)
	if err != nil && !strings.Contains(err.Error(), "image has dependent child images") {
		t.Errorf("conflict message = %q", err)
	}
	items, err = s.DeleteImage(ctx, "base", image.DeleteOptions{})
	if err != nil || !cmp.Equal(deleted(items), []string{"Untagged: base:latest"}) {
		t.Errorf("rmi base = %q, %v", deleted(items), err)
	}
	if got := get(t, s, chain[0].GetId()); len(got.GetRepoTags()) != 0 {
		t.Errorf("parent after rmi of its tag: %v", got.GetRepoTags())
	}
	items, err = s.DeleteImage(ctx, chain[0].GetId(), image.DeleteOptions{Force: true})
	if err != nil || !cmp.Equal(deleted(items), []string{"Deleted: " + chain[0].GetId()}) {
		t.Errorf("rmi -f <parent id> = %q, %v", deleted(items), err)
	}
	if _, err := s.DeleteImage(ctx, "nothing:here", image.DeleteOptions{}); !errdefs.IsNotFound(err) {
		t.Errorf("rmi of an unknown image = %v, want NOT_FOUND", err)
	}

	// The last tag of a repository takes the repository's digests with it.
	dg := Make(t, Step{LayerSize: 9})
	rd := "reg.example.com/x@" + dg.GetManifest().GetDigest()
	if _, err := s.PutImage(ctx, dg, image.PutOptions{Tags: []string{"reg.example.com/x:1", "other:1"}, RepoDigests: []string{rd}}); err != nil {
		t.Fatal(err)
	}
	items, err = s.DeleteImage(ctx, "reg.example.com/x:1", image.DeleteOptions{})
	if want := []string{"Untagged: reg.example.com/x:1", "Untagged: " + rd}; err != nil || !cmp.Equal(deleted(items), want) {
		t.Errorf("rmi reg.example.com/x:1 = %q, %v; want %q", deleted(items), err, want)
	}
}

func testDeleteParentChain(t *testing.T, s image.Store, _ *Clock) {
	ctx := context.Background()
	chain := Chain(t, 3) // base(layer) ← s0(empty) ← s1(layer) ← s2(empty)
	put(t, s, chain[0], "busybox")
	for _, img := range chain[1:3] {
		put(t, s, img)
	}
	put(t, s, chain[3], "my-nginx")
	items, err := s.DeleteImage(ctx, "my-nginx", image.DeleteOptions{NoPrune: true})
	if err != nil || !cmp.Equal(deleted(items), []string{"Untagged: my-nginx:latest", "Deleted: " + chain[3].GetId()}) {
		t.Errorf("rmi --no-prune my-nginx = %q, %v", deleted(items), err)
	}
	if _, err := s.GetImage(ctx, chain[2].GetId()); err != nil {
		t.Errorf("--no-prune removed the parent: %v", err)
	}
	put(t, s, chain[3], "my-nginx")
	items, err = s.DeleteImage(ctx, "my-nginx", image.DeleteOptions{})
	chains := image.ChainIDs([]string{chain[0].GetLayers()[0].GetDiffId(), chain[2].GetLayers()[1].GetDiffId()})
	want := []string{
		"Untagged: my-nginx:latest",
		"Deleted: " + chain[3].GetId(),
		"Deleted: " + chain[2].GetId(),
		"Deleted: " + chains[1], // the RUN layer goes with the last image that has it
		"Deleted: " + chain[1].GetId(),
		// busybox is tagged: the walk stops there, keeping its layer.
	}
	if err != nil || !cmp.Equal(deleted(items), want) {
		t.Errorf("rmi my-nginx = %q, %v; want %q", deleted(items), err, want)
	}
	if got := list(t, s, true); !cmp.Equal(got, []string{chain[0].GetId()}) {
		t.Errorf("images left = %q, want only busybox", got)
	}
}

func testPrune(t *testing.T, s image.Store, _ *Clock) {
	ctx := context.Background()
	old := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	chain := Chain(t, 1)
	put(t, s, chain[0], "busybox")
	put(t, s, chain[1], "app")
	oldDangling := put(t, s, Make(t, Step{LayerSize: 11, Created: old}))
	newDangling := put(t, s, Make(t, Step{LayerSize: 13, Labels: map[string]string{"keep": "yes"}}))
	unusedTagged := put(t, s, Make(t, Step{LayerSize: 17}), "unused:1")

	// until: only images created before it.
	items, reclaimed, err := s.PruneImages(ctx, false, []*metadatav1.Filter{{Key: "until", Value: "2021-01-01T00:00:00Z"}})
	if want := []string{"Deleted: " + oldDangling.GetId(), "Deleted: " + oldDangling.GetLayers()[0].GetDiffId()}; err != nil || !cmp.Equal(deleted(items), want) || reclaimed != 11 {
		t.Errorf("prune until=2021 = %q, %d, %v; want %q, 11", deleted(items), reclaimed, err, want)
	}
	// label!=keep spares the labelled one.
	items, _, err = s.PruneImages(ctx, false, []*metadatav1.Filter{{Key: "label!", Value: "keep"}})
	if err != nil || len(items) != 0 {
		t.Errorf("prune label!=keep = %q, %v; want nothing", deleted(items), err)
	}
	items, reclaimed, err = s.PruneImages(ctx, false, []*metadatav1.Filter{{Key: "label", Value: "keep=yes"}})
	if err != nil || !cmp.Equal(deleted(items), []string{"Deleted: " + newDangling.GetId(), "Deleted: " + newDangling.GetLayers()[0].GetDiffId()}) || reclaimed != 13 {
		t.Errorf("prune label=keep=yes = %q, %d, %v", deleted(items), reclaimed, err)
	}
	// Dangling prune leaves tagged images alone.
	items, _, err = s.PruneImages(ctx, false, nil)
	if err != nil || len(items) != 0 {
		t.Errorf("prune with nothing dangling = %q, %v", deleted(items), err)
	}
	// -a: every image without a child goes, untagged first; parents follow.
	items, reclaimed, err = s.PruneImages(ctx, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"Untagged: unused:1", "Deleted: " + unusedTagged.GetId(), "Deleted: " + unusedTagged.GetLayers()[0].GetDiffId(),
		"Untagged: app:latest", "Deleted: " + chain[1].GetId(),
		"Untagged: busybox:latest", "Deleted: " + chain[0].GetId(), "Deleted: " + chain[0].GetLayers()[0].GetDiffId(),
	}
	if !cmp.Equal(deleted(items), want) || reclaimed != 17+chain[0].GetLayers()[0].GetDiffSize() {
		t.Errorf("prune -a = %q, %d; want %q", deleted(items), reclaimed, want)
	}
	if got := list(t, s, true); len(got) != 0 {
		t.Errorf("images left after prune -a: %q", got)
	}
	_, _, err = s.PruneImages(ctx, false, []*metadatav1.Filter{{Key: "until", Value: "yesterday"}})
	wantKind(t, "prune until=yesterday", err, errdefs.ErrInvalidArgument)
}

func testCacheRecords(t *testing.T, s image.Store, c *Clock) {
	ctx := context.Background()
	a := put(t, s, Make(t, Step{LayerSize: 3}), "a")
	b := put(t, s, Make(t, Step{LayerSize: 4}), "b")
	key := func(i int) string { return fmt.Sprintf("sha256:%064x", i) }
	if _, err := s.PutCacheRecord(ctx, &metadatav1.CacheRecord{Key: key(1), ImageId: a.GetId(), Description: "RUN a", Size: 3}, ""); err != nil {
		t.Fatal(err)
	}
	c.Add(time.Hour)
	if _, err := s.PutCacheRecord(ctx, &metadatav1.CacheRecord{Key: key(2), ImageId: b.GetId(), Description: "RUN b", Size: 4}, ""); err != nil {
		t.Fatal(err)
	}
	_, err := s.PutCacheRecord(ctx, &metadatav1.CacheRecord{Key: "nope", ImageId: a.GetId()}, "")
	wantKind(t, "PutCacheRecord(bad key)", err, errdefs.ErrInvalidArgument)
	_, err = s.PutCacheRecord(ctx, &metadatav1.CacheRecord{Key: key(3), ImageId: Make(t, Step{}).GetId()}, "")
	wantKind(t, "PutCacheRecord(unknown image)", err, errdefs.ErrFailedPrecondition)
	// The first writer wins: a record of another recorded image stays and
	// is what PutCacheRecord returns (two builds of one Dockerfile at once
	// leave the first one's records); storing the same record again is
	// harmless.
	got, err := s.PutCacheRecord(ctx, &metadatav1.CacheRecord{Key: key(1), ImageId: b.GetId(), Description: "RUN b", Size: 4}, "")
	if err != nil || got.GetImageId() != a.GetId() || got.GetDescription() != "RUN a" {
		t.Errorf("PutCacheRecord(key 1, image b) over a's record = %v, %v; want a's record", got, err)
	}
	got, err = s.PutCacheRecord(ctx, &metadatav1.CacheRecord{Key: key(1), ImageId: a.GetId(), Description: "RUN a", Size: 3}, "")
	if err != nil || got.GetImageId() != a.GetId() || got.GetKey() != key(1) {
		t.Errorf("PutCacheRecord(key 1, image a) again = %v, %v; want a's record", got, err)
	}
	// A writer that found a record wrong replaces exactly that one.
	got, err = s.PutCacheRecord(ctx, &metadatav1.CacheRecord{Key: key(1), ImageId: b.GetId(), Description: "RUN b"}, b.GetId())
	if err != nil || got.GetImageId() != a.GetId() {
		t.Errorf("PutCacheRecord(key 1, image b, replacing b) over a's record = %v, %v; want a's record", got, err)
	}
	got, err = s.PutCacheRecord(ctx, &metadatav1.CacheRecord{Key: key(1), ImageId: b.GetId(), Description: "RUN b"}, a.GetId())
	if err != nil || got.GetImageId() != b.GetId() {
		t.Errorf("PutCacheRecord(key 1, image b, replacing a) = %v, %v; want b's record", got, err)
	}
	if got, err = s.PutCacheRecord(ctx, &metadatav1.CacheRecord{Key: key(1), ImageId: a.GetId(), Description: "RUN a", Size: 3}, b.GetId()); err != nil || got.GetImageId() != a.GetId() {
		t.Fatalf("PutCacheRecord(key 1, image a, replacing b) = %v, %v; want a's record", got, err)
	}

	c.Add(time.Minute)
	recs, err := s.LookupCacheRecords(ctx, []string{key(1), key(2), key(9)})
	if err != nil || len(recs) != 2 {
		t.Fatalf("LookupCacheRecords = %v, %v; want 2 records", recs, err)
	}
	for _, r := range recs {
		if !r.GetLastUsed().AsTime().Equal(c.Now()) {
			t.Errorf("record %s last used %v, want %v", r.GetKey(), r.GetLastUsed().AsTime(), c.Now())
		}
	}
	// A record whose image is gone is skipped.
	if _, err := s.DeleteImage(ctx, "b", image.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	recs, err = s.LookupCacheRecords(ctx, []string{key(1), key(2)})
	if err != nil || len(recs) != 1 || recs[0].GetKey() != key(1) || recs[0].GetImageId() != a.GetId() || recs[0].GetDescription() != "RUN a" {
		t.Errorf("LookupCacheRecords after deleting b = %v, %v", recs, err)
	}
	// ... and gives way to a new one.
	got, err = s.PutCacheRecord(ctx, &metadatav1.CacheRecord{Key: key(2), ImageId: a.GetId(), Description: "RUN b again"}, "")
	if err != nil || got.GetImageId() != a.GetId() || got.GetDescription() != "RUN b again" {
		t.Errorf("PutCacheRecord(key 2, image a) over a record of a deleted image = %v, %v; want the new record", got, err)
	}
	// List, most recently used first, paged.
	c.Add(time.Minute)
	if _, err := s.PutCacheRecord(ctx, &metadatav1.CacheRecord{Key: key(4), ImageId: a.GetId()}, ""); err != nil {
		t.Fatal(err)
	}
	first, next, err := s.ListCacheRecords(ctx, 2, "")
	if err != nil || len(first) != 2 || next == "" || first[0].GetKey() != key(4) {
		t.Fatalf("ListCacheRecords page 1 = %v, %q, %v", first, next, err)
	}
	rest, next, err := s.ListCacheRecords(ctx, 2, next)
	if err != nil || len(rest) != 1 || next != "" {
		t.Fatalf("ListCacheRecords page 2 = %v, %q, %v", rest, next, err)
	}
	// Prune by age: key(4) was used a moment ago, the others longer.
	c.Add(30 * time.Second)
	keys, err := s.PruneCacheRecords(ctx, time.Minute)
	sort.Strings(keys)
	if err != nil || !cmp.Equal(keys, []string{key(1), key(2)}) {
		t.Errorf("PruneCacheRecords(1m) = %q, %v", keys, err)
	}
	keys, err = s.PruneCacheRecords(ctx, 0)
	if err != nil || !cmp.Equal(keys, []string{key(4)}) {
		t.Errorf("PruneCacheRecords(0) = %q, %v", keys, err)
	}
	many := make([]string, image.MaxLookupKeys+1)
	for i := range many {
		many[i] = key(i)
	}
	_, err = s.LookupCacheRecords(ctx, many)
	wantKind(t, "LookupCacheRecords(10001 keys)", err, errdefs.ErrInvalidArgument)
}

func testReferencedBlobs(t *testing.T, s image.Store, _ *Clock) {
	ctx := context.Background()
	chain := Chain(t, 1)
	lone := Make(t, Step{LayerSize: 2})
	for _, img := range append(chain, lone) {
		put(t, s, img)
	}
	want := map[string]bool{}
	for _, img := range append(chain, lone) {
		for _, d := range Blobs(img) {
			want[d] = true
		}
	}
	var got []string
	token := ""
	for {
		page, next, err := s.ReferencedBlobs(ctx, 3, token)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, page...)
		if next == "" {
			break
		}
		token = next
	}
	var wantList []string
	for d := range want {
		wantList = append(wantList, d)
	}
	sort.Strings(wantList)
	if !cmp.Equal(got, wantList) {
		t.Errorf("ReferencedBlobs = %q, want %q", got, wantList)
	}
	if _, err := s.DeleteImage(ctx, lone.GetId(), image.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	refd, err := s.IsReferenced(ctx, Blobs(lone))
	if err != nil || len(refd) != 0 {
		t.Errorf("IsReferenced(deleted image's blobs) = %v, %v", refd, err)
	}
	refd, err = s.IsReferenced(ctx, Blobs(chain[1]))
	if err != nil || len(refd) != 3 {
		t.Errorf("IsReferenced(chain[1] blobs) = %v, %v; want its manifest, config and layer", refd, err)
	}
}

func testDiskUsage(t *testing.T, s image.Store, _ *Clock) {
	ctx := context.Background()
	chain := Chain(t, 1)
	put(t, s, chain[0], "base")
	put(t, s, chain[1])
	d := put(t, s, Make(t, Step{LayerSize: 50}))
	if _, err := s.PutCacheRecord(ctx, &metadatav1.CacheRecord{Key: "sha256:" + strings.Repeat("1", 64), ImageId: d.GetId(), Size: 50}, ""); err != nil {
		t.Fatal(err)
	}
	u, err := s.DiskUsage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	base := chain[0].GetLayers()[0]
	want := &metadatav1.GetDiskUsageResponse{
		Images:     &metadatav1.DiskUsage{Total: 3, Active: 1, Size: base.GetDiffSize() + 50, Reclaimable: 50},
		Layers:     &metadatav1.DiskUsage{Total: 2, Active: 1, Size: base.GetSize() + d.GetLayers()[0].GetSize(), Reclaimable: d.GetLayers()[0].GetSize()},
		BuildCache: &metadatav1.DiskUsage{Total: 1, Active: 0, Size: 50, Reclaimable: 50},
	}
	if diff := cmp.Diff(want, u, protocmp.Transform()); diff != "" {
		t.Errorf("DiskUsage (-want +got):\n%s", diff)
	}
}

func testEvents(t *testing.T, s image.Store, c *Clock) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	early := put(t, s, Make(t, Step{LayerSize: 1}), "early")
	c.Add(time.Minute)
	since := c.Now()
	img := Make(t, Step{LayerSize: 2})

	type ev struct{ action, ref string }
	got := make(chan ev, 100)
	watch := func(since time.Time, filters []*metadatav1.Filter) chan error {
		done := make(chan error, 1)
		go func() {
			done <- s.WatchEvents(ctx, since, filters, func(e *metadatav1.Event) error {
				got <- ev{image.ActionName(e.GetAction()), e.GetReference()}
				return nil
			})
		}()
		return done
	}
	// Replay from since: none of the earlier events.
	done := watch(since, []*metadatav1.Filter{{Key: "image", Value: img.GetId()}})
	put(t, s, img, "app:1")
	if _, _, err := s.TagImage(ctx, "app:1", "app:2"); err != nil {
		t.Fatal(err)
	}
	// Pulling an image already held is an event too, as with Docker.
	if _, err := s.PutImage(ctx, img, image.PutOptions{Action: metadatav1.EventAction_EVENT_ACTION_PULL}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteImage(ctx, img.GetId(), image.DeleteOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	want := []ev{{"build", ""}, {"tag", "app:1"}, {"tag", "app:2"}, {"pull", ""}, {"untag", "app:1"}, {"untag", "app:2"}, {"delete", ""}}
	for i, w := range want {
		select {
		case g := <-got:
			if g != w {
				t.Errorf("event %d = %v, want %v", i, g, w)
			}
		case err := <-done:
			t.Fatalf("WatchEvents ended: %v", err)
		case <-ctx.Done():
			t.Fatalf("event %d (%v) never came", i, w)
		}
	}
	// Filtered by action, and replayed from the start.
	ctx2, cancel2 := context.WithCancel(ctx)
	n := 0
	err := s.WatchEvents(ctx2, time.Unix(1, 0), []*metadatav1.Filter{{Key: "event", Value: "tag"}}, func(e *metadatav1.Event) error {
		n++
		if n == 3 {
			cancel2()
		}
		if e.GetAction() != metadatav1.EventAction_EVENT_ACTION_TAG {
			t.Errorf("filtered event = %v", e)
		}
		if n == 1 && e.GetImageId() != early.GetId() {
			t.Errorf("first tag event is for %s, want %s", e.GetImageId(), early.GetId())
		}
		return nil
	})
	if n != 3 || ctx2.Err() == nil {
		t.Errorf("replayed %d tag events (%v), want 3", n, err)
	}
	cancel2()
	// A prune is one event saying what it reclaimed.
	dangling := put(t, s, Make(t, Step{LayerSize: 3}))
	if _, reclaimed, err := s.PruneImages(ctx, false, nil); err != nil || reclaimed == 0 {
		t.Fatalf("PruneImages = %d bytes, %v; want %s pruned", reclaimed, err, dangling.GetId())
	}
	ctx3, cancel3 := context.WithCancel(ctx)
	var pruned *metadatav1.Event
	err = s.WatchEvents(ctx3, since, []*metadatav1.Filter{{Key: "event", Value: "prune"}}, func(e *metadatav1.Event) error {
		pruned = e
		cancel3()
		return nil
	})
	if pruned == nil || pruned.GetAttributes()["reclaimed"] != "3" {
		t.Errorf("prune event = %v (%v), want one reclaiming 3 bytes", pruned, err)
	}
	cancel3()
	if err := s.WatchEvents(ctx, time.Time{}, []*metadatav1.Filter{{Key: "event", Value: "explode"}}, func(*metadatav1.Event) error { return nil }); !errdefs.IsInvalidArgument(err) {
		t.Errorf("WatchEvents(event=explode) = %v, want INVALID_ARGUMENT", err)
	}
}

// EventsUnderConcurrentWrites checks that a watcher of watch receives every
// event of concurrent writers through the stores of writers (replicas of
// one service), once each.
func EventsUnderConcurrentWrites(t *testing.T, watch image.Store, writers []image.Store, c *Clock) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const workers, tags = 8, 12
	imgs := make([]*metadatav1.Image, workers)
	for i := range imgs {
		imgs[i] = put(t, writers[0], Make(t, Step{LayerSize: int64(i + 1)}))
	}
	c.Add(time.Minute)
	since := c.Now()

	type ev struct{ id, ref string }
	got := make(chan ev, workers*tags+1)
	done := make(chan error, 1)
	go func() {
		done <- watch.WatchEvents(ctx, since, []*metadatav1.Filter{{Key: "event", Value: "tag"}}, func(e *metadatav1.Event) error {
			got <- ev{e.GetImageId(), e.GetReference()}
			return nil
		})
	}()
	want := map[ev]bool{}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		for i := range tags {
			want[ev{imgs[w].GetId(), fmt.Sprintf("c%d:%d", w, i)}] = true
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := writers[w%len(writers)]
			for i := range tags {
				if _, _, err := s.TagImage(ctx, imgs[w].GetId(), fmt.Sprintf("c%d:%d", w, i)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("TagImage = %v", err)
	}
	// The last event: it committed after every other, so it comes after
	// them.
	last := ev{imgs[0].GetId(), "last:1"}
	if _, _, err := writers[0].TagImage(ctx, imgs[0].GetId(), last.ref); err != nil {
		t.Fatal(err)
	}
	seen := map[ev]int{}
	for {
		select {
		case e := <-got:
			seen[e]++
			if seen[e] > 1 {
				t.Errorf("event %v delivered %d times", e, seen[e])
			}
			if e != last {
				continue
			}
		case err := <-done:
			t.Fatalf("WatchEvents ended: %v", err)
		case <-ctx.Done():
			t.Fatalf("the last event never came; %d of %d before it did", len(seen), len(want))
		}
		break
	}
	for e := range want {
		if seen[e] == 0 {
			t.Errorf("event %v never came", e)
		}
	}
	if len(seen) != len(want)+1 {
		t.Errorf("%d distinct events, want %d", len(seen), len(want)+1)
	}
}

func testParallelTagMoves(t *testing.T, s image.Store, _ *Clock) {
	ctx := context.Background()
	const n = 8
	imgs := make([]*metadatav1.Image, n)
	for i := range imgs {
		imgs[i] = put(t, s, Make(t, Step{LayerSize: int64(i + 1)}))
	}
	for round := 0; round < 3; round++ {
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range imgs {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				_, _, err := s.TagImage(ctx, imgs[i].GetId(), "contested:latest")
				errs <- err
			}(i)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("parallel TagImage = %v", err)
			}
		}
		winner := get(t, s, "contested")
		holders := 0
		for _, img := range imgs {
			for _, tag := range get(t, s, img.GetId()).GetRepoTags() {
				if tag == "contested:latest" {
					holders++
					if img.GetId() != winner.GetId() {
						t.Errorf("round %d: %s holds the tag but it resolves to %s", round, img.GetId(), winner.GetId())
					}
				}
			}
		}
		if holders != 1 {
			t.Errorf("round %d: %d images hold contested:latest, want exactly 1", round, holders)
		}
	}
}

func testPagingUnderWrites(t *testing.T, s image.Store, _ *Clock) {
	ctx := context.Background()
	before := map[string]bool{}
	for i := 0; i < 60; i++ {
		before[put(t, s, Make(t, Step{LayerSize: 1}), fmt.Sprintf("p:%d", i)).GetId()] = true
	}
	stop := make(chan struct{})
	writerDone := make(chan error, 1)
	// Pre-make the images the writer adds: fixtures need the test's t.
	var extra []*metadatav1.Image
	for i := 0; i < 40; i++ {
		extra = append(extra, Make(t, Step{LayerSize: 1}))
	}
	go func() {
		var err error
		for i, img := range extra {
			select {
			case <-stop:
				writerDone <- err
				return
			default:
			}
			if _, err = s.PutImage(ctx, img, image.PutOptions{Tags: []string{fmt.Sprintf("w:%d", i)}}); err != nil {
				break
			}
			if i%3 == 0 {
				_, _, err = s.TagImage(ctx, img.GetId(), fmt.Sprintf("p:%d", i)) // moves tags of listed images
			}
		}
		writerDone <- err
	}()
	seen := map[string]int{}
	token := ""
	for {
		sums, next, err := s.ListImages(ctx, image.ListOptions{PageSize: 7, PageToken: token, All: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, sum := range sums {
			seen[sum.GetId()]++
		}
		if next == "" {
			break
		}
		token = next
	}
	close(stop)
	if err := <-writerDone; err != nil {
		t.Fatalf("writer: %v", err)
	}
	for id := range before {
		if seen[id] != 1 {
			t.Errorf("image %s present before the listing was seen %d times, want once", id, seen[id])
		}
	}
	for id, n := range seen {
		if n > 1 {
			t.Errorf("image %s listed %d times", id, n)
		}
	}
}

// testDefaultPageSize: a list that asks no page size gets pages of 1,000
// and a token for the rest, so that no answer outgrows a gRPC message
// however many images the store holds.
func testDefaultPageSize(t *testing.T, s image.Store, _ *Clock) {
	ctx := context.Background()
	for i := 0; i < 1001; i++ {
		put(t, s, Make(t, Step{LayerSize: 1}))
	}
	first, next, err := s.ListImages(ctx, image.ListOptions{All: true})
	if err != nil || len(first) != 1000 || next == "" {
		t.Fatalf("ListImages() = %d images, token %q, %v; want 1,000 and a token", len(first), next, err)
	}
	rest, next, err := s.ListImages(ctx, image.ListOptions{All: true, PageToken: next})
	if err != nil || len(rest) != 1 || next != "" {
		t.Fatalf("ListImages(next page) = %d images, token %q, %v; want the last one", len(rest), next, err)
	}
	for _, sum := range first {
		if sum.GetId() == rest[0].GetId() {
			t.Errorf("image %s listed on both pages", sum.GetId())
		}
	}
}

// collector is what garbage collection uses of a store beside image.Store;
// the stores of the suite have it, but not the one over gRPC.
type collector interface {
	IsLeased(ctx context.Context, digests []string) (map[string]bool, error)
	MarkCollectable(ctx context.Context, digests []string) ([]string, error)
	SetCollected(ctx context.Context, digest string, deleted bool) error
	Housekeep(ctx context.Context, eventsFor, marksFor time.Duration) error
}

func testLeases(t *testing.T, s image.Store, c *Clock) {
	ctx := context.Background()
	img := Make(t, Step{LayerSize: 7})
	blobs := Blobs(img)
	garbage := []string{digest.FromString("leased garbage").String(), digest.FromString("marked garbage").String()}

	lease, err := s.CreateLease(ctx, "build-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if lease.GetId() != "build-1" || !lease.GetExpires().AsTime().Equal(c.Now().Add(time.Hour)) {
		t.Errorf("CreateLease(build-1, 1h) = %v, want it to expire an hour from now", lease)
	}
	_, err = s.CreateLease(ctx, "build-1", time.Hour)
	wantKind(t, "CreateLease of a taken ID", err, errdefs.ErrAlreadyExists)
	_, err = s.CreateLease(ctx, "bad id/1", 0)
	wantKind(t, "CreateLease(bad id/1)", err, errdefs.ErrInvalidArgument)
	_, err = s.CreateLease(ctx, "", image.MaxLeaseExpiry+time.Second)
	wantKind(t, "CreateLease past the longest expiry", err, errdefs.ErrInvalidArgument)
	anon, err := s.CreateLease(ctx, "", 0)
	if err != nil || anon.GetId() == "" || !anon.GetExpires().AsTime().Equal(c.Now().Add(image.DefaultLeaseExpiry)) {
		t.Errorf("CreateLease(\"\", 0) = %v, %v; want a chosen ID and the default expiry", anon, err)
	}

	_, err = s.AddLeaseBlobs(ctx, "nope", blobs)
	wantKind(t, "AddLeaseBlobs to an unknown lease", err, errdefs.ErrNotFound)
	_, err = s.AddLeaseBlobs(ctx, "build-1", []string{"sha256:zz"})
	wantKind(t, "AddLeaseBlobs of a bad digest", err, errdefs.ErrInvalidArgument)
	// Blobs need not be stored yet, and adding one twice is fine. No image
	// references them: the caller checks that they are stored.
	if refd, err := s.AddLeaseBlobs(ctx, "build-1", append(blobs, garbage[0], garbage[0])); err != nil || len(refd) != 0 {
		t.Fatalf("AddLeaseBlobs = %v, %v; want none referenced", refd, err)
	}
	// Once an image references them, they are named as such (each once,
	// in the order given), and the caller need not check them.
	if _, err := s.PutImage(ctx, img, image.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	refd, err := s.AddLeaseBlobs(ctx, "build-1", append([]string{garbage[0], blobs[1]}, blobs...))
	if want := append([]string{blobs[1], blobs[0]}, blobs[2:]...); err != nil || !slices.Equal(refd, want) {
		t.Fatalf("AddLeaseBlobs of an image's blobs = %v, %v; want %v referenced", refd, err, want)
	}

	if gc, ok := s.(collector); ok {
		leased, err := gc.IsLeased(ctx, append([]string{garbage[1]}, garbage[0]))
		if err != nil || !leased[garbage[0]] || leased[garbage[1]] {
			t.Errorf("IsLeased = %v, %v; want only %s", leased, err, garbage[0])
		}
		// Collection marks only what no lease holds; a blob being
		// collected cannot join a lease until the collection is done.
		marked, err := gc.MarkCollectable(ctx, garbage)
		if err != nil || len(marked) != 1 || marked[0] != garbage[1] {
			t.Errorf("MarkCollectable(%v) = %v, %v; want only %s", garbage, marked, err, garbage[1])
		}
		_, err = s.AddLeaseBlobs(ctx, "build-1", garbage[1:])
		wantKind(t, "AddLeaseBlobs of a blob being collected", err, errdefs.ErrAborted)
		if err := gc.SetCollected(ctx, garbage[1], true); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AddLeaseBlobs(ctx, "build-1", garbage[1:]); err != nil {
			t.Errorf("AddLeaseBlobs of a blob collected already = %v; want it held (the caller stores it again)", err)
		}
		if marked, err := gc.MarkCollectable(ctx, garbage); err != nil || len(marked) != 0 {
			t.Errorf("MarkCollectable of leased blobs = %v, %v; want none", marked, err)
		}
	}

	// Deleting is idempotent; the blobs are then free.
	for range 2 {
		if err := s.DeleteLease(ctx, "build-1"); err != nil {
			t.Fatalf("DeleteLease = %v", err)
		}
	}
	_, err = s.AddLeaseBlobs(ctx, "build-1", blobs)
	wantKind(t, "AddLeaseBlobs to a deleted lease", err, errdefs.ErrNotFound)
	if gc, ok := s.(collector); ok {
		if leased, err := gc.IsLeased(ctx, garbage); err != nil || len(leased) != 0 {
			t.Errorf("IsLeased after DeleteLease = %v, %v; want none", leased, err)
		}
	}

	// An expired lease holds nothing, takes nothing, and housekeeping
	// removes it.
	if _, err := s.CreateLease(ctx, "short", time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddLeaseBlobs(ctx, "short", garbage[:1]); err != nil {
		t.Fatal(err)
	}
	c.Add(2 * time.Minute)
	_, err = s.AddLeaseBlobs(ctx, "short", garbage[:1])
	wantKind(t, "AddLeaseBlobs to an expired lease", err, errdefs.ErrNotFound)
	if gc, ok := s.(collector); ok {
		if leased, err := gc.IsLeased(ctx, garbage); err != nil || len(leased) != 0 {
			t.Errorf("IsLeased of an expired lease's blob = %v, %v; want none", leased, err)
		}
		if err := gc.Housekeep(ctx, time.Hour, time.Hour); err != nil {
			t.Fatal(err)
		}
		if _, err := s.CreateLease(ctx, "short", time.Minute); err != nil {
			t.Errorf("CreateLease of an expired lease's ID after housekeeping = %v, want it free again", err)
		}
	}
}
