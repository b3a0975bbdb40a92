package build

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/buildctx"
	"github.com/strata-build/strata/services/builder/internal/cache"
	"github.com/strata-build/strata/services/builder/internal/dockerfile"
	"github.com/strata-build/strata/services/builder/internal/image"
)

// stepKind says how a step is carried out.
type stepKind int

const (
	kindMeta    stepKind = iota // changes the config only: an empty layer
	kindRun                     // runs a process in the sandbox
	kindCopy                    // COPY or ADD
	kindWorkdir                 // WORKDIR: creates the directory
)

// plan is a build worked out before anything runs: the stages the target
// needs, each step with its expanded instruction, the config it leaves and
// its cache key. Everything a key depends on is known up front, so one
// cache lookup serves the whole build.
type plan struct {
	stages []*stagePlan
	total  int
	warns  []string
}

// stagePlan is one stage of a plan.
type stagePlan struct {
	index int
	name  string
	// Exactly one of these is the base: an image, an earlier stage, or
	// neither for scratch.
	baseImage *image.Image
	baseStage *stagePlan
	baseName  string
	fromText  string
	fromKey   digest.Digest
	number    int // the FROM's step number
	steps     []*step
	// config is the stage's base config, as FROM leaves it.
	config *image.ContainerConfig
}

// lastKey is the key of the stage's result.
func (s *stagePlan) lastKey() digest.Digest {
	if len(s.steps) == 0 {
		return s.fromKey
	}
	return s.steps[len(s.steps)-1].key
}

// step is one instruction of a plan.
type step struct {
	number  int  // "Step N/M"; triggers share their FROM's number
	trigger bool // an ONBUILD trigger of the base image
	text    string
	line    int
	kind    stepKind
	cmd     instructions.Command

	config          *image.ContainerConfig // the image's config after the step
	containerConfig *image.ContainerConfig // its container_config
	author          string
	args            []string // build args in scope, for the key
	run             *dockerfile.Run
	copy            *copyPlan
	workdir         string
	key             digest.Digest
	cid             string // the container ID the step runs as
}

// createdBy is the step's history text.
func (s *step) createdBy() string { return strings.Join(s.containerConfig.Cmd, " ") }

// copyFromElsewhere reports whether the step copies from another stage or
// an image, whose history row Docker writes from the copy's own command.
func (s *step) copyFromElsewhere() bool {
	return s.copy != nil && (s.copy.fromStage != nil || s.copy.fromImage != nil)
}

// historyCreatedBy is the created_by of the history row the step writes.
func (s *step) historyCreatedBy() string {
	if s.copyFromElsewhere() {
		return strings.Join(s.copy.containerCmd, " ")
	}
	return s.createdBy()
}

// container reports whether Docker's classic builder runs a container for
// the step (and prints "Running in").
func (s *step) container() bool { return s.kind != kindCopy }

// copyPlan is a resolved COPY or ADD.
type copyPlan struct {
	add       bool
	fromStage *stagePlan
	fromImage *image.Image
	srcs      []string // source paths as written (expanded), for --from
	files     []copyFile
	dest      string // absolute destination
	destText  string // the destination as written, for history
	destDir   bool   // the destination is a directory (ends in "/" or many sources)
	chown     string
	chmod     *fs.FileMode
	hash      string // "file:…", "dir:…" or "multi:…", for history
	walk      func(dir string, fn func(*buildctx.Entry)) error
	ctx       *buildctx.Context
	// containerCmd is the container Cmd of a COPY --from, whose source hash
	// is known only once the sources were copied.
	containerCmd []string
}

// copyFile is one top-level source of a COPY or ADD from the context (or a
// heredoc or URL): the entry and everything under it lands at dest.
type copyFile struct {
	src    string // what the instruction names, for messages
	entry  *buildctx.Entry
	data   []byte // heredoc content
	name   string // heredoc or URL file name
	unpack bool   // ADD of a local archive: extracted, not copied
}

// planner works out a plan.
type planner struct {
	b    *Builder
	req  *Request
	df   *dockerfile.Dockerfile
	args *dockerfile.BuildArgs

	// configBytes counts what the steps' image configs will weigh, against
	// maxConfigBytes.
	configBytes, maxConfigBytes int64
}

