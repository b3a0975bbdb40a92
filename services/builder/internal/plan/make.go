package plan

import (
	"context"
	// The sha384 and sha512 digests ADD --checksum takes (go-digest knows
	// an algorithm only once its hash is linked in).
	_ "crypto/sha512"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/moby/buildkit/frontend/dockerfile/dfgitutil"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/patternmatcher"
	"github.com/opencontainers/go-digest"
	mode "github.com/tonistiigi/dchapes-mode"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/buildctx"
	"github.com/strata-build/strata/services/builder/internal/cache"
	"github.com/strata-build/strata/services/builder/internal/dockerfile"
	"github.com/strata-build/strata/services/builder/internal/image"
)

// Images resolves the images a Dockerfile names (FROM, COPY --from).
type Images interface {
	// Resolve returns the image ref names, held locally or pulled;
	// ErrNotFound or ErrUnavailable naming ref when it cannot be had.
	Resolve(ctx context.Context, ref string) (*image.Image, error)
}

// Downloads fetches ADD's URL sources: at planning, as their content keys
// the step, but for an ADD --checksum, whose checksum keys it, only when
// the step runs (Copy.Fetch).
type Downloads interface {
	// Download stores the content at url in the context store and returns
	// its entry, whose Path is the file's name (URLFileName). When
	// checksum is set the content must have that digest: otherwise the
	// error is FAILED_PRECONDITION, reason CHECKSUM_MISMATCH, naming the
	// URL and both digests, and nothing is stored.
	Download(ctx context.Context, url string, checksum digest.Digest) (*buildctx.Entry, error)
	// Clone fetches the commit a Git source names and returns its
	// checkout as a tree whose contents are in the context store, and the
	// commit's hash.
	Clone(ctx context.Context, g GitSource) (*buildctx.Context, string, error)
}

// GitSource is an ADD source that names a Git repository, as BuildKit's
// Dockerfile frontend tells one (dfgitutil.ParseGitRef): an http(s) URL
// whose path ends in ".git", an ssh://, git:// or git@host:path URL, each
// with an optional "#ref:subdir" fragment and BuildKit's query options.
type GitSource struct {
	URL        string // as written, for messages
	Remote     string // the repository: the URL without fragment and query
	Ref        string // branch, tag or commit; "" for the remote's HEAD
	Subdir     string // the directory of the repository to copy; "" for all
	KeepGitDir bool   // keep .git (--keep-git-dir, ?keep-git-dir)
	// SkipSubmodules is ?submodules=false: a submodule is an empty
	// directory, as BuildKit leaves it.
	SkipSubmodules bool
	// CommitMTime is ?mtime=commit: the files get the commit's time
	// rather than the checkout's.
	CommitMTime bool
	// Checksum is ?checksum= (or ?commit=): what the commit must start
	// with.
	Checksum string
}

// gitSource parses an ADD source that names a Git repository; ok is false
// for any other source, err set for a Git URL BuildKit refuses.
func gitSource(src string, keepGitDir *bool) (g *GitSource, ok bool, err error) {
	ref, isGit, err := dfgitutil.ParseGitRef(src)
	if err != nil {
		if isGit {
			return nil, true, err
		}
		return nil, false, nil
	}
	if ref.IndistinguishableFromLocal { // github.com/org/repo: a context path
		return nil, false, nil
	}
	if keepGitDir != nil && ref.KeepGitDir != nil && *keepGitDir != *ref.KeepGitDir {
		return nil, true, errors.New("inconsistent keep-git-dir configuration") // BuildKit's words
	}
	if ref.KeepGitDir != nil {
		keepGitDir = ref.KeepGitDir
	}
	g = &GitSource{URL: src, Remote: ref.Remote, Ref: ref.Ref, Subdir: ref.SubDir, CommitMTime: ref.MTime == "commit",
		KeepGitDir: keepGitDir != nil && *keepGitDir, SkipSubmodules: ref.Submodules != nil && !*ref.Submodules}
	if g.Checksum = ref.Checksum; g.Ref == "" {
		g.Ref = ref.Checksum // the commit itself, when no ref is named
	}
	return g, true, nil
}

