package plan

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/buildctx"
	"github.com/strata-build/strata/services/builder/internal/dockerfile"
	"github.com/strata-build/strata/services/builder/internal/image"
)

var update = flag.Bool("update", false, "rewrite the golden plans under testdata")

// baseImages resolves the one base image the goldens use.
type baseImages map[string]*image.Image

func (b baseImages) Resolve(_ context.Context, ref string) (*image.Image, error) {
	if img, ok := b[ref]; ok {
		return img, nil
	}
	return nil, errdefs.NotFound("image %s not found", ref)
}

func busybox() *image.Image {
	cfg := &image.Config{
		Architecture: "amd64", OS: "linux",
		Config: &image.ContainerConfig{
			Env:     []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			Cmd:     []string{"sh"},
			OnBuild: []string{"LABEL from.onbuild=yes"},
		},
		History: []image.History{{CreatedBy: "/bin/sh -c #(nop) ADD file:base in / "}},
	}
	return &image.Image{Record: &metadatav1.Image{Id: string(digest.FromString("busybox"))}, Config: cfg}
}

// testContext is the build context every golden is planned with.
func testContext() (*buildctx.Context, error) {
	file := func(p, body string, mode fs.FileMode) *builderv1.FileEntry {
		return &builderv1.FileEntry{Path: p, Mode: buildctx.UnixMode(mode), Size: int64(len(body)), Digest: string(digest.FromString(body))}
	}
	return buildctx.New([]*builderv1.FileEntry{
		file("Dockerfile", "FROM busybox\n", 0o644),
		{Path: "app", Mode: buildctx.UnixMode(fs.ModeDir | 0o755)},
		file("app/main.go", "package main\n", 0o644),
		file("app/run.sh", "#!/bin/sh\n", 0o755),
		file("a b.txt", "spaces\n", 0o644),
		file("one.txt", "one\n", 0o600),
	})
}

// render writes a plan as text: what a golden file holds.
func render(pl *Plan) string {
	var b strings.Builder
	fmt.Fprintf(&b, "total %d\n", pl.Total)
	for _, w := range pl.Warnings {
		fmt.Fprintf(&b, "warning %s\n", w)
	}
	for _, sp := range pl.Stages {
		base := "scratch"
		switch {
		case sp.BaseImage != nil:
			base = "image " + sp.BaseName
		case sp.BaseStage != nil:
			base = fmt.Sprintf("stage %d", sp.BaseStage.Index)
		}
		fmt.Fprintf(&b, "\nstage %d %q: step %d, %s, from key %s\n", sp.Index, sp.Name, sp.Number, base, sp.FromKey)
		for _, st := range sp.Steps {
			trigger := ""
			if st.Trigger {
				trigger = " (trigger)"
			}
			fmt.Fprintf(&b, "  step %d line %d kind %d%s: %s\n", st.Number, st.Line, st.Kind, trigger, st.Text)
			fmt.Fprintf(&b, "    key %s\n    created by %q\n", st.Key, st.CreatedBy())
			if len(st.Args) > 0 {
				fmt.Fprintf(&b, "    args %q\n", st.Args)
			}
			if st.Run != nil {
				fmt.Fprintf(&b, "    run %q env %q\n", st.Run.Args, st.Run.Env)
				if st.Run.Network != "" {
					fmt.Fprintf(&b, "    network %s\n", st.Run.Network)
				}
			}
			if cp := st.Copy; cp != nil {
				fmt.Fprintf(&b, "    copy add=%v dest %q (dir %v, as written %q) hash %q chown %q", cp.Add, cp.Dest, cp.DestDir, cp.DestText, cp.Hash, cp.Chown)
				if cp.Chmod != nil {
					fmt.Fprintf(&b, " chmod %o", *cp.Chmod)
				}
				b.WriteString("\n")
				for _, s := range cp.Sources {
					fmt.Fprintf(&b, "      source %q name %q unpack %v\n", s.Src, s.Name, s.Unpack)
				}
				if cp.FromStage != nil || cp.FromImage != nil {
					fmt.Fprintf(&b, "      from paths %q\n", cp.Paths)
				}
			}
			if st.Workdir != "" {
				fmt.Fprintf(&b, "    workdir %q\n", st.Workdir)
			}
			cfg, _ := json.Marshal(st.Config)
			fmt.Fprintf(&b, "    config %s\n", cfg)
		}
	}
	return b.String()
}

