package examples

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	"golang.org/x/mod/zip"

	"github.com/strata-build/strata/lib/harness"
)

// published are the modules a consumer of the client fetches from this
// repository, each tagged <dir>/vX.Y.Z at one commit (docs/go-client.md).
var published = []string{"gen", "lib", "client"}

const modulePrefix = "github.com/strata-build/strata/"

// TestClientModuleOutsideWorkspace publishes gen, lib and client, as they
// are in this working tree, to a file-based GOPROXY at the version the
// client's go.mod requires of its siblings, and builds a module outside
// go.work that imports the client by its module path: what `go get
// github.com/strata-build/strata/client@vX.Y.Z` does for a platform team.
// It fails on a replace directive a consumer would need.
func TestClientModuleOutsideWorkspace(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a module with a fresh module cache")
	}
	root := harness.RepoRoot(t)
	version := siblingVersion(t, root)
	tmp := t.TempDir()
	proxy := filepath.Join(tmp, "proxy")
	for _, dir := range published {
		publish(t, root, dir, version, proxy)
	}

	consumer := filepath.Join(tmp, "consumer")
	writeFile(t, filepath.Join(consumer, "go.mod"), "module example.com/consumer\n\ngo 1.26.0\n\nrequire "+modulePrefix+"client "+version+"\n")
	writeFile(t, filepath.Join(consumer, "main.go"), consumerMain)

	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal(err)
	}
	modcache := filepath.Join(tmp, "modcache")
	env := append(os.Environ(),
		"GOWORK=off",
		"GOFLAGS=-mod=mod -modcacherw",
		"GOPROXY="+proxies(t, proxy),
		"GOSUMDB=off", "GONOSUMDB=*", "GOPRIVATE=", "GOTOOLCHAIN=local",
		"GOMODCACHE="+modcache,
	)
	t.Cleanup(func() {
		clean := exec.Command(goBin, "clean", "-modcache")
		clean.Env = env
		clean.Run()
	})
	run := func(args ...string) string {
		cmd := exec.Command(goBin, args...)
		cmd.Dir, cmd.Env = consumer, env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go %s in a module outside go.work: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("build", "-o", filepath.Join(tmp, "consumer-bin"), ".")
	// The consumer ran: it resolved the client through the proxy, and its
	// configuration comes from the environment as the CLI's does.
	cmd := exec.Command(filepath.Join(tmp, "consumer-bin"))
	cmd.Env = append(os.Environ(), "STRATA_CONFIG="+filepath.Join(tmp, "none.json"), "STRATA_BUILDER_ADDR=builder.example:1")
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "builder.example:1" {
		t.Errorf("the consumer = %q, %v; want the builder address from the environment", out, err)
	}
	// What the consumer's go.mod resolved is the published version.
	got := run("list", "-m", "-f", "{{.Version}}", modulePrefix+"client", modulePrefix+"lib", modulePrefix+"gen")
	if want := strings.Repeat(version+"\n", 3); got != want {
		t.Errorf("go list -m = %q, want %q", got, want)
	}
}

const consumerMain = `package main

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/strata-build/strata/client"
)

func main() {
	c, err := client.New(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	var _ = client.BuildOptions{Tags: []string{"app:1"}}
	var be *client.BuildError
	_ = errors.As(client.ErrNotFound, &be)
	fmt.Println(c.Config().Builder)
}
`

// proxies is the GOPROXY the consumer resolves modules through: the
// published modules, then what this machine's module cache holds, then
// the proxy the developer configured, for the third-party versions that
// the published modules require but the workspace never downloaded (it
// selects newer ones: a fresh CI machine holds only their go.mod files).
func proxies(t *testing.T, published string) string {
	t.Helper()
	list := "file://" + filepath.ToSlash(published) + ",file://" + filepath.ToSlash(filepath.Join(goEnv(t, "GOMODCACHE"), "cache", "download"))
	if p := goEnv(t, "GOPROXY"); p != "" && p != "off" {
		list += "," + p
	}
	return list
}

// siblingVersion is the version the client's go.mod requires of gen and
// lib: the version the three modules are published at together.
func siblingVersion(t *testing.T, root string) string {
	t.Helper()
	f := parseModFile(t, filepath.Join(root, "client", "go.mod"))
	version := ""
	for _, r := range f.Require {
		if r.Mod.Path == modulePrefix+"gen" || r.Mod.Path == modulePrefix+"lib" {
			if version != "" && r.Mod.Version != version {
				t.Fatalf("client/go.mod requires gen and lib at different versions (%s, %s); they are published together", version, r.Mod.Version)
			}
			version = r.Mod.Version
		}
	}
	if version == "" {
		t.Fatal("client/go.mod does not require gen and lib")
	}
	return version
}

// publish writes the module in root/dir to proxy at version, as a module
// proxy serves it: list, .info, .mod and .zip. The module is copied from
// the files git knows (tracked, or new and not ignored), as a fresh clone
// would have them, with no replace directive.
func publish(t *testing.T, root, dir, version, proxy string) {
	t.Helper()
	path := modulePrefix + dir
	src := filepath.Join(root, dir)
	f := parseModFile(t, filepath.Join(src, "go.mod"))
	if f.Module.Mod.Path != path {
		t.Fatalf("%s/go.mod is module %s, want %s", dir, f.Module.Mod.Path, path)
	}
	for _, r := range f.Replace {
		t.Errorf("%s/go.mod replaces %s: a consumer of the published module would not see it", dir, r.Old.Path)
	}
	for _, r := range f.Require {
		if strings.HasPrefix(r.Mod.Path, modulePrefix) && r.Mod.Version != version {
			t.Errorf("%s/go.mod requires %s %s, want %s: the modules are published together", dir, r.Mod.Path, r.Mod.Version, version)
		}
	}

	files, err := exec.Command("git", "-C", src, "ls-files", "-z", "--cached", "--others", "--exclude-standard", ".").Output()
	if err != nil {
		t.Fatalf("git ls-files %s: %v", dir, err)
	}
	fresh := filepath.Join(t.TempDir(), dir)
	for _, name := range strings.Split(strings.TrimRight(string(files), "\x00"), "\x00") {
		b, err := os.ReadFile(filepath.Join(src, name))
		if os.IsNotExist(err) {
			continue // deleted in the working tree
		}
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(fresh, name), string(b))
	}

	escaped, err := module.EscapePath(path)
	if err != nil {
		t.Fatal(err)
	}
	at := filepath.Join(proxy, filepath.FromSlash(escaped), "@v")
	if err := os.MkdirAll(at, 0o755); err != nil {
		t.Fatal(err)
	}
	zf, err := os.Create(filepath.Join(at, version+".zip"))
	if err != nil {
		t.Fatal(err)
	}
	if err := zip.CreateFromDir(zf, module.Version{Path: path, Version: version}, fresh); err != nil {
		t.Fatalf("zipping %s: %v", dir, err)
	}
	if err := zf.Close(); err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile(filepath.Join(fresh, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(at, version+".mod"), string(gomod))
	info, _ := json.Marshal(struct {
		Version string
		Time    time.Time
	}{version, time.Now().UTC()})
	writeFile(t, filepath.Join(at, version+".info"), string(info))
	writeFile(t, filepath.Join(at, "list"), version+"\n")
}

func parseModFile(t *testing.T, path string) *modfile.File {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := modfile.Parse(path, b, nil)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func goEnv(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("go", "env", name).Output()
	if err != nil {
		t.Fatalf("go env %s: %v", name, err)
	}
	return strings.TrimSpace(string(out))
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
