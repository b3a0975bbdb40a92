package dockerfile

import (
	"maps"
	"slices"
	"sort"
)

// The one platform this builder builds on and for.
const (
	PlatformOS   = "linux"
	PlatformArch = "amd64"
	// Platform is PlatformOS/PlatformArch, as FROM --platform and the
	// platform args write it.
	Platform = PlatformOS + "/" + PlatformArch
)

// AutomaticArgs returns the args BuildKit's Dockerfile frontend defines for
// every build (dockerfile2llb's defaultArgs), for this builder's single
// platform: TARGETPLATFORM, TARGETOS, TARGETARCH, TARGETVARIANT and their
// BUILD* twins, the OSVERSION ones (empty on Linux) and TARGETSTAGE, the
// name of the target stage ("default" when it has none). Docker's classic
// builder (20.10) defines none of them.
func AutomaticArgs(targetStage string) map[string]string {
	if targetStage == "" {
		targetStage = "default"
	}
	return map[string]string{
		"BUILDPLATFORM": Platform, "BUILDOS": PlatformOS, "BUILDOSVERSION": "", "BUILDARCH": PlatformArch, "BUILDVARIANT": "",
		"TARGETPLATFORM": Platform, "TARGETOS": PlatformOS, "TARGETOSVERSION": "", "TARGETARCH": PlatformArch, "TARGETVARIANT": "",
		"TARGETSTAGE": targetStage,
	}
}

// builtinArgs are the build arguments Docker allows without an ARG (proxy
// settings). They reach RUN steps but stay out of history unless declared.
var builtinArgs = []string{
	"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy",
	"FTP_PROXY", "ftp_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy",
}

// BuildArgs scopes build arguments as Docker's classic builder does: a
// --build-arg value overrides an ARG default; an ARG before the first FROM
// (a meta arg) is visible to FROM lines, and inside a stage only once the
// stage declares it again with ARG; each stage starts with no declared args.
type BuildArgs struct {
	options    map[string]*string
	meta       map[string]*string
	allowed    map[string]*string
	referenced map[string]bool
	// automatic are the meta args the builder defines (AddAutomatic).
	automatic map[string]bool
}

// NewBuildArgs returns the scope of a build with the given --build-arg
// values.
func NewBuildArgs(options map[string]string) *BuildArgs {
	b := &BuildArgs{
		options:    map[string]*string{},
		meta:       map[string]*string{},
		allowed:    map[string]*string{},
		referenced: map[string]bool{},
		automatic:  map[string]bool{},
	}
	for k, v := range options {
		b.options[k] = &v
	}
	return b
}

// ForStage returns a copy of b for a new stage: meta args and options kept,
// no args declared.
func (b *BuildArgs) ForStage() *BuildArgs {
	return &BuildArgs{
		options:    b.options,
		meta:       b.meta,
		allowed:    map[string]*string{},
		referenced: b.referenced,
		automatic:  b.automatic,
	}
}

// AddMeta declares an ARG before the first FROM. Declared without a value,
// an automatic arg keeps its value, as in BuildKit.
func (b *BuildArgs) AddMeta(key string, value *string) {
	if value == nil && b.automatic[key] {
		return
	}
	b.meta[key] = value
	b.referenced[key] = true
}

// AddAutomatic defines args as BuildKit defines its automatic platform args
// (AutomaticArgs): in the global scope, so FROM lines can use them, and
// inside a stage once an ARG without a value declares them. A --build-arg
// of the same name overrides the value, as BuildKit's do. They are never
// reported unused.
func (b *BuildArgs) AddAutomatic(args map[string]string) {
	for k, v := range args {
		b.meta[k] = &v
		b.referenced[k] = true
		b.automatic[k] = true
	}
}

// Add declares an ARG inside a stage.
func (b *BuildArgs) Add(key string, value *string) {
	b.allowed[key] = value
	b.referenced[key] = true
}

// value returns the value an argument has in scope: the --build-arg value,
// else the declared default, else the meta arg's value.
func (b *BuildArgs) value(key string, declared *string) (string, bool) {
	if v, ok := b.options[key]; ok && v != nil {
		return *v, true
	}
	if declared != nil {
		return *declared, true
	}
	if v, ok := b.meta[key]; ok && v != nil {
		return *v, true
	}
	return "", false
}

// Meta returns the meta args with their values, for expanding FROM lines.
func (b *BuildArgs) Meta() []string {
	var env []string
	for _, k := range slices.Sorted(maps.Keys(b.meta)) {
		if v, ok := b.value(k, b.meta[k]); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// InScope returns "NAME=value" for the args the current stage declared that
// have a value and that env does not override, sorted.
func (b *BuildArgs) InScope(env []string) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(b.allowed)) {
		if _, ok := LookupEnv(env, k); ok {
			continue
		}
		if v, ok := b.value(k, b.allowed[k]); ok {
			out = append(out, k+"="+v)
		}
	}
	for _, k := range builtinArgs {
		if _, declared := b.allowed[k]; declared {
			continue
		}
		if _, ok := LookupEnv(env, k); ok {
			continue
		}
		if v, ok := b.options[k]; ok && v != nil {
			out = append(out, k+"="+*v)
		}
	}
	sort.Strings(out)
	return out
}

// forHistory filters InScope's list to what Docker writes in a RUN's
// history: every declared arg, and builtin ones only when declared.
func (b *BuildArgs) forHistory(args []string) []string {
	var out []string
	for _, a := range args {
		k, _, _ := cut(a)
		if _, declared := b.allowed[k]; declared || !slices.Contains(builtinArgs, k) {
			out = append(out, a)
		}
	}
	return out
}

// Unused returns the --build-arg names no ARG of the build declared, sorted,
// for Docker's "were not consumed" warning. BUILDKIT_SYNTAX is the
// frontend's (CheckSyntaxArg).
func (b *BuildArgs) Unused() []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(b.options)) {
		if !b.referenced[k] && !slices.Contains(builtinArgs, k) && k != SyntaxArg {
			out = append(out, k)
		}
	}
	return out
}