// Dockerfile in, plan out: each testdata/NAME.Dockerfile is planned with
// the build args and labels below, and the plan must be testdata/NAME.golden
// (go test -update rewrites them).
func TestGoldenPlans(t *testing.T) {
	dfs, err := filepath.Glob("testdata/*.Dockerfile")
	if err != nil || len(dfs) == 0 {
		t.Fatalf("no testdata/*.Dockerfile: %v", err)
	}
	for _, name := range dfs {
		t.Run(filepath.Base(name), func(t *testing.T) {
			src, err := os.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			pl, err := makeGolden(src)
			if err != nil {
				t.Fatalf("Make: %v", err)
			}
			got := render(pl)
			golden := strings.TrimSuffix(name, ".Dockerfile") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("plan of %s (-%s +got):\n%s", name, golden, diff)
			}
			// The same input makes the same plan: keys depend on nothing else.
			again, err := makeGolden(src)
			if err != nil || render(again) != got {
				t.Errorf("planning %s again gave another plan (%v)", name, err)
			}
		})
	}
}

// makeGolden plans a golden Dockerfile with the inputs every golden uses.
func makeGolden(src []byte) (*Plan, error) {
	df, err := dockerfile.Parse(src)
	if err != nil {
		return nil, err
	}
	c, err := testContext()
	if err != nil {
		return nil, err
	}
	return Make(context.Background(), Input{
		Dockerfile: df, Context: c, BuildArgs: map[string]string{"VERSION": "1.2", "UNUSED": "x"},
		Labels: map[string]string{"org.example.team": "builders"}, MaxConfigBytes: 1 << 20,
		Images: baseImages{"busybox": busybox(), "busybox:latest": busybox()},
	})
}