// Input is what a plan is made of.
type Input struct {
	// Dockerfile is the parsed Dockerfile; Make adds the Labels to its
	// target stage.
	Dockerfile *dockerfile.Dockerfile
	Context    *buildctx.Context
	BuildArgs  map[string]string
	Target     string
	Labels     map[string]string
	// Network is the network RUN steps run on when not the default
	// bridge ("none", "host"); their cache keys name it.
	Network string
	// MaxConfigBytes bounds what the steps' image configs weigh together.
	MaxConfigBytes int64
	Images         Images
	// Downloads is needed only by an ADD of a URL.
	Downloads Downloads
	// Parallel is the most images resolved at once (1 when zero).
	Parallel int
}

// Make works out the plan of a build: it resolves base images, downloads
// ADD's URLs and expands every instruction. Dockerfile errors are
// INVALID_ARGUMENT errors naming the line.
func Make(ctx context.Context, in Input) (*Plan, error) {
	p := &planner{in: in, df: in.Dockerfile, args: dockerfile.NewBuildArgs(in.BuildArgs), maxConfigBytes: in.MaxConfigBytes,
		byIndex: map[int]*Stage{}}
	// Images resolved ahead and not needed after all (planning failed
	// first) stop being fetched, and are waited for: none may still be
	// taking blobs into the build's lease once the caller releases it.
	ctx, cancel := context.WithCancel(ctx)
	defer p.resolved.Wait()
	defer cancel()
	return p.plan(ctx)
}

// planner works out a plan.
type planner struct {
	in   Input
	df   *dockerfile.Dockerfile
	args *dockerfile.BuildArgs
	// byIndex are the stages planned so far, by their index in the
	// Dockerfile.
	byIndex map[int]*Stage

	// configBytes counts what the steps' image configs will weigh, against
	// maxConfigBytes.
	configBytes, maxConfigBytes int64
	// resolving are the images the stages name, being resolved (pulled,
	// when not held) all at once ahead of the planning that needs them,
	// by name.
	resolving map[string]*resolution
	resolved  sync.WaitGroup
}

// resolution is an image being resolved.
type resolution struct {
	done chan struct{}
	img  *image.Image
	err  error
}

// resolveAhead starts resolving refs, at most Input.Parallel at a time.
func (p *planner) resolveAhead(ctx context.Context, refs []string) {
	slots := make(chan struct{}, max(p.in.Parallel, 1))
	p.resolving = map[string]*resolution{}
	for _, ref := range refs {
		r := &resolution{done: make(chan struct{})}
		p.resolving[ref] = r
		p.resolved.Add(1)
		go func() {
			defer p.resolved.Done()
			defer close(r.done)
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				r.err = ctx.Err()
				return
			}
			defer func() { <-slots }()
			r.img, r.err = p.in.Images.Resolve(ctx, ref)
		}()
	}
}

