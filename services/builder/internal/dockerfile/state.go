package dockerfile

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/services/builder/internal/image"
)

// MaxExpansion bounds the result of expanding one word. ARG and ENV values
// can refer to each other, so a short Dockerfile could otherwise double a
// value on every line until the builder runs out of memory.
const MaxExpansion = 1 << 20

// State is the state of one build stage as instructions are dispatched: the
// config the next image gets, the build arguments in scope and the
// maintainer. Dispatching an instruction changes it the way Docker's classic
// builder does.
type State struct {
	// Config is the config the stage's next image gets.
	Config *image.ContainerConfig
	// Args are the build arguments in scope.
	Args *BuildArgs
	// Maintainer is the MAINTAINER value, the Author of later images.
	Maintainer string

	lex    *shell.Lex
	cmdSet bool
}

// NewState returns the state of a stage that starts from a base image with
// config base (nil for scratch), as Docker's classic builder begins a stage:
// the base config copied, stdin settings cleared and Docker's default PATH
// added when the base sets none.
func NewState(base *image.ContainerConfig, args *BuildArgs, escapeToken rune) *State {
	cfg := base.Clone()
	if cfg == nil {
		cfg = &image.ContainerConfig{}
	}
	cfg.OpenStdin = false
	cfg.StdinOnce = false
	if _, ok := LookupEnv(cfg.Env, "PATH"); !ok {
		cfg.Env = append(cfg.Env, DefaultPathEnv)
	}
	return &State{Config: cfg, Args: args, lex: shell.NewLex(escapeToken)}
}

// Env returns the variables visible to expansion and to RUN: the config's
// Env followed by the build arguments in scope that Env does not set.
func (s *State) Env() []string {
	return append(slices.Clone(s.Config.Env), s.Args.InScope(s.Config.Env)...)
}

// ExpandMeta expands a FROM line's base name with the meta args.
func ExpandMeta(lex *shell.Lex, args *BuildArgs, word string) (string, error) {
	return expandWord(lex, word, args.Meta())
}

func expandWord(lex *shell.Lex, word string, env []string) (string, error) {
	if err := checkExpansion(word, env); err != nil {
		return "", err
	}
	out, _, err := lex.ProcessWord(word, shell.EnvsFromSlice(env))
	if err != nil {
		return "", err
	}
	return out, nil
}

// checkExpansion refuses a word whose expansion could pass MaxExpansion.
func checkExpansion(word string, env []string) error {
	if bound := expansionBound(word, env); bound > MaxExpansion {
		return fmt.Errorf("expanding %q could make more than %d bytes, the limit", shorten(word, 40), MaxExpansion)
	}
	return nil
}

var (
	// varRef matches a variable a word names, as the lexer reads names.
	varRef = regexp.MustCompile(`\$\{?(\p{Nd}+|[@*#?$!-]|[\p{L}_][\p{L}\p{Nd}_]*)`)
	// patternSub matches the start of a ${name/pattern/replacement}.
	patternSub = regexp.MustCompile(`\$\{(\p{Nd}+|[@*#?$!-]|[\p{L}_][\p{L}\p{Nd}_]*)?/`)
)

// expansionBound is an upper bound of the length of word once expanded:
// its own length plus, for every "$", the longest value of the variables
// it names; times 2*longest+2 for every pattern substitution, which puts
// its replacement in place of every match (there can be one at every byte
// of the value), the replacement being a regexp template in which "$0"
// copies the match.
func expansionBound(word string, env []string) int {
	n := strings.Count(word, "$")
	if n == 0 {
		return lexedLen(word)
	}
	names := map[string]bool{"": true} // ${/a/b} and ${+x} read the variable ""
	for _, m := range varRef.FindAllStringSubmatch(word, -1) {
		names[m[1]] = true
	}
	longest := 0
	for _, e := range env {
		if k, v, _ := cut(e); names[k] {
			longest = max(longest, lexedLen(v))
		}
	}
	bound := lexedLen(word) + n*longest
	for range patternSub.FindAllStringIndex(word, -1) {
		if bound > MaxExpansion {
			break // the product could overflow
		}
		bound *= 2*longest + 2
	}
	return bound
}