// A RUN step's key names the network it runs on when that is not the
// bridge, so a step run offline (or on the host's network) is never the
// cache hit of one run on the bridge; steps that run nothing keep their
// keys, and so does every step of a build on the bridge.
func TestRunKeysNameTheNetwork(t *testing.T) {
	df, err := dockerfile.Parse([]byte("FROM busybox\nRUN wget -q -O /x http://example.com || echo offline > /x\nCOPY app /app\n"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := testContext()
	if err != nil {
		t.Fatal(err)
	}
	keys := func(network string) []digest.Digest {
		pl, err := Make(context.Background(), Input{Dockerfile: df, Context: c, Network: network, MaxConfigBytes: 1 << 20,
			Images: baseImages{"busybox": busybox()}})
		if err != nil {
			t.Fatal(err)
		}
		var out []digest.Digest
		for _, st := range pl.Stages[0].Steps {
			out = append(out, st.Key)
		}
		return out
	}
	bridge, none, host := keys(""), keys("none"), keys("host")
	if len(bridge) != 3 {
		t.Fatalf("%d steps, want the base's ONBUILD LABEL, the RUN and the COPY", len(bridge))
	}
	if bridge[0] != none[0] || bridge[0] != host[0] {
		t.Errorf("the step before the RUN has a key that depends on the network: %v %v %v", bridge[0], none[0], host[0])
	}
	for i := 1; i < 3; i++ {
		if bridge[i] == none[i] || bridge[i] == host[i] || none[i] == host[i] {
			t.Errorf("step %d: keys %v (bridge), %v (none), %v (host): want three different keys from the RUN on", i, bridge[i], none[i], host[i])
		}
	}
}

// RUN --network sets the step's network, and its key names it as the
// build's network would: a RUN --network=none on the bridge is keyed as a
// RUN of a build with --network none, and --network=default as no flag.
func TestRunNetworkFlag(t *testing.T) {
	c, err := testContext()
	if err != nil {
		t.Fatal(err)
	}
	key := func(run, network string) digest.Digest {
		t.Helper()
		df, err := dockerfile.Parse([]byte("FROM busybox\n" + run + "\n"))
		if err != nil {
			t.Fatal(err)
		}
		pl, err := Make(context.Background(), Input{Dockerfile: df, Context: c, Network: network, MaxConfigBytes: 1 << 20,
			Images: baseImages{"busybox": busybox()}})
		if err != nil {
			t.Fatal(err)
		}
		return pl.Stages[0].LastKey()
	}
	for _, tc := range []struct {
		run, network, sameAsRun, sameAsNetwork string
	}{
		{"RUN --network=none echo", "", "RUN echo", "none"},
		{"RUN --network=none echo", "host", "RUN echo", "none"},
		{"RUN --network=host echo", "", "RUN echo", "host"},
		{"RUN --network=default echo", "", "RUN echo", ""},
		{"RUN --network=default echo", "none", "RUN echo", "none"},
		{"RUN --security=sandbox echo", "", "RUN echo", ""},
	} {
		if got, want := key(tc.run, tc.network), key(tc.sameAsRun, tc.sameAsNetwork); got != want {
			t.Errorf("key of %q on network %q = %v, want %v (%q on network %q)", tc.run, tc.network, got, want, tc.sameAsRun, tc.sameAsNetwork)
		}
	}
	if key("RUN --network=none echo", "") == key("RUN echo", "") {
		t.Errorf("RUN --network=none has the key of a RUN on the bridge")
	}

	// An ONBUILD trigger's flag counts too.
	base := busybox()
	base.Config.Config.OnBuild = []string{"RUN --network=none echo"}
	df, err := dockerfile.Parse([]byte("FROM busybox\n"))
	if err != nil {
		t.Fatal(err)
	}
	pl, err := Make(context.Background(), Input{Dockerfile: df, Context: c, MaxConfigBytes: 1 << 20, Images: baseImages{"busybox": base}})
	if err != nil {
		t.Fatal(err)
	}
	if st := pl.Stages[0].Steps[0]; st.Run == nil || st.Run.Network != "none" {
		t.Errorf("the trigger RUN --network=none planned as %+v", st.Run)
	}
}

// FROM --platform is expanded with the automatic platform args before it
// is checked against the one platform the builder builds.
func TestFromPlatform(t *testing.T) {
	c, err := testContext()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		from      string
		buildArgs map[string]string
		err       string
	}{
		{from: "FROM --platform=$BUILDPLATFORM busybox"},
		{from: "FROM --platform=$TARGETPLATFORM busybox"},
		{from: "FROM --platform=${TARGETOS}/${TARGETARCH}${TARGETVARIANT:+/$TARGETVARIANT} busybox"},
		{from: "FROM --platform=linux/amd64 busybox"},
		{from: "FROM --platform=linux/arm64 busybox", err: "Dockerfile:1: FROM --platform=linux/arm64: this builder builds linux/amd64 only"},
		{from: "FROM --platform=$TARGETPLATFORM busybox", buildArgs: map[string]string{"TARGETPLATFORM": "linux/arm64"},
			err: "Dockerfile:1: FROM --platform=$TARGETPLATFORM (linux/arm64): this builder builds linux/amd64 only"},
		{from: "FROM --platform=$NOPE busybox"},
	} {
		df, err := dockerfile.Parse([]byte(tc.from + "\nRUN echo\n"))
		if err != nil {
			t.Fatal(err)
		}
		_, err = Make(context.Background(), Input{Dockerfile: df, Context: c, BuildArgs: tc.buildArgs, MaxConfigBytes: 1 << 20,
			Images: baseImages{"busybox": busybox()}})
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: Make = %v, want no error", tc.from, err)
		case tc.err != "" && (!errdefs.IsInvalidArgument(err) || err.Error() != tc.err):
			t.Errorf("%s %v: Make = %v, want INVALID_ARGUMENT %q", tc.from, tc.buildArgs, err, tc.err)
		}
	}
}