// resolve returns the image ref names: resolved ahead, or now.
func (p *planner) resolve(ctx context.Context, ref string) (*image.Image, error) {
	r, ok := p.resolving[ref]
	if !ok {
		return p.in.Images.Resolve(ctx, ref)
	}
	select {
	case <-r.done:
		return r.img, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *planner) plan(ctx context.Context) (*Plan, error) {
	df := p.df
	if v, ok := p.in.BuildArgs[dockerfile.SyntaxArg]; ok {
		if err := dockerfile.CheckSyntaxArg(v); err != nil {
			return nil, err
		}
	}
	target, err := df.Target(p.in.Target)
	if err != nil {
		return nil, err
	}
	if err := df.DeclareMetaArgs(p.args, p.in.Target); err != nil {
		return nil, err
	}
	// --label values become LABEL instructions at the end of the target
	// stage, sorted, as the classic builder adds them.
	for _, k := range slices.Sorted(maps.Keys(p.in.Labels)) {
		df.Stages[target].AddCommand(instructions.NewLabelCommand(k, p.in.Labels[k], true))
	}
	needed, err := df.Needed(target, p.args)
	if err != nil {
		return nil, err
	}
	p.resolveAhead(ctx, df.Images(needed, p.args))
	pl := &Plan{}
	for _, i := range needed {
		sp, err := p.stage(ctx, i)
		if err != nil {
			return nil, err
		}
		p.byIndex[i] = sp
		pl.Stages = append(pl.Stages, sp)
	}
	n := 0
	for _, sp := range pl.Stages {
		n++
		sp.Number = n
		for _, st := range sp.Steps {
			if !st.Trigger {
				n++
			}
			st.Number = n
		}
	}
	pl.Total = n
	if unused := p.args.Unused(); len(unused) > 0 {
		pl.Warnings = append(pl.Warnings, fmt.Sprintf("[Warning] One or more build-args %v were not consumed", unused))
	}
	return pl, nil
}

func (p *planner) stage(ctx context.Context, i int) (*Stage, error) {
	df := p.df
	s := df.Stages[i]
	sp := &Stage{Index: i, Name: s.Name, FromText: s.SourceCode}
	base, err := df.BaseName(i, p.args)
	if err != nil {
		return nil, err
	}
	sp.BaseName = base
	if pf := s.Platform; pf != "" {
		// Expanded first: FROM --platform=$BUILDPLATFORM is the usual form.
		x, err := dockerfile.ExpandMeta(df.Lex(), p.args, pf)
		if err != nil {
			return nil, errdefs.InvalidArgument("Dockerfile:%d: FROM --platform=%s: %v", s.Line, pf, err)
		}
		if x != "" && x != dockerfile.Platform && x != dockerfile.PlatformOS {
			if x != pf {
				pf += " (" + x + ")"
			}
			return nil, errdefs.InvalidArgument("Dockerfile:%d: FROM --platform=%s: this builder builds %s only", s.Line, pf, dockerfile.Platform)
		}
	}
	var baseCfg *image.ContainerConfig
	if j, ok, _ := df.StageIndex(base, i); ok {
		sp.BaseStage = p.byIndex[j]
		sp.FromKey = sp.BaseStage.LastKey()
		baseCfg = sp.BaseStage.FinalConfig()
	} else if strings.EqualFold(base, "scratch") {
		sp.FromKey = cache.FromImage("scratch")
	} else {
		img, err := p.resolve(ctx, base)
		if err != nil {
			return nil, errdefs.New(errdefs.KindOf(err), "Dockerfile:%d: FROM %s: %w", s.Line, base, err)
		}
		sp.BaseImage = img
		sp.FromKey = cache.FromImage(string(img.ID()))
		baseCfg = img.Config.Config
	}
	st := dockerfile.NewState(baseCfg, p.args.ForStage(), df.EscapeToken)
	parent := sp.FromKey

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
	sp.Config = st.Config.Clone()
	var history int64
	if sp.BaseImage != nil {
		history = int64(len(sp.BaseImage.Config.History)) * 64
	}

	for k, cmd := range cmds {
		stp := &Step{Cmd: cmd, Trigger: k < nTriggers, Line: dockerfile.Line(cmd), Text: commandText(cmd)}
		if stp.Trigger {
			stp.Line = s.Line
		}
		// The args the step sees: those in scope before it (an ARG's own
		// value reaches the key through the steps that use it).
		stp.Args = st.Args.InScope(st.Config.Env)
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
			// The build's secrets and SSH agents are the Dockerfile's to
			// give: a base image's trigger, which the user did not write,
			// gets none (BuildKit lets triggers mount them).
			if stp.Trigger && (len(r.Secrets) > 0 || len(r.SSH) > 0) {
				return nil, errdefs.InvalidArgument("Dockerfile:%d: ONBUILD trigger %q of %s: RUN --mount=type=secret and type=ssh are refused in a base image's triggers: the build's secrets and SSH agents are only for the Dockerfile's own steps",
					s.Line, triggers[k], base)
			}
			stp.Kind, stp.Run, commit = KindRun, &r, r.Commit
			if stp.Mounts, err = p.mounts(ctx, c, r.Mounts, i); err != nil {
				return nil, err
			}
		case *instructions.WorkdirCommand:
			commit, err = st.Workdir(c)
			if err != nil {
				return nil, err
			}
			stp.Kind, stp.Workdir = KindWorkdir, commit.WorkingDir
		case *instructions.CopyCommand:
			cp, err := p.copyPlan(ctx, st, copyInstruction{cmd: cmd, sd: c.SourcesAndDest, from: c.From, chown: c.Chown, chmod: c.Chmod, exclude: c.ExcludePatterns, parents: c.Parents, link: c.Link}, i)
			if err != nil {
				return nil, err
			}
			stp.Kind, stp.Copy = KindCopy, cp
			commit = dockerfile.Commit{ContainerCmd: st.NopString(CopyComment("COPY", cp))}
		case *instructions.AddCommand:
			cp, err := p.copyPlan(ctx, st, copyInstruction{cmd: cmd, sd: c.SourcesAndDest, chown: c.Chown, chmod: c.Chmod, exclude: c.ExcludePatterns, checksum: c.Checksum, keepGitDir: c.KeepGitDir, link: c.Link, add: true}, i)
			if err != nil {
				return nil, err
			}
			stp.Kind, stp.Copy = KindCopy, cp
			commit = dockerfile.Commit{ContainerCmd: st.NopString(CopyComment("ADD", cp))}
		default:
			commit, err = st.Apply(cmd)
			if err != nil {
				return nil, err
			}
		}
		stp.Config = st.Config.Clone()
		stp.Author = st.Maintainer
		cc := st.Config.Clone()
		cc.Cmd = commit.ContainerCmd
		if stp.Kind == KindRun {
			// The classic builder records a RUN's container config with the
			// command as Cmd and no entrypoint.
			cc.Cmd = stp.Run.Commit.ContainerCmd
			cc.ArgsEscaped = false
			cc.Entrypoint = nil
		}
		stp.ContainerConfig = cc
		var size int64
		stp.Key, size = stepKey(parent, stp, p.in.Network)
		if stp.Copy != nil && stp.Copy.Link {
			stp.LinkKey = linkKey(stp)
		}
		// The step's image holds its config and container config (about
		// the size of the key's JSON each) and the history so far.
		history += int64(len(stp.CreatedBy())) + 64
		if p.configBytes += 2*size + history; p.configBytes > p.maxConfigBytes {
			return nil, errdefs.ResourceExhausted("Dockerfile:%d: the build's image configs grow past %d bytes, the builder's limit (--max-config-bytes): each step's image holds every label, variable and history row before it",
				stp.Line, p.maxConfigBytes).WithReason("DOCKERFILE_TOO_LARGE")
		}
		parent = stp.Key
		sp.Steps = append(sp.Steps, stp)
	}
	return sp, nil
}

