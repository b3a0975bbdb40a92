package archive

import (
	"fmt"
	"path"
	"strconv"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/dockerfile"
	"github.com/strata-build/strata/services/builder/internal/image"
)

// applyChanges applies `docker import --change` instructions to cfg, in
// order, as Docker does: each is one Dockerfile line, parsed with the
// reference grammar, its variables expanded against the config's Env.
// Only instructions that change the config are allowed.
func applyChanges(cfg *image.ContainerConfig, changes []string) error {
	lex := shell.NewLex('\\')
	cmdSet := false
	for _, change := range changes {
		res, err := parser.Parse(strings.NewReader(change))
		if err != nil {
			return errdefs.InvalidArgument("--change %q: %v", change, err)
		}
		if len(res.AST.Children) != 1 {
			return errdefs.InvalidArgument("--change %q: want exactly one instruction", change)
		}
		node := res.AST.Children[0]
		cmd, err := dockerfile.ParseInstruction(node)
		if err != nil {
			return errdefs.InvalidArgument("--change %q: %v", change, err)
		}
		if ex, ok := cmd.(instructions.SupportsSingleWordExpansion); ok {
			env := shell.EnvsFromSlice(cfg.Env)
			if err := ex.Expand(func(word string) (string, error) {
				s, _, err := lex.ProcessWord(word, env)
				return s, err
			}); err != nil {
				return errdefs.InvalidArgument("--change %q: %v", change, err)
			}
		}
		switch c := cmd.(type) {
		case *instructions.CmdCommand:
			cfg.Cmd = cmdLine(c.ShellDependantCmdLine)
			cmdSet = true
		case *instructions.EntrypointCommand:
			cfg.Entrypoint = cmdLine(c.ShellDependantCmdLine)
			if !cmdSet {
				// As in a Dockerfile: ENTRYPOINT resets a CMD set before this build.
				cfg.Cmd = nil
			}
		case *instructions.EnvCommand:
			for _, kv := range c.Env {
				cfg.Env = setEnv(cfg.Env, kv.Key, kv.Value)
			}
		case *instructions.ExposeCommand:
			for _, p := range c.Ports {
				ports, err := expandPort(p)
				if err != nil {
					return errdefs.InvalidArgument("--change %q: %v", change, err)
				}
				if cfg.ExposedPorts == nil {
					cfg.ExposedPorts = map[string]struct{}{}
				}
				for _, port := range ports {
					cfg.ExposedPorts[port] = struct{}{}
				}
			}
		case *instructions.LabelCommand:
			if cfg.Labels == nil {
				cfg.Labels = map[string]string{}
			}
			for _, kv := range c.Labels {
				cfg.Labels[kv.Key] = kv.Value
			}
		case *instructions.UserCommand:
			cfg.User = c.User
		case *instructions.WorkdirCommand:
			p := c.Path
			if !path.IsAbs(p) {
				p = path.Join("/", cfg.WorkingDir, p)
			}
			cfg.WorkingDir = p
		case *instructions.VolumeCommand:
			if cfg.Volumes == nil {
				cfg.Volumes = map[string]struct{}{}
			}
			for _, v := range c.Volumes {
				if v = strings.TrimSpace(v); v == "" {
					return errdefs.InvalidArgument("--change %q: VOLUME specified can not be an empty string", change)
				}
				cfg.Volumes[v] = struct{}{}
			}
		case *instructions.StopSignalCommand:
			cfg.StopSignal = c.Signal
		case *instructions.OnbuildCommand:
			cfg.OnBuild = append(cfg.OnBuild, c.Expression)
		default:
			return errdefs.InvalidArgument("--change %q: %s is not a valid change command; use CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, USER, VOLUME, WORKDIR or STOPSIGNAL",
				change, strings.ToUpper(node.Value)).WithReason("INVALID_CHANGE")
		}
	}
	return nil
}

func cmdLine(c instructions.ShellDependantCmdLine) []string {
	if c.PrependShell {
		return []string{"/bin/sh", "-c", strings.Join(c.CmdLine, " ")}
	}
	return append([]string{}, c.CmdLine...)
}

func setEnv(env []string, key, value string) []string {
	for i, e := range env {
		if k, _, _ := strings.Cut(e, "="); k == key {
			env[i] = key + "=" + value
			return env
		}
	}
	return append(env, key+"="+value)
}

// expandPort turns an EXPOSE argument ("80", "53/udp", "8000-8002/tcp")
// into Docker's "port/proto" keys.
func expandPort(spec string) ([]string, error) {
	port, proto, _ := strings.Cut(spec, "/")
	if proto == "" {
		proto = "tcp"
	}
	proto = strings.ToLower(proto)
	if proto != "tcp" && proto != "udp" && proto != "sctp" {
		return nil, fmt.Errorf("invalid proto %q in port %q", proto, spec)
	}
	lo, hi, isRange := strings.Cut(port, "-")
	start, err := strconv.ParseUint(lo, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("invalid port %q", spec)
	}
	end := start
	if isRange {
		if end, err = strconv.ParseUint(hi, 10, 16); err != nil || end < start {
			return nil, fmt.Errorf("invalid port range %q", spec)
		}
	}
	var out []string
	for p := start; p <= end; p++ {
		out = append(out, fmt.Sprintf("%d/%s", p, proto))
	}
	return out, nil
}