// --build-arg BUILDKIT_SYNTAX names the frontend as the syntax directive
// does: docker/dockerfile:1 is this builder's own, and consumed; any other
// image is refused.
func TestSyntaxBuildArg(t *testing.T) {
	c, err := testContext()
	if err != nil {
		t.Fatal(err)
	}
	df, err := dockerfile.Parse([]byte("FROM busybox\nRUN echo\n"))
	if err != nil {
		t.Fatal(err)
	}
	plan := func(v string) (*Plan, error) {
		return Make(context.Background(), Input{Dockerfile: df, Context: c, BuildArgs: map[string]string{"BUILDKIT_SYNTAX": v},
			MaxConfigBytes: 1 << 20, Images: baseImages{"busybox": busybox()}})
	}
	for _, v := range []string{"docker/dockerfile:1", "docker.io/docker/dockerfile:1.7-labs", "docker/dockerfile:1.7 --opt"} {
		pl, err := plan(v)
		if err != nil {
			t.Errorf("BUILDKIT_SYNTAX=%s: Make = %v", v, err)
			continue
		}
		if len(pl.Warnings) != 0 {
			t.Errorf("BUILDKIT_SYNTAX=%s: warnings %q, want none", v, pl.Warnings)
		}
	}
	_, err = plan("foo/bar:1")
	want := `--build-arg BUILDKIT_SYNTAX names frontend image "foo/bar:1"; this builder has only its own Dockerfile frontend (docker/dockerfile:1)`
	if !errdefs.IsInvalidArgument(err) || err.Error() != want {
		t.Errorf("BUILDKIT_SYNTAX=foo/bar:1: Make = %v, want INVALID_ARGUMENT %q", err, want)
	}
}

// A RUN step's key covers its secret mounts' specs (a step given another
// secret, target or mode is another step) and nothing else of them: the
// secret's value is not part of the plan at all.
func TestRunKeysNameTheSecretMounts(t *testing.T) {
	c, err := testContext()
	if err != nil {
		t.Fatal(err)
	}
	key := func(run string) digest.Digest {
		df, err := dockerfile.Parse([]byte("FROM busybox\n" + run + "\n"))
		if err != nil {
			t.Fatal(err)
		}
		pl, err := Make(context.Background(), Input{Dockerfile: df, Context: c, MaxConfigBytes: 1 << 20,
			Images: baseImages{"busybox": busybox()}})
		if err != nil {
			t.Fatal(err)
		}
		steps := pl.Stages[0].Steps
		return steps[len(steps)-1].Key
	}
	runs := []string{
		"RUN cat /run/secrets/a",
		"RUN --mount=type=secret,id=a cat /run/secrets/a",
		"RUN --mount=type=secret,id=b cat /run/secrets/a",
		"RUN --mount=type=secret,id=a,target=/a cat /run/secrets/a",
		"RUN --mount=type=secret,id=a,env=A cat /run/secrets/a",
		"RUN --mount=type=secret,id=a,required cat /run/secrets/a",
		"RUN --mount=type=secret,id=a,mode=0444 cat /run/secrets/a",
		"RUN --mount=type=secret,id=a,uid=1 cat /run/secrets/a",
		"RUN --mount=type=secret,id=a,gid=1 cat /run/secrets/a",
	}
	seen := map[digest.Digest]string{}
	for _, run := range runs {
		k := key(run)
		if prev, ok := seen[k]; ok {
			t.Errorf("%q and %q have the same key %s", prev, run, k)
		}
		seen[k] = run
	}
	if again := key(runs[1]); again != key(runs[1]) {
		t.Error("a secret mount's key is not deterministic")
	}
	if _, err := dockerfile.Parse([]byte("FROM busybox\nRUN --mount=type=secret,id=a true\n")); err != nil {
		t.Errorf("Parse(RUN --mount=type=secret) = %v, want no error", err)
	}
}