// finalConfig is the config a stage's result has.
func (s *Stage) FinalConfig() *image.ContainerConfig {
	if len(s.Steps) == 0 {
		return s.Config
	}
	return s.Steps[len(s.Steps)-1].Config
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
	parsed, err := dockerfile.ParseInstruction(res.AST.Children[0])
	if err != nil {
		return nil, err
	}
	cmd, ok := parsed.(instructions.Command)
	if !ok {
		return nil, fmt.Errorf("want an instruction other than FROM")
	}
	switch cmd.(type) {
	case *instructions.OnbuildCommand:
		return nil, fmt.Errorf("chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
	case *instructions.MaintainerCommand:
		return nil, fmt.Errorf("MAINTAINER isn't allowed as an ONBUILD trigger")
	}
	if msg := dockerfile.Unsupported(cmd); msg != "" {
		return nil, errors.New(msg)
	}
	return cmd, nil
}

// copyInstruction is what a COPY or an ADD says.
type copyInstruction struct {
	cmd                instructions.Command
	sd                 instructions.SourcesAndDest
	from, chown, chmod string // --from (COPY only), --chown, --chmod
	exclude            []string
	checksum           string // ADD --checksum
	keepGitDir         *bool  // ADD --keep-git-dir
	add, parents, link bool
}

// copyPlan resolves a COPY or ADD of stage, with st the state before it.
func (p *planner) copyPlan(ctx context.Context, st *dockerfile.State, in copyInstruction, stage int) (*Copy, error) {
	cmd, sd, from, chown, chmod, add := in.cmd, in.sd, in.from, in.chown, in.chmod, in.add
	name := strings.ToUpper(cmd.Name())
	cp := &Copy{Add: add, Chown: chown, Paths: slices.Clone(sd.SourcePaths), Exclude: slices.Clone(in.exclude)}
	x, err := NewExcluder(cp.Exclude)
	if err != nil {
		return nil, dockerfile.Errorf(cmd, "%s --exclude: %v", name, err)
	}
	cp.Excluder = x
	cp.Parents = in.parents
	if chmod != "" {
		// As BuildKit: an octal mode, else a symbolic one (refused as
		// not octal when it looks like a number).
		m, err := strconv.ParseUint(chmod, 8, 32)
		switch {
		case err == nil && m > 0o7777:
			return nil, dockerfile.Errorf(cmd, "%s --chmod=%s: want an octal mode such as 0755", name, chmod)
		case err == nil:
			// The special bits too, as BuildKit sets them (Docker's
			// classic builder has no --chmod).
			mode := fs.FileMode(m & 0o777)
			for bit, fm := range map[uint64]fs.FileMode{0o4000: fs.ModeSetuid, 0o2000: fs.ModeSetgid, 0o1000: fs.ModeSticky} {
				if m&bit != 0 {
					mode |= fm
				}
			}
			cp.Chmod = &mode
		default:
			set, perr := mode.Parse(chmod)
			if perr != nil {
				var ne *strconv.NumError
				if errors.As(perr, &ne) {
					return nil, dockerfile.Errorf(cmd, "%s --chmod=%s: want an octal mode such as 0755", name, chmod)
				}
				return nil, dockerfile.Errorf(cmd, "%s --chmod=%s: want an octal mode such as 0755 or a symbolic one such as u+x: %v", name, chmod, perr)
			}
			cp.ChmodSymbolic, cp.chmodSet = chmod, &set
		}
	}
	if chown != "" {
		u, g, err := splitChown(chown)
		if err != nil {
			return nil, dockerfile.Errorf(cmd, "%s --chown=%s: %v", name, chown, err)
		}
		if in.link && (!numeric(u) || g != "" && !numeric(g)) {
			// BuildKit's words: the root the copy goes into is empty.
			return nil, dockerfile.Errorf(cmd, "--chown=%s: user and group names can't be resolved when used with --link, use numeric uid[:gid] instead", chown)
		}
	}
	cp.Link = in.link && chmod == ""
	dest := sd.DestPath
	cp.DestText = dest
	cp.DestDir = strings.HasSuffix(dest, "/") || strings.HasSuffix(dest, "/.")
	if !path.IsAbs(dest) {
		dest = path.Join("/", st.Config.WorkingDir, dest)
	}
	cp.Dest = path.Clean(dest)
	if cp.DestDir && cp.Dest != "/" {
		cp.Dest += "/"
	}
	if cp.Dest == "/" {
		cp.DestDir = true
	}
	nsrc := len(sd.SourcePaths) + len(sd.SourceContents)
	if nsrc == 0 {
		return nil, dockerfile.Errorf(cmd, "%s needs a source", name)
	}
	var checksum digest.Digest
	if in.checksum != "" {
		// BuildKit's rules and words.
		if len(sd.SourcePaths) != 1 {
			return nil, dockerfile.Errorf(cmd, "checksum can't be specified for multiple sources")
		}
		_, isGit, _ := gitSource(sd.SourcePaths[0], nil)
		switch {
		case isGit:
			if !gitCommitPrefix.MatchString(in.checksum) {
				return nil, dockerfile.Errorf(cmd, "invalid checksum %s for Git URL, expected hex commit hash", in.checksum)
			}
		case !isURL(sd.SourcePaths[0]):
			return nil, dockerfile.Errorf(cmd, "checksum requires HTTP(S) or Git sources")
		default:
			var err error
			if checksum, err = digest.Parse(in.checksum); err != nil {
				return nil, dockerfile.Errorf(cmd, "ADD --checksum=%s: want a sha256, sha384 or sha512 digest, as algorithm:hex (sha256:<64 hex digits>): %v", in.checksum, err)
			}
		}
	}

	if from != "" {
		from, err := dockerfile.ExpandMeta(p.df.Lex(), p.args, from)
		if err != nil {
			return nil, dockerfile.Errorf(cmd, "%s --from: %v", name, err)
		}
		if j, ok, err := p.df.StageIndex(from, stage); err != nil {
			return nil, dockerfile.Errorf(cmd, "%s --from=%s: %v", name, from, err)
		} else if ok {
			cp.FromStage = p.byIndex[j]
		} else {
			img, err := p.resolve(ctx, from)
			if err != nil {
				return nil, errdefs.New(errdefs.KindOf(err), "Dockerfile:%d: %s --from=%s: no stage of that name, and the image: %w", dockerfile.Line(cmd), name, from, err)
			}
			cp.FromImage = img
		}
		if nsrc > 1 && !cp.DestDir && !cp.Parents {
			return nil, dockerfile.Errorf(cmd, "When using %s with more than one source file, the destination must be a directory and end with a /", name)
		}
		if cp.Parents {
			for _, src := range sd.SourcePaths {
				if err := checkParents(src); err != nil {
					return nil, dockerfile.Errorf(cmd, "%s --parents %s: %v", name, src, err)
				}
			}
		}
		cp.Hash = "from:" + from
		return cp, nil
	}

	c := p.in.Context
	cp.context = c
	cp.walk = func(dir string, fn func(*buildctx.Entry)) error {
		return c.Walk(dir, func(e *buildctx.Entry) error { fn(e); return nil })
	}
	for _, sc := range sd.SourceContents {
		cp.Sources = append(cp.Sources, Source{Src: "<<" + sc.Path, Data: []byte(sc.Data), Name: sc.Path})
	}
	for _, src := range sd.SourcePaths {
		if g, isGit, err := gitSource(src, in.keepGitDir); isGit {
			if !add {
				return nil, dockerfile.Errorf(cmd, "COPY source %q is a Git repository: use ADD to fetch it", redact(src))
			}
			if err != nil {
				return nil, dockerfile.Errorf(cmd, "ADD %s: %v", redact(src), err)
			}
			sum := in.checksum
			if g.Checksum != "" {
				if sum != "" && sum != g.Checksum {
					return nil, dockerfile.Errorf(cmd, "checksum mismatch %q != %q", sum, g.Checksum) // BuildKit's words
				}
				sum = g.Checksum
			}
			f, err := p.clone(ctx, *g, sum)
			if err != nil {
				return nil, errdefs.New(errdefs.KindOf(err), "Dockerfile:%d: ADD %s: %w", dockerfile.Line(cmd), redact(src), err)
			}
			cp.Sources = append(cp.Sources, f)
			continue
		}
		if add && isURL(src) && checksum != "" {
			cp.Sources = append(cp.Sources, deferredDownload(src, checksum))
			continue
		}
		if add && isURL(src) {
			f, err := p.download(ctx, src)
			if err != nil {
				return nil, errdefs.Wrap(err, "Dockerfile:%d: ADD %s", dockerfile.Line(cmd), redact(src))
			}
			cp.Sources = append(cp.Sources, f)
			continue
		}
		if isURL(src) {
			return nil, dockerfile.Errorf(cmd, "COPY source %q is a URL: use ADD to download", src)
		}
		if cp.Parents {
			srcs, err := p.parentsSources(c, src)
			if err != nil {
				return nil, errdefs.New(errdefs.KindOf(err), "Dockerfile:%d: %s --parents %s: %w", dockerfile.Line(cmd), name, src, err)
			}
			cp.Sources = append(cp.Sources, srcs...)
			continue
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
				return nil, errdefs.New(errdefs.KindOf(err), "Dockerfile:%d: %s %s: %w", dockerfile.Line(cmd), name, src, err)
			}
			f := Source{Src: sp, Entry: e}
			if add && e.Mode.IsRegular() {
				f.Unpack = true // decided on the content when copied; keyed the same
			}
			cp.Sources = append(cp.Sources, f)
		}
	}
	if len(cp.Sources) > 1 && !cp.DestDir && !cp.Parents {
		return nil, dockerfile.Errorf(cmd, "When using %s with more than one source file, the destination must be a directory and end with a /", name)
	}
	cp.Hash = cp.keyHash()
	return cp, nil
}