func (p *planner) plan(ctx context.Context) (*plan, error) {
	df := p.df
	if err := df.DeclareMetaArgs(p.args); err != nil {
		return nil, err
	}
	target, err := df.Target(p.req.Target)
	if err != nil {
		return nil, err
	}
	// --label values become LABEL instructions at the end of the target
	// stage, sorted, as the classic builder adds them.
	for _, k := range slices.Sorted(maps.Keys(p.req.Labels)) {
		df.Stages[target].AddCommand(instructions.NewLabelCommand(k, p.req.Labels[k], true))
	}
	needed, err := df.Needed(target, p.args)
	if err != nil {
		return nil, err
	}
	pl := &plan{}
	byIndex := map[int]*stagePlan{}
	for _, i := range needed {
		sp, err := p.stage(ctx, i, byIndex)
		if err != nil {
			return nil, err
		}
		byIndex[i] = sp
		pl.stages = append(pl.stages, sp)
	}
	n := 0
	for _, sp := range pl.stages {
		n++
		sp.number = n
		for _, st := range sp.steps {
			if !st.trigger {
				n++
			}
			st.number = n
		}
	}
	pl.total = n
	if unused := p.args.Unused(); len(unused) > 0 {
		pl.warns = append(pl.warns, fmt.Sprintf("[Warning] One or more build-args %v were not consumed", unused))
	}
	return pl, nil
}

func (p *planner) stage(ctx context.Context, i int, byIndex map[int]*stagePlan) (*stagePlan, error) {
	df := p.df
	s := df.Stages[i]
	sp := &stagePlan{index: i, name: s.Name, fromText: s.SourceCode}
	base, err := df.BaseName(i, p.args)
	if err != nil {
		return nil, err
	}
	sp.baseName = base
	if pf := s.Platform; pf != "" {
		if pf, err = dockerfile.ExpandMeta(df.Lex(), p.args, pf); err != nil || (pf != "" && pf != "linux/amd64" && pf != "linux") {
			return nil, errdefs.InvalidArgument("Dockerfile:%d: FROM --platform=%s: this builder builds linux/amd64 only", s.Line, s.Platform)
		}
	}
	var baseCfg *image.ContainerConfig
	if j, ok, _ := df.StageIndex(base, i); ok {
		sp.baseStage = byIndex[j]
		sp.fromKey = sp.baseStage.lastKey()
		baseCfg = sp.baseStage.finalConfig()
	} else if strings.EqualFold(base, "scratch") {
		sp.fromKey = cache.FromImage("scratch")
	} else {
		img, err := p.b.resolveImage(ctx, base)
		if err != nil {
			return nil, errdefs.New(kindOf(err), "Dockerfile:%d: FROM %s: %w", s.Line, base, err)
		}
		sp.baseImage = img
		sp.fromKey = cache.FromImage(string(img.ID()))
		baseCfg = img.Config.Config
	}
	st := dockerfile.NewState(baseCfg, p.args.ForStage(), df.EscapeToken)
	parent := sp.fromKey

	var cmds []instructions.Command
	triggers := st.Config.OnBuild
	st.Config.OnBuild = nil
	for _, t := range triggers {
		cmd, err := parseTrigger(t)
		if err != nil {
			return nil, errdefs.InvalidArgument("Dockerfile:%d: ONBUILD trigger %q of %s: %v", s.Line, t, base, err)
		}
		cmds = append(cmds, cmd)
	}
	nTriggers := len(cmds)
	cmds = append(cmds, s.Commands...)
	sp.config = st.Config.Clone()
	var history int64
	if sp.baseImage != nil {
		history = int64(len(sp.baseImage.Config.History)) * 64
	}

	for k, cmd := range cmds {
		stp := &step{cmd: cmd, trigger: k < nTriggers, line: dockerfile.Line(cmd), text: commandText(cmd)}
		if stp.trigger {
			stp.line = s.Line
		}
		// The args the step sees: those in scope before it (an ARG's own
		// value reaches the key through the steps that use it).
		stp.args = st.Args.InScope(st.Config.Env)
		if err := st.Expand(cmd); err != nil {
			return nil, err
		}
		var commit dockerfile.Commit
		switch c := cmd.(type) {
		case *instructions.RunCommand:
			r, err := st.Run(c)
			if err != nil {
				return nil, err
			}
			stp.kind, stp.run, commit = kindRun, &r, r.Commit
		case *instructions.WorkdirCommand:
			commit, err = st.Workdir(c)
			if err != nil {
				return nil, err
			}
			stp.kind, stp.workdir = kindWorkdir, commit.WorkingDir
		case *instructions.CopyCommand:
			cp, err := p.copyPlan(ctx, st, cmd, c.SourcesAndDest, c.From, c.Chown, c.Chmod, false, i, byIndex)
			if err != nil {
				return nil, err
			}
			stp.kind, stp.copy = kindCopy, cp
			commit = dockerfile.Commit{ContainerCmd: st.NopString(copyComment("COPY", cp))}
		case *instructions.AddCommand:
			if c.Checksum != "" {
				return nil, dockerfile.Errorf(cmd, "ADD --checksum is not supported by this builder")
			}
			cp, err := p.copyPlan(ctx, st, cmd, c.SourcesAndDest, "", c.Chown, c.Chmod, true, i, byIndex)
			if err != nil {
				return nil, err
			}
			stp.kind, stp.copy = kindCopy, cp
			commit = dockerfile.Commit{ContainerCmd: st.NopString(copyComment("ADD", cp))}
		default:
			commit, err = st.Apply(cmd)
			if err != nil {
				return nil, err
			}
		}
		stp.config = st.Config.Clone()
		stp.author = st.Maintainer
		cc := st.Config.Clone()
		cc.Cmd = commit.ContainerCmd
		if stp.kind == kindRun {
			// The classic builder records a RUN's container config with the
			// command as Cmd and no entrypoint.
			cc.Cmd = stp.run.Commit.ContainerCmd
			cc.ArgsEscaped = false
			cc.Entrypoint = nil
		}
		stp.containerConfig = cc
		var size int64
		stp.key, size = stepKey(parent, stp)
		// The step's image holds its config and container config (about
		// the size of the key's JSON each) and the history so far.
		history += int64(len(stp.createdBy())) + 64
		if p.configBytes += 2*size + history; p.configBytes > p.maxConfigBytes {
			return nil, errdefs.ResourceExhausted("Dockerfile:%d: the build's image configs grow past %d bytes, the builder's limit (--max-config-bytes): each step's image holds every label, variable and history row before it",
				stp.line, p.maxConfigBytes).WithReason("DOCKERFILE_TOO_LARGE")
		}
		parent = stp.key
		sp.steps = append(sp.steps, stp)
	}
	return sp, nil
}