// lexedLen bounds the length of s once the lexer has read it: it reads a
// byte that is not UTF-8 as U+FFFD, three bytes.
func lexedLen(s string) int {
	if utf8.ValidString(s) {
		return len(s)
	}
	return len(s) * utf8.RuneLen(utf8.RuneError)
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// Expand expands the variables of an instruction in place, as the classic
// builder does before dispatching it. RUN, CMD, ENTRYPOINT, HEALTHCHECK,
// SHELL and ONBUILD are not expanded (the shell or a later build does it);
// EXPOSE is expanded word by word when applied.
func (s *State) Expand(cmd instructions.Command) error {
	ex, ok := cmd.(instructions.SupportsSingleWordExpansion)
	if !ok {
		return nil
	}
	if _, isRun := cmd.(*instructions.RunCommand); isRun {
		return nil
	}
	env := s.Env()
	err := ex.Expand(func(word string) (string, error) { return expandWord(s.lex, word, env) })
	if err != nil {
		return Errorf(cmd, "%s: %v", strings.ToUpper(cmd.Name()), err)
	}
	if raw, ok := cmd.(instructions.SupportsSingleWordExpansionRaw); ok {
		if err := raw.ExpandRaw(func(word string) (string, error) { return expandWord(s.lex, word, env) }); err != nil {
			return Errorf(cmd, "%s: %v", strings.ToUpper(cmd.Name()), err)
		}
	}
	return nil
}

// Commit describes the image a dispatched instruction makes, as the classic
// builder records it.
type Commit struct {
	// ContainerCmd is the Cmd of the step's container_config; joined with
	// spaces it is the history entry's created_by.
	ContainerCmd []string
	// WorkingDir is set for WORKDIR steps, whose directory the builder
	// creates in the image.
	WorkingDir string
}

// CreatedBy returns the history text of the commit.
func (c Commit) CreatedBy() string { return strings.Join(c.ContainerCmd, " ") }

// nop returns the container Cmd of a metadata-only step: the shell,
// "#(nop) " and the comment, as Docker's withCmdComment writes it.
func (s *State) nop(comment string) Commit {
	return Commit{ContainerCmd: append(ShellOf(s.Config), "#(nop) ", comment)}
}

// NopString returns the container Cmd of a COPY, ADD or WORKDIR step: the
// shell and "#(nop) <comment>" as one word, as Docker's
// withCmdCommentString writes it.
func (s *State) NopString(comment string) []string {
	return append(ShellOf(s.Config), "#(nop) "+comment)
}

// Apply dispatches an instruction that changes only the config (and, for
// ARG, the build arguments), after Expand. It returns the commit the step
// records. RUN, COPY, ADD and WORKDIR have their own methods.
func (s *State) Apply(cmd instructions.Command) (Commit, error) {
	cfg := s.Config
	switch c := cmd.(type) {
	case *instructions.EnvCommand:
		var msg strings.Builder
		msg.WriteString("ENV")
		for _, kv := range c.Env {
			msg.WriteString(" " + kv.String())
			cfg.Env = SetEnv(cfg.Env, kv.Key, kv.Value)
		}
		return s.nop(msg.String()), nil
	case *instructions.MaintainerCommand:
		s.Maintainer = c.Maintainer
		return s.nop("MAINTAINER " + c.Maintainer), nil
	case *instructions.LabelCommand:
		if cfg.Labels == nil {
			cfg.Labels = map[string]string{}
		}
		msg := "LABEL"
		for _, kv := range c.Labels {
			cfg.Labels[kv.Key] = kv.Value
			msg += " " + kv.String()
		}
		return s.nop(msg), nil
	case *instructions.ExposeCommand:
		var words []string
		env := s.Env()
		for _, p := range c.Ports {
			if err := checkExpansion(p, env); err != nil {
				return Commit{}, Errorf(cmd, "EXPOSE: %v", err)
			}
			ws, err := s.lex.ProcessWords(p, shell.EnvsFromSlice(env))
			if err != nil {
				return Commit{}, Errorf(cmd, "EXPOSE: %v", err)
			}
			words = append(words, ws...)
		}
		ports, err := parsePorts(words)
		if err != nil {
			return Commit{}, Errorf(cmd, "EXPOSE: %v", err)
		}
		if cfg.ExposedPorts == nil {
			cfg.ExposedPorts = map[string]struct{}{}
		}
		for _, p := range ports {
			cfg.ExposedPorts[p] = struct{}{}
		}
		return s.nop("EXPOSE " + strings.Join(words, " ")), nil
	case *instructions.UserCommand:
		cfg.User = c.User
		return s.nop("USER " + c.User), nil
	case *instructions.VolumeCommand:
		if cfg.Volumes == nil {
			cfg.Volumes = map[string]struct{}{}
		}
		for _, v := range c.Volumes {
			if v == "" {
				return Commit{}, Errorf(cmd, "VOLUME specified can not be an empty string")
			}
			cfg.Volumes[v] = struct{}{}
		}
		return s.nop(fmt.Sprintf("VOLUME %v", c.Volumes)), nil
	case *instructions.StopSignalCommand:
		if err := checkSignal(c.Signal); err != nil {
			return Commit{}, Errorf(cmd, "STOPSIGNAL: %v", err)
		}
		cfg.StopSignal = c.Signal
		return s.nop("STOPSIGNAL " + c.Signal), nil
	case *instructions.ArgCommand:
		var msg strings.Builder
		msg.WriteString("ARG ")
		for i, a := range c.Args {
			if i > 0 {
				msg.WriteString(" ")
			}
			msg.WriteString(a.Key)
			if a.Value != nil {
				msg.WriteString("=" + *a.Value)
			}
			s.Args.Add(a.Key, a.Value)
		}
		return s.nop(msg.String()), nil
	case *instructions.OnbuildCommand:
		cfg.OnBuild = append(cfg.OnBuild, c.Expression)
		return s.nop("ONBUILD " + c.Expression), nil
	case *instructions.CmdCommand:
		cfg.Cmd, cfg.ArgsEscaped = s.resolveCmdLine(c.ShellDependantCmdLine)
		if len(c.CmdLine) != 0 {
			s.cmdSet = true
		}
		return s.nop(fmt.Sprintf("CMD %q", cfg.Cmd)), nil
	case *instructions.EntrypointCommand:
		cfg.Entrypoint, cfg.ArgsEscaped = s.resolveCmdLine(c.ShellDependantCmdLine)
		if len(cfg.Entrypoint) == 0 {
			cfg.Entrypoint = nil // Docker 20.10 stores ENTRYPOINT [] as none (null)
		}
		if !s.cmdSet {
			cfg.Cmd = nil
		}
		return s.nop(fmt.Sprintf("ENTRYPOINT %q", cfg.Entrypoint)), nil
	case *instructions.HealthCheckCommand:
		h := c.Health
		cfg.Healthcheck = &image.HealthConfig{
			Test: slices.Clone(h.Test), Interval: h.Interval, Timeout: h.Timeout,
			StartPeriod: h.StartPeriod, StartInterval: h.StartInterval, Retries: h.Retries,
		}
		return s.nop("HEALTHCHECK " + healthString(cfg.Healthcheck)), nil
	case *instructions.ShellCommand:
		cfg.Shell = slices.Clone(c.Shell)
		return s.nop(fmt.Sprintf("SHELL %v", cfg.Shell)), nil
	}
	return Commit{}, Errorf(cmd, "%s does not only change the config", strings.ToUpper(cmd.Name()))
}

// healthString formats a health check as Docker 20.10's classic builder
// does in history (fmt's %q of its HealthConfig, which has no
// StartInterval).
func healthString(h *image.HealthConfig) string {
	q := func(d time.Duration) string { return strconv.Quote(d.String()) }
	return fmt.Sprintf("&{%q %s %s %s %s}", h.Test, q(h.Interval), q(h.Timeout), q(h.StartPeriod), strconv.QuoteRune(rune(h.Retries)))
}

// resolveCmdLine returns the command of a CMD, ENTRYPOINT or RUN: the shell
// form prefixed with the shell, the exec form as written.
func (s *State) resolveCmdLine(c instructions.ShellDependantCmdLine) ([]string, bool) {
	if len(c.CmdLine) == 0 {
		return []string{}, s.Config.ArgsEscaped
	}
	if c.PrependShell {
		return append(ShellOf(s.Config), c.CmdLine...), false
	}
	return slices.Clone(c.CmdLine), false
}

// Run is a resolved RUN step.
type Run struct {
	// Args is the process to run.
	Args []string
	// Env is the process's environment: the config's Env and the build
	// arguments in scope.
	Env []string
	// Secrets are the step's secret mounts.
	Secrets []SecretMount
	// SSH are the step's ssh mounts.
	SSH []SSHMount
	// Commit is what the step records: its container Cmd has the build
	// arguments in scope as "|N NAME=value …" before the command, as Docker
	// writes RUN history.
	Commit Commit
	// Network is the step's RUN --network: "none" or "host", or "" for the
	// build's network (no flag, or --network=default).
	Network string
	// Mounts are the step's cache, tmpfs and bind mounts, expanded, checked
	// and with BuildKit's defaults filled in (see fsMount).
	Mounts []*instructions.Mount
}

// Run resolves a RUN instruction.
func (s *State) Run(c *instructions.RunCommand) (Run, error) {
	line := c.ShellDependantCmdLine
	if len(line.Files) > 0 {
		// Heredocs: BuildKit's way. A script of one heredoc is handed to the
		// shell as the command; anything else is reassembled for the shell.
		if len(line.CmdLine) != 1 || !line.PrependShell {
			return Run{}, Errorf(c, "RUN: heredocs need the shell form")
		}
		full := line.CmdLine[0]
		if h, _ := parser.ParseHeredoc(full); h != nil && len(line.Files) == 1 {
			full = line.Files[0].Data
		} else {
			for _, f := range line.Files {
				full += "\n" + f.Data + f.Name
			}
		}
		line = instructions.ShellDependantCmdLine{CmdLine: []string{full}, PrependShell: true}
	}
	args, _ := s.resolveCmdLine(line)
	if len(args) == 0 {
		return Run{}, Errorf(c, "RUN needs a command")
	}
	inScope := s.Args.InScope(s.Config.Env)
	env := append(slices.Clone(s.Config.Env), inScope...)
	rm, err := s.runMounts(c, env)
	if err != nil {
		return Run{}, err
	}
	save := args
	if hist := s.Args.forHistory(inScope); len(hist) > 0 {
		save = append(append([]string{fmt.Sprintf("|%d", len(hist))}, hist...), args...)
	}
	network := instructions.GetNetwork(c)
	if network == instructions.NetworkDefault {
		network = ""
	}
	if len(rm.ssh) > 0 && !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "SSH_AUTH_SOCK=") }) {
		// As BuildKit's exec: the first agent's socket, unless the
		// config or a build argument sets the variable.
		env = append(env, "SSH_AUTH_SOCK="+rm.ssh[0].Target)
	}
	return Run{
		Args:    args,
		Env:     env,
		Secrets: rm.secrets,
		SSH:     rm.ssh,
		Commit:  Commit{ContainerCmd: save},
		Network: network,
		Mounts:  rm.fs,
	}, nil
}