// parentsSources resolves a COPY --parents source of the context: the
// directory its paths are kept relative to (each match, when it has
// wildcards) with its pattern. As BuildKit requires, a source without
// wildcards must exist.
func (p *planner) parentsSources(c *buildctx.Context, src string) ([]Source, error) {
	if err := checkParents(src); err != nil {
		return nil, errdefs.InvalidArgument("%v", err)
	}
	dir, pattern := SplitParents(src)
	dirs := []string{dir}
	if hasWildcards(dir) {
		var err error
		if dirs, err = c.Match(dir); err != nil {
			return nil, err
		}
	} else if !hasWildcards(pattern) {
		if _, err := c.Resolve(path.Join(dir, pattern)); err != nil {
			return nil, err
		}
	}
	var out []Source
	for _, d := range dirs {
		e, err := c.Resolve(d)
		if err != nil {
			return nil, err
		}
		if !e.Mode.IsDir() {
			if hasWildcards(dir) {
				continue
			}
			return nil, errdefs.InvalidArgument("%s is not a directory", d)
		}
		out = append(out, Source{Src: src, Entry: e, Include: pattern})
	}
	return out, nil
}

// checkParents checks a COPY --parents source's pattern.
func checkParents(src string) error {
	_, pattern := SplitParents(src)
	if pattern == "" {
		return nil
	}
	if _, err := patternmatcher.New([]string{pattern}); err != nil {
		return err
	}
	return nil
}