// finalConfig is the config a stage's result has.
func (s *stagePlan) finalConfig() *image.ContainerConfig {
	if len(s.steps) == 0 {
		return s.config
	}
	return s.steps[len(s.steps)-1].config
}

// stepKey returns the step's cache key and the size of the container config
// it covers.
func stepKey(parent digest.Digest, s *step) (digest.Digest, int64) {
	cc := s.containerConfig.Clone()
	cc.Image, cc.Hostname = "", ""
	b, _ := json.Marshal(cc)
	var sources digest.Digest
	if cp := s.copy; cp != nil {
		sources = cp.sourcesKey()
	}
	return cache.Step{
		Parent:   parent,
		Config:   b,
		Author:   s.author,
		Args:     s.args,
		Sources:  sources,
		Platform: "linux/amd64",
	}.Key(), int64(len(b))
}

func commandText(cmd instructions.Command) string {
	if s, ok := cmd.(fmt.Stringer); ok {
		return s.String()
	}
	return cmd.Name()
}

func parseTrigger(expr string) (instructions.Command, error) {
	res, err := parser.Parse(strings.NewReader(expr))
	if err != nil {
		return nil, err
	}
	if len(res.AST.Children) != 1 {
		return nil, fmt.Errorf("want one instruction")
	}
	cmd, err := instructions.ParseCommand(res.AST.Children[0])
	if err != nil {
		return nil, err
	}
	switch cmd.(type) {
	case *instructions.OnbuildCommand:
		return nil, fmt.Errorf("chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
	case *instructions.MaintainerCommand:
		return nil, fmt.Errorf("MAINTAINER isn't allowed as an ONBUILD trigger")
	}
	return cmd, nil
}

// copyComment is the history text of a COPY or ADD: Docker writes
// "COPY <hash> in <dest> ", with the destination as written and
// "--chown=…" glued before the hash.
func copyComment(name string, cp *copyPlan) string {
	chown := ""
	if cp.chown != "" {
		chown = "--chown=" + cp.chown
	}
	return fmt.Sprintf("%s %s%s in %s ", name, chown, cp.hash, cp.destText)
}

// sourcesKey is the part of a COPY's key its sources make: the content,
// mode and owner of every file from the context, or the source stage's key
// (or image ID) and the paths for --from.
func (cp *copyPlan) sourcesKey() digest.Digest {
	h := cache.New("copy")
	switch {
	case cp.fromStage != nil:
		h.String("stage").String(string(cp.fromStage.lastKey())).Strings(cp.srcs)
	case cp.fromImage != nil:
		h.String("image").String(string(cp.fromImage.ID())).Strings(cp.srcs)
	}
	var files []cache.File
	for _, f := range cp.files {
		switch {
		case f.entry != nil:
			files = append(files, cp.contextFiles(f)...)
		default:
			files = append(files, cache.File{Path: f.name, Mode: 0o644, Digest: digest.FromBytes(f.data)})
		}
	}
	h.String(string(cache.Sources(files)))
	h.String(cp.chown)
	if cp.chmod != nil {
		h.Int(int64(*cp.chmod))
	}
	h.String(cp.dest)
	return h.Digest()
}

// contextFiles lists what a context source contributes, relative to it.
func (cp *copyPlan) contextFiles(f copyFile) []cache.File {
	if cp.ctx == nil || isURL(f.src) {
		return cp.walkFiles(f)
	}
	key := fmt.Sprintf("files\x00%s\x00%s\x00%t", f.src, f.entry.Path, f.unpack)
	return cp.ctx.Memo(key, func() any { return cp.walkFiles(f) }).([]cache.File)
}

func (cp *copyPlan) walkFiles(f copyFile) []cache.File {
	var out []cache.File
	add := func(rel string, e *buildctx.Entry) {
		out = append(out, cache.File{Path: f.src + "\x00" + rel, Mode: e.Mode, UID: e.UID, GID: e.GID, Digest: e.Digest, LinkTarget: e.LinkTarget})
	}
	if !f.entry.Mode.IsDir() {
		add("", f.entry)
		if f.unpack {
			out = append(out, cache.File{Path: "\x00unpack"})
		}
		return out
	}
	root := f.entry.Path
	_ = cp.ctxWalk(f.entry, func(e *buildctx.Entry) {
		add(strings.TrimPrefix(strings.TrimPrefix(e.Path, root), "/"), e)
	})
	return out
}

// ctxWalk is set by the planner to walk the build context.
func (cp *copyPlan) ctxWalk(e *buildctx.Entry, fn func(*buildctx.Entry)) error {
	if cp.walk == nil {
		return nil
	}
	return cp.walk(e.Path, fn)
}

func (p *planner) copyPlan(ctx context.Context, st *dockerfile.State, cmd instructions.Command, sd instructions.SourcesAndDest,
	from, chown, chmod string, add bool, stage int, byIndex map[int]*stagePlan,
) (*copyPlan, error) {
	name := strings.ToUpper(cmd.Name())
	cp := &copyPlan{add: add, chown: chown, srcs: slices.Clone(sd.SourcePaths)}
	if chmod != "" {
		m, err := strconv.ParseUint(chmod, 8, 32)
		if err != nil || m > 0o7777 {
			return nil, dockerfile.Errorf(cmd, "%s --chmod=%s: want an octal mode such as 0755", name, chmod)
		}
		mode := fs.FileMode(m & 0o777)
		cp.chmod = &mode
	}
	if chown != "" {
		if _, _, err := splitChown(chown); err != nil {
			return nil, dockerfile.Errorf(cmd, "%s --chown=%s: %v", name, chown, err)
		}
	}
	dest := sd.DestPath
	cp.destText = dest
	cp.destDir = strings.HasSuffix(dest, "/") || strings.HasSuffix(dest, "/.")
	if !path.IsAbs(dest) {
		dest = path.Join("/", st.Config.WorkingDir, dest)
	}
	cp.dest = path.Clean(dest)
	if cp.destDir && cp.dest != "/" {
		cp.dest += "/"
	}
	if cp.dest == "/" {
		cp.destDir = true
	}
	nsrc := len(sd.SourcePaths) + len(sd.SourceContents)
	if nsrc == 0 {
		return nil, dockerfile.Errorf(cmd, "%s needs a source", name)
	}

	if from != "" {
		from, err := dockerfile.ExpandMeta(p.df.Lex(), p.args, from)
		if err != nil {
			return nil, dockerfile.Errorf(cmd, "%s --from: %v", name, err)
		}
		if j, ok, err := p.df.StageIndex(from, stage); err != nil {
			return nil, dockerfile.Errorf(cmd, "%s --from=%s: %v", name, from, err)
		} else if ok {
			cp.fromStage = byIndex[j]
		} else {
			img, err := p.b.resolveImage(ctx, from)
			if err != nil {
				return nil, errdefs.New(kindOf(err), "Dockerfile:%d: %s --from=%s: no stage of that name, and the image: %w", dockerfile.Line(cmd), name, from, err)
			}
			cp.fromImage = img
		}
		if nsrc > 1 && !cp.destDir {
			return nil, dockerfile.Errorf(cmd, "When using %s with more than one source file, the destination must be a directory and end with a /", name)
		}
		cp.hash = "from:" + from
		return cp, nil
	}

	c := p.req.Context
	cp.ctx = c
	cp.walk = func(dir string, fn func(*buildctx.Entry)) error {
		return c.Walk(dir, func(e *buildctx.Entry) error { fn(e); return nil })
	}
	for _, sc := range sd.SourceContents {
		cp.files = append(cp.files, copyFile{src: "<<" + sc.Path, data: []byte(sc.Data), name: sc.Path})
	}
	for _, src := range sd.SourcePaths {
		if add && isURL(src) {
			f, err := p.b.fetchURL(ctx, src)
			if err != nil {
				return nil, errdefs.New(kindOf(err), "Dockerfile:%d: ADD %s: %w", dockerfile.Line(cmd), src, err)
			}
			cp.files = append(cp.files, f)
			continue
		}
		if isURL(src) {
			return nil, dockerfile.Errorf(cmd, "COPY source %q is a URL: use ADD to download", src)
		}
		paths := []string{src}
		if strings.ContainsAny(src, "*?[") {
			var err error
			if paths, err = c.Match(src); err != nil {
				return nil, dockerfile.Errorf(cmd, "%v", err)
			}
			if len(paths) == 0 {
				return nil, dockerfile.Errorf(cmd, "%s failed: no source files were specified", name)
			}
		}
		for _, sp := range paths {
			e, err := c.Resolve(sp)
			if err != nil {
				return nil, errdefs.New(kindOf(err), "Dockerfile:%d: %s %s: %w", dockerfile.Line(cmd), name, src, err)
			}
			f := copyFile{src: sp, entry: e}
			if add && e.Mode.IsRegular() {
				f.unpack = true // decided on the content when copied; keyed the same
			}
			cp.files = append(cp.files, f)
		}
	}
	if len(cp.files) > 1 && !cp.destDir {
		return nil, dockerfile.Errorf(cmd, "When using %s with more than one source file, the destination must be a directory and end with a /", name)
	}
	cp.hash = cp.historyHash()
	return cp, nil
}

// historyHash is the source hash Docker writes in COPY and ADD history:
// "file:<hex>" for one file, "dir:<hex>" for one directory, and
// "multi:<hex>" over the others' for several.
func (cp *copyPlan) historyHash() string {
	var hashes []string
	for _, f := range cp.files {
		switch {
		case f.entry == nil:
			hashes = append(hashes, "file:"+digest.FromBytes(f.data).Encoded())
		case f.entry.Mode.IsDir():
			hash := func() any {
				var subs []string
				_ = cp.ctxWalk(f.entry, func(e *buildctx.Entry) {
					if e != f.entry {
						subs = append(subs, fileHash(e))
					}
				})
				slices.Sort(subs)
				return "dir:" + digest.FromString(strings.Join(subs, ",")).Encoded()
			}
			if cp.ctx != nil {
				hashes = append(hashes, cp.ctx.Memo("dirhash\x00"+f.entry.Path, hash).(string))
			} else {
				hashes = append(hashes, hash().(string))
			}
		default:
			hashes = append(hashes, "file:"+fileHash(f.entry))
		}
	}
	if len(hashes) == 1 {
		return hashes[0]
	}
	return "multi:" + digest.FromString(strings.Join(hashes, ",")).Encoded()
}

// fileHash is a file's hash for history: over its name, mode, owner, link
// target and content, as Docker's tarsum covers its header and content.
func fileHash(e *buildctx.Entry) string {
	return cache.New("file").String(e.Path).Int(int64(e.Mode)).Int(int64(e.UID)).Int(int64(e.GID)).
		String(e.LinkTarget).String(string(e.Digest)).Digest().Encoded()
}

func isURL(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

// splitChown splits "user[:group]".
func splitChown(s string) (string, string, error) {
	u, g, _ := strings.Cut(s, ":")
	if u == "" {
		return "", "", fmt.Errorf("want user[:group]")
	}
	return u, g, nil
}