// An ONBUILD trigger is held to what the Dockerfile's own instructions
// are: a flag this builder does not implement fails the build on the FROM
// that brings the trigger, naming it, rather than running without it.
func TestTriggersAreCheckedLikeInstructions(t *testing.T) {
	c, err := testContext()
	if err != nil {
		t.Fatal(err)
	}
	df, err := dockerfile.Parse([]byte("FROM busybox\nRUN true\n"))
	if err != nil {
		t.Fatal(err)
	}
	for trigger, want := range map[string]string{
		"RUN --security=insecure true":       `Dockerfile:1: ONBUILD trigger "RUN --security=insecure true" of busybox: RUN --security=insecure is not supported by this builder: steps run only in its sandbox`,
		"RUN --mount=type=ssh,source=x true": "RUN --mount=type=ssh does not support source",
		// The build's secrets and agents are not a base image's to use.
		"RUN --mount=type=ssh ssh-add -l":             `Dockerfile:1: ONBUILD trigger "RUN --mount=type=ssh ssh-add -l" of busybox: RUN --mount=type=secret and type=ssh are refused in a base image's triggers`,
		"RUN --mount=type=secret,id=npmrc cat /run/x": `ONBUILD trigger "RUN --mount=type=secret,id=npmrc cat /run/x" of busybox: RUN --mount=type=secret and type=ssh are refused`,
		"ARG T=ssh\nRUN --mount=type=$T true":         `ONBUILD trigger "RUN --mount=type=$T true" of busybox: RUN --mount=type=secret and type=ssh are refused`,
	} {
		base := busybox()
		base.Config.Config.OnBuild = strings.Split(trigger, "\n")
		_, err := Make(context.Background(), Input{Dockerfile: df, Context: c, MaxConfigBytes: 1 << 20, Images: baseImages{"busybox": base}})
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), want) {
			t.Errorf("trigger %q: Make = %v, want INVALID_ARGUMENT with %q", trigger, err, want)
		}
	}
	// What the builder implements still runs from a trigger.
	base := busybox()
	base.Config.Config.OnBuild = []string{"RUN --security=sandbox --mount=type=tmpfs,target=/t true"}
	if _, err := Make(context.Background(), Input{Dockerfile: df, Context: c, MaxConfigBytes: 1 << 20, Images: baseImages{"busybox": base}}); err != nil {
		t.Errorf("a trigger with a tmpfs mount: Make = %v", err)
	}
}

// A trigger with a `# check=` comment above it (a base image's config may
// hold any text) plans like the trigger alone.
func TestTriggerUnderACheckComment(t *testing.T) {
	c, err := testContext()
	if err != nil {
		t.Fatal(err)
	}
	df, err := dockerfile.Parse([]byte("FROM busybox\n"))
	if err != nil {
		t.Fatal(err)
	}
	base := busybox()
	base.Config.Config.OnBuild = []string{"# a comment\n# check=skip=all\nRUN true"}
	pl, err := Make(context.Background(), Input{Dockerfile: df, Context: c, MaxConfigBytes: 1 << 20, Images: baseImages{"busybox": base}})
	if err != nil {
		t.Fatal(err)
	}
	if st := pl.Stages[0].Steps[0]; st.Run == nil || !st.Trigger {
		t.Errorf("the trigger planned as %+v", st)
	}
}

// A context kept between builds keys its COPY steps from what it
// remembers of an earlier plan: the plan is the one a fresh context makes,
// and COPYs of other sources (another --exclude, another path) still get
// other keys.
func TestPlanOverAKeptContextIsAFreshOnes(t *testing.T) {
	src := []byte("FROM busybox\nCOPY app/ /a/\nCOPY --exclude=*.sh app/ /a/\nCOPY app /a/\nCOPY one.txt a*.txt /a/\nCOPY one.txt /a/\n")
	df, err := dockerfile.Parse(src)
	if err != nil {
		t.Fatal(err)
	}
	kept, err := testContext()
	if err != nil {
		t.Fatal(err)
	}
	plan := func(c *buildctx.Context) string {
		t.Helper()
		pl, err := Make(context.Background(), Input{Dockerfile: df, Context: c, MaxConfigBytes: 1 << 20, Images: baseImages{"busybox": busybox()}})
		if err != nil {
			t.Fatal(err)
		}
		return render(pl)
	}
	fresh := func() string {
		c, err := testContext()
		if err != nil {
			t.Fatal(err)
		}
		return plan(c)
	}
	want := fresh()
	for i := range 2 {
		if got := plan(kept); got != want {
			t.Fatalf("plan %d over a kept context differs from a fresh one's:\n%s", i+1, cmp.Diff(want, got))
		}
	}
	// Each COPY has its own sources part of the key: the steps' keys
	// chain, so compare the sources themselves.
	pl, err := Make(context.Background(), Input{Dockerfile: df, Context: kept, MaxConfigBytes: 1 << 20, Images: baseImages{"busybox": busybox()}})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[digest.Digest]int{}
	for _, st := range pl.Stages[0].Steps {
		if st.Copy == nil {
			continue // busybox's ONBUILD LABEL
		}
		d := st.Copy.filesDigest()
		if n, ok := seen[d]; ok {
			t.Errorf("steps %d and %d have the same files digest %s", n, st.Number, d)
		}
		seen[d] = st.Number
	}
}