// download fetches an ADD source. The file gets the URL's last path element
// as its name.
func (p *planner) download(ctx context.Context, url string) (Source, error) {
	if p.in.Downloads == nil {
		return Source{}, errdefs.Unimplemented("this builder does not download ADD sources")
	}
	e, err := p.in.Downloads.Download(ctx, url, "")
	if err != nil {
		return Source{}, err
	}
	return Source{Src: url, Entry: e, Name: e.Path}, nil
}

// gitCommitPrefix is what BuildKit takes as a Git source's checksum.
var gitCommitPrefix = regexp.MustCompile("^[a-fA-F0-9]+$")

// clone fetches an ADD Git source; its checkout is copied into the
// destination as a directory of the context is. checksum, when set, is
// what the commit must start with, as BuildKit checks it.
func (p *planner) clone(ctx context.Context, g GitSource, checksum string) (Source, error) {
	if p.in.Downloads == nil {
		return Source{}, errdefs.Unimplemented("this builder does not fetch ADD sources")
	}
	tree, commit, err := p.in.Downloads.Clone(ctx, g)
	if err != nil {
		return Source{}, err
	}
	if checksum != "" && !strings.HasPrefix(commit, strings.ToLower(checksum)) {
		return Source{}, errdefs.New(errdefs.ErrFailedPrecondition, "expected checksum to match %s, got %s", checksum, commit).WithReason("CHECKSUM_MISMATCH")
	}
	root, _ := tree.Lookup(".")
	return Source{Src: g.URL, Entry: root, Checkout: tree, Commit: commit}, nil
}

