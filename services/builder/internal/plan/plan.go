// Package plan works out a Dockerfile build before anything runs, in the
// spirit of BuildKit's frontend: the parsed instructions (internal/
// dockerfile) become a Plan — the stages the target needs, each step with
// its expanded instruction, the config and history it records and its
// cache key — so that one cache lookup serves the whole build and the
// builder's exec stage (internal/exec) only carries steps out.
//
// A Plan is an immutable value; testdata/*.golden show, for each
// testdata/*.Dockerfile, the plan Make returns.
package plan

import (
	"io/fs"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/opencontainers/go-digest"
	mode "github.com/tonistiigi/dchapes-mode"

	"github.com/strata-build/strata/services/builder/internal/buildctx"
	"github.com/strata-build/strata/services/builder/internal/dockerfile"
	"github.com/strata-build/strata/services/builder/internal/image"
)

// Kind says how a step is carried out.
type Kind int

const (
	KindMeta    Kind = iota // changes the config only: an empty layer
	KindRun                 // runs a process in the sandbox
	KindCopy                // COPY or ADD
	KindWorkdir             // WORKDIR: creates the directory
)

// Plan is a build worked out before anything runs: the stages the target
// needs, each step with its expanded instruction, the config it leaves and
// its cache key. Everything a key depends on is known up front, so one
// cache lookup serves the whole build.
//
// A Plan is a value: nothing changes it once Make returned it, and running
// it keeps what it learns (container IDs, a COPY --from's source hash) to
// itself.
type Plan struct {
	Stages []*Stage
	// Total is the number of steps Docker counts ("Step N/Total").
	Total int
	// Warnings are shown once the build succeeded.
	Warnings []string
}

// Stage is one stage of a plan.
type Stage struct {
	Index int
	Name  string
	// Exactly one of these is the base: an image, an earlier stage, or
	// neither for scratch.
	BaseImage *image.Image
	BaseStage *Stage
	BaseName  string
	FromText  string // the FROM instruction as written
	FromKey   digest.Digest
	Number    int // the FROM's step number
	Steps     []*Step
	// Config is the stage's base config, as FROM leaves it.
	Config *image.ContainerConfig
}

// LastKey is the key of the stage's result.
func (s *Stage) LastKey() digest.Digest {
	if len(s.Steps) == 0 {
		return s.FromKey
	}
	return s.Steps[len(s.Steps)-1].Key
}

// Step is one instruction of a plan.
type Step struct {
	Number  int  // "Step N/M"; triggers share their FROM's number
	Trigger bool // an ONBUILD trigger of the base image
	Text    string
	Line    int
	Kind    Kind
	Cmd     instructions.Command

	Config          *image.ContainerConfig // the image's config after the step
	ContainerConfig *image.ContainerConfig // its container_config
	Author          string
	Args            []string // build args in scope, for the key
	Run             *dockerfile.Run
	Mounts          []*Mount // a RUN's --mount options, resolved
	Copy            *Copy
	Workdir         string
	Key             digest.Digest
	// LinkKey is a COPY or ADD --link step's key of its layer alone: it
	// names what the step copies and not the steps below (see linkKey),
	// so a record of it serves the step over any parent. Empty for other
	// steps.
	LinkKey digest.Digest
}

// CreatedBy is the step's history text.
func (s *Step) CreatedBy() string { return strings.Join(s.ContainerConfig.Cmd, " ") }

// FromElsewhere reports whether the step copies from another stage or an
// image, whose history row Docker writes from the copy's own command.
func (s *Step) FromElsewhere() bool {
	return s.Copy != nil && (s.Copy.FromStage != nil || s.Copy.FromImage != nil)
}

// RunsContainer reports whether Docker's classic builder runs a container
// for the step (and prints "Running in").
func (s *Step) RunsContainer() bool { return s.Kind != KindCopy }

// Copy is a resolved COPY or ADD.
type Copy struct {
	Add       bool
	FromStage *Stage
	FromImage *image.Image
	Paths     []string // source paths as written (expanded), for --from
	Sources   []Source
	Dest      string // absolute destination
	DestText  string // the destination as written, for history
	DestDir   bool   // the destination is a directory (ends in "/" or many sources)
	Chown     string
	Chmod     *fs.FileMode
	// ChmodSymbolic is a --chmod in chmod(1)'s symbolic form (u+x,
	// go-w, a=rX), applied to each entry's own mode; chmodSet is it
	// parsed.
	ChmodSymbolic string
	chmodSet      *mode.Set
	// Exclude are the --exclude patterns, and Excluder what they leave
	// out of each source.
	Exclude  []string
	Excluder *Excluder
	// Parents is COPY --parents: each source is a directory (the context
	// root, a --from root, or what a "/./" ends) whose entries the source's
	// pattern selects, copied below Dest at their paths relative to it.
	Parents bool
	// Link is COPY or ADD --link (without --chmod, as BuildKit links
	// only then): the copy is made into an empty root and its layer put
	// over the ones below.
	Link    bool
	Hash    string // "file:…", "dir:…" or "multi:…", for history
	walk    func(dir string, fn func(*buildctx.Entry)) error
	context *buildctx.Context
}

// Mode is the permission and special bits an entry of mode m gets:
// --chmod's, octal or applied to m as BuildKit applies a symbolic mode
// (X sets x for a directory or what some x is set for already), or m's
// own. A nil Copy has no --chmod.
func (cp *Copy) Mode(m fs.FileMode) fs.FileMode {
	special := fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky
	switch {
	case cp == nil:
	case cp.Chmod != nil:
		return *cp.Chmod
	case cp.chmodSet != nil:
		m = cp.chmodSet.Apply(m)
	}
	return m.Perm() | m&special
}

// DirMode is the mode of the directories a COPY creates above what it
// copies: 0755 as Docker creates them, or an octal --chmod's permission
// bits, as BuildKit creates them. A nil Copy has no --chmod.
func (cp *Copy) DirMode() fs.FileMode {
	if cp != nil && cp.Chmod != nil {
		return cp.Chmod.Perm()
	}
	return 0o755
}

// Source is one top-level source of a COPY or ADD from the context (or a
// heredoc or URL): the entry and everything under it lands at Dest.
type Source struct {
	Src    string // what the instruction names, for messages
	Entry  *buildctx.Entry
	Data   []byte // heredoc content
	Name   string // heredoc or URL file name
	Unpack bool   // ADD of a local archive: extracted, not copied
	// Include is a COPY --parents source's pattern: what of the
	// directory Entry is copied, relative to it ("" for everything).
	Include string
	// Checksum is an ADD --checksum URL source's digest: its download
	// waits for the step to run (Copy.Fetch), so a cache hit never
	// fetches it, and until then Entry stands for it as the key sees it.
	Checksum digest.Digest
	// Checkout is the tree Entry (its root) is of for an ADD of a Git
	// repository, in place of the build context; Commit is the commit it
	// holds.
	Checkout *buildctx.Context
	Commit   string
}

// Tree is the tree f's Entry is of: its Checkout, or the build context.
func (f Source) Tree(build *buildctx.Context) *buildctx.Context {
	if f.Checkout != nil {
		return f.Checkout
	}
	return build
}
