package dockerfile

import (
	"slices"
	"strconv"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/shell"

	"github.com/strata-build/strata/lib/errdefs"
)

// Lex returns a shell lexer with the Dockerfile's escape token.
func (df *Dockerfile) Lex() *shell.Lex { return shell.NewLex(df.EscapeToken) }

// DeclareMetaArgs declares in args BuildKit's automatic platform args
// (AutomaticArgs, with target the stage to build, "" for the last) and the
// Dockerfile's meta args (ARGs before the first FROM), expanding their
// defaults as the classic builder does.
func (df *Dockerfile) DeclareMetaArgs(args *BuildArgs, target string) error {
	if target == "" {
		target = df.Stages[len(df.Stages)-1].Name
	}
	args.AddAutomatic(AutomaticArgs(target))
	lex := df.Lex()
	for i := range df.MetaArgs {
		meta := &df.MetaArgs[i]
		for _, a := range meta.Args {
			v := a.Value
			if v != nil {
				env := args.Meta()
				for k, o := range args.options {
					if o != nil {
						env = append(env, k+"="+*o)
					}
				}
				x, err := expandWord(lex, *v, env)
				if err != nil {
					return Errorf(meta, "ARG: %v", err)
				}
				v = &x
			}
			args.AddMeta(a.Key, v)
		}
	}
	return nil
}

// StageIndex returns the index of the stage a name refers to: a stage name
// (case-insensitive) or a number, among the stages before `before`. ok is
// false when name is neither, and so names an image.
func (df *Dockerfile) StageIndex(name string, before int) (int, bool, error) {
	for i, s := range df.Stages {
		if s.Name != "" && strings.EqualFold(s.Name, name) {
			if i >= before {
				return 0, false, errdefs.InvalidArgument("stage %q is used before it is defined", name)
			}
			return i, true, nil
		}
	}
	if n, err := strconv.Atoi(name); err == nil {
		if n < 0 || n >= before {
			return 0, false, errdefs.InvalidArgument("no stage with index %d before this one", n)
		}
		return n, true, nil
	}
	return 0, false, nil
}

// Target returns the index of the stage to build: the named one, or the
// last when target is empty.
func (df *Dockerfile) Target(target string) (int, error) {
	if target == "" {
		return len(df.Stages) - 1, nil
	}
	for i, s := range df.Stages {
		if strings.EqualFold(s.Name, target) {
			return i, nil
		}
	}
	return 0, errdefs.InvalidArgument("target stage %q could not be found", target)
}

// BaseName returns the expanded base of a stage's FROM.
func (df *Dockerfile) BaseName(i int, args *BuildArgs) (string, error) {
	s := df.Stages[i]
	name, err := ExpandMeta(df.Lex(), args, s.BaseName)
	if err != nil {
		return "", errdefs.InvalidArgument("Dockerfile:%d: FROM: %v", s.Line, err)
	}
	if name == "" {
		return "", errdefs.InvalidArgument("Dockerfile:%d: FROM needs a base image; %q expands to nothing", s.Line, s.BaseName)
	}
	return name, nil
}

// Needed returns, in order, the stages the target needs: the target, the
// stages its FROM and COPY --from name, and theirs. Stages it does not need
// are not built.
func (df *Dockerfile) Needed(target int, args *BuildArgs) ([]int, error) {
	need := make([]bool, len(df.Stages))
	var visit func(i int) error
	visit = func(i int) error {
		if need[i] {
			return nil
		}
		need[i] = true
		base, err := df.BaseName(i, args)
		if err != nil {
			return err
		}
		if j, ok, err := df.StageIndex(base, i); err != nil {
			return errdefs.InvalidArgument("Dockerfile:%d: FROM %s: %v", df.Stages[i].Line, base, err)
		} else if ok {
			if err := visit(j); err != nil {
				return err
			}
		}
		for _, cmd := range df.Stages[i].Commands {
			if r, ok := cmd.(*instructions.RunCommand); ok {
				for _, from := range MountFroms(r) {
					j, ok, err := df.StageIndex(from, i)
					if err != nil {
						return Errorf(r, "RUN --mount from=%s: %v", from, err)
					}
					if ok {
						if err := visit(j); err != nil {
							return err
						}
					}
				}
				continue
			}
			c, ok := cmd.(*instructions.CopyCommand)
			if !ok || c.From == "" {
				continue
			}
			from, err := ExpandMeta(df.Lex(), args, c.From)
			if err != nil {
				return Errorf(c, "COPY --from: %v", err)
			}
			j, ok, err := df.StageIndex(from, i)
			if err != nil {
				return Errorf(c, "COPY --from=%s: %v", from, err)
			}
			if ok {
				if err := visit(j); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := visit(target); err != nil {
		return nil, err
	}
	var out []int
	for i, n := range need {
		if n {
			out = append(out, i)
		}
	}
	return out, nil
}

// Images returns the images the given stages name rather than a stage —
// their FROM, COPY --from and RUN --mount from= — each once, in order,
// so that they can be fetched before the planning that needs them. A
// name that does not expand is left out: planning the stage reports it.
func (df *Dockerfile) Images(stages []int, args *BuildArgs) []string {
	var out []string
	add := func(name string, stage int) {
		if name == "" || strings.EqualFold(name, "scratch") || slices.Contains(out, name) {
			return
		}
		if _, ok, err := df.StageIndex(name, stage); err == nil && !ok {
			out = append(out, name)
		}
	}
	for _, i := range stages {
		if base, err := df.BaseName(i, args); err == nil {
			add(base, i)
		}
		for _, cmd := range df.Stages[i].Commands {
			switch c := cmd.(type) {
			case *instructions.RunCommand:
				for _, from := range MountFroms(c) {
					if !strings.Contains(from, "$") { // expanded in the stage's scope
						add(from, i)
					}
				}
			case *instructions.CopyCommand:
				if c.From == "" {
					continue
				}
				if from, err := ExpandMeta(df.Lex(), args, c.From); err == nil {
					add(from, i)
				}
			}
		}
	}
	return out
}