// deferredDownload is the source of an ADD --checksum of url, whose
// download waits for the step to run (Copy.Fetch), as BuildKit takes a
// pinned checksum for the content's digest without fetching it: its entry
// stands for the download as the key sees it — the name, mode and owner
// the file gets and, for its content digest, the checksum (the content's
// sha256 digest when the checksum is one, so the key is that of the step
// with the download at hand).
func deferredDownload(url string, checksum digest.Digest) Source {
	name := URLFileName(url)
	return Source{Src: url, Name: name, Checksum: checksum, Entry: &buildctx.Entry{Path: name, Mode: 0o600, Digest: checksum}}
}

// URLFileName is the name of the file an ADD of url downloads: the URL
// path's last element, as Docker and BuildKit name it, or "__unnamed__".
func URLFileName(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "__unnamed__"
	}
	name := path.Base(u.Path)
	if name == "/" || name == "." || name == "" {
		return "__unnamed__"
	}
	return name
}

// Fetch returns cp with the downloads of its ADD --checksum sources, which
// planning left to the step (see Source.Checksum), fetched and verified;
// cp itself when it has none. cp does not change.
func (cp *Copy) Fetch(ctx context.Context, d Downloads) (*Copy, error) {
	if !slices.ContainsFunc(cp.Sources, func(s Source) bool { return s.Checksum != "" }) {
		return cp, nil
	}
	if d == nil {
		return nil, errdefs.Unimplemented("this builder does not download ADD sources")
	}
	out := *cp
	out.Sources = slices.Clone(cp.Sources)
	for i, s := range out.Sources {
		if s.Checksum == "" {
			continue
		}
		e, err := d.Download(ctx, s.Src, s.Checksum)
		if err != nil {
			return nil, errdefs.Wrap(err, "ADD %s", redact(s.Src))
		}
		out.Sources[i] = Source{Src: s.Src, Entry: e, Name: e.Path}
	}
	return &out, nil
}

// redact drops an HTTP(S) URL's user information, for messages: a token is often
// the user (https://TOKEN@host/…), which url.URL.Redacted keeps.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return u.Redacted() // ssh://git@host/…: the user is no secret
	}
	u.User = nil
	return u.String()
}

func isURL(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

// numeric reports whether a --chown user or group is an ID.
func numeric(s string) bool {
	_, err := strconv.ParseUint(s, 10, 32)
	return err == nil
}

// splitChown splits "user[:group]".
func splitChown(s string) (string, string, error) {
	u, g, _ := strings.Cut(s, ":")
	if u == "" {
		return "", "", fmt.Errorf("want user[:group]")
	}
	return u, g, nil
}
