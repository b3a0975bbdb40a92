package importrules

import (
	"bufio"
	"bytes"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// module is the prefix every package of the repository shares.
const module = "github.com/strata-build/strata/"

// rule forbids the packages matching from to import the packages matching
// to; both match the path after the module prefix. A rule whose from
// matches no package (a package not written yet) holds trivially.
type rule struct {
	why      string
	from, to string
}

// The rules docs/architecture.md states. The builder's pipeline packages
// (plan, copier, exec) are named here and in the document together.
var rules = []rule{
	{why: "a domain package does not import its service's gRPC adapter",
		from: `^services/[^/]+/internal/`, to: `^services/[^/]+/internal/server$`},
	{why: "a service does not import another service's packages",
		from: `^services/(?P<svc>[^/]+)/`, to: `^services/[^/]+/`},
	{why: "nothing imports a main package",
		from: `.`, to: `^(services/[^/]+/cmd/|cli/cmd/)`},
	{why: "lib holds what services share and depends on none of them, nor on the CLI or the client",
		from: `^lib/`, to: `^(services|cli|client)/`},
	{why: "the client module is built on gen and lib only",
		from: `^client/`, to: `^(services|cli)/`},
	{why: "the examples are what a platform team writes: the client module only",
		from: `^examples/`, to: `^(services|cli|lib)/`},
	{why: "the CLI reaches the services over gRPC, never through their packages",
		from: `^cli/`, to: `^services/`},
	{why: "gen is generated from proto/ and imports nothing of the repository's but itself",
		from: `^gen/`, to: `^(lib|services|cli|client)/`},
	{why: "the build plan is a value: planning does not execute",
		from: `^services/builder/internal/plan(/|$)`, to: `^services/builder/internal/(exec|sandbox|stepnet|snapshot|server)(/|$)`},
	{why: "the context is received in buildctx, which knows nothing of how builds run",
		from: `^services/builder/internal/buildctx(/|$)`, to: `^services/builder/internal/(build|plan|exec|copier|server)(/|$)`},
	{why: "archive is built on transfer's core; transfer knows nothing of archives",
		from: `^services/builder/internal/transfer(/|$)`, to: `^services/builder/internal/archive(/|$)`},
}

func TestImportRules(t *testing.T) {
	pkgs := workspacePackages(t)
	if len(pkgs) < 20 {
		t.Fatalf("go list found %d packages of the workspace; the pattern no longer covers it", len(pkgs))
	}
	for _, r := range rules {
		from, to := regexp.MustCompile(r.from), regexp.MustCompile(r.to)
		for pkg, imports := range pkgs {
			m := from.FindStringSubmatch(pkg)
			if m == nil || isTestSupport(pkg) {
				continue
			}
			for _, imp := range imports {
				if !to.MatchString(imp) || imp == pkg {
					continue
				}
				if sameService(from, m, imp) {
					continue
				}
				t.Errorf("%s imports %s: %s", pkg, imp, r.why)
			}
		}
	}
}

// sameService reports whether a rule that names the importing service
// (the group svc) is looking at an import from that same service.
func sameService(from *regexp.Regexp, m []string, imp string) bool {
	i := from.SubexpIndex("svc")
	return i > 0 && strings.HasPrefix(imp, "services/"+m[i]+"/")
}

// isTestSupport reports whether a package exists for tests only (a
// conformance suite, a harness, an end-to-end test), which may reach across
// the boundaries it tests.
func isTestSupport(pkg string) bool {
	last := pkg[strings.LastIndex(pkg, "/")+1:]
	return strings.HasSuffix(last, "test") || last == "e2e" || last == "interop" || last == "testimage" ||
		strings.HasPrefix(pkg, "lib/harness") || strings.HasPrefix(pkg, "bench/")
}

// workspacePackages returns every package of the workspace, by path after
// the module prefix, with its non-test imports of the repository.
func workspacePackages(t *testing.T) map[string][]string {
	t.Helper()
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, module+"...").Output()
	if err != nil {
		msg := err.Error()
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("go list: %s", msg)
	}
	pkgs := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		var imports []string
		for _, imp := range fields[1:] {
			if rest, ok := strings.CutPrefix(imp, module); ok {
				imports = append(imports, rest)
			}
		}
		pkgs[strings.TrimPrefix(fields[0], module)] = imports
	}
	return pkgs
}