// Workdir dispatches WORKDIR: the new working directory, relative paths
// taken from the current one.
func (s *State) Workdir(c *instructions.WorkdirCommand) (Commit, error) {
	if c.Path == "" {
		return Commit{}, Errorf(c, "WORKDIR needs a path")
	}
	dir := c.Path
	if !path.IsAbs(dir) {
		dir = path.Join("/", s.Config.WorkingDir, dir)
	}
	s.Config.WorkingDir = dir
	return Commit{ContainerCmd: s.NopString("WORKDIR " + dir), WorkingDir: dir}, nil
}

// parsePorts turns EXPOSE words ("80", "53/udp", "8000-8002/tcp") into
// Docker's port keys, "80/tcp".
func parsePorts(words []string) ([]string, error) {
	var out []string
	for _, w := range words {
		port, proto, _ := strings.Cut(w, "/")
		if proto == "" {
			proto = "tcp"
		}
		proto = strings.ToLower(proto)
		if proto != "tcp" && proto != "udp" && proto != "sctp" {
			return nil, fmt.Errorf("invalid proto %q in %q", proto, w)
		}
		if strings.Contains(port, ":") {
			return nil, fmt.Errorf("%q: EXPOSE takes container ports only, not host:container mappings", w)
		}
		lo, hi, isRange := strings.Cut(port, "-")
		start, err := portNumber(lo)
		if err != nil {
			return nil, fmt.Errorf("invalid containerPort: %s", w)
		}
		end := start
		if isRange {
			if end, err = portNumber(hi); err != nil || end < start {
				return nil, fmt.Errorf("invalid containerPort: %s", w)
			}
		}
		for p := start; p <= end; p++ {
			out = append(out, strconv.Itoa(p)+"/"+proto)
		}
	}
	return out, nil
}

func portNumber(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 65535 {
		return 0, fmt.Errorf("invalid port %q", s)
	}
	return n, nil
}

// checkSignal accepts what Docker's signal.ParseSignal accepts: a number or
// a name with or without "SIG".
func checkSignal(s string) error {
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 || n > 64 {
			return fmt.Errorf("invalid signal: %s", s)
		}
		return nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if unix.SignalNum(name) == 0 && !strings.HasPrefix(name, "SIGRTMIN") && !strings.HasPrefix(name, "SIGRTMAX") {
		return fmt.Errorf("invalid signal: %s", s)
	}
	return nil
}
