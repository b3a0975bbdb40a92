package dockerfile

import (
	"path"
	"strconv"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

// SecretMount is a RUN --mount=type=secret, resolved as BuildKit's frontend
// resolves it: the secret named ID is given to the step as the file Target
// (when Env is empty or Target was given) and as the variable Env. It holds
// the mount's spec only; the secret's value comes with the build request.
type SecretMount struct {
	ID string
	// Target is the file's absolute path; empty for an env-only secret.
	Target string
	// Env is the variable that holds the value; empty for a file only.
	Env string
	// Required fails the step when the build has no such secret; without
	// it, a missing secret means no file and an empty variable, as in
	// BuildKit.
	Required bool
	// Mode is the file's permission bits (0400 unless given); UID and GID
	// its owner (root unless given).
	Mode     uint32
	UID, GID uint32
}

// DefaultSecretDir is where a secret's file is when the mount names no
// target, as in BuildKit.
const DefaultSecretDir = "/run/secrets"

// Spec is the mount as the step's cache key covers it: every option, never
// the secret's value.
func (m SecretMount) Spec() string {
	return strings.Join([]string{"secret", "id=" + m.ID, "target=" + m.Target, "env=" + m.Env,
		"required=" + strconv.FormatBool(m.Required), "mode=" + strconv.FormatUint(uint64(m.Mode), 8),
		"uid=" + strconv.FormatUint(uint64(m.UID), 10), "gid=" + strconv.FormatUint(uint64(m.GID), 10)}, ",")
}

// SSHMount is a RUN --mount=type=ssh, resolved as BuildKit's frontend
// resolves it: the build's SSH agent named ID is served to the step on the
// unix socket Target. It holds the mount's spec only; the agent is the
// client's, forwarded over the build stream.
type SSHMount struct {
	// ID is the agent's ID ("default" unless given).
	ID string
	// Target is the socket's absolute path (DefaultSSHTarget with the
	// mount's index among the step's ssh mounts unless given).
	Target string
	// Required fails the step when the build forwards no such agent;
	// without it, the mount is skipped, as in BuildKit.
	Required bool
	// Mode is the socket's permission bits (0600 unless given); UID and
	// GID its owner (root unless given).
	Mode     uint32
	UID, GID uint32
}

// DefaultSSHTarget is the socket path of the Nth ssh mount of a step that
// names no target, as in BuildKit.
const DefaultSSHTarget = "/run/buildkit/ssh_agent."

// Spec is the mount as the step's cache key covers it: every option,
// nothing of the agent or its keys.
func (m SSHMount) Spec() string {
	return strings.Join([]string{"ssh", "id=" + m.ID, "target=" + m.Target,
		"required=" + strconv.FormatBool(m.Required), "mode=" + strconv.FormatUint(uint64(m.Mode), 8),
		"uid=" + strconv.FormatUint(uint64(m.UID), 10), "gid=" + strconv.FormatUint(uint64(m.GID), 10)}, ",")
}

// sshMount resolves an ssh mount as BuildKit's dispatchSSH and its LLB
// exec do: the ID defaults to "default", the target to
// /run/buildkit/ssh_agent.N (N the mount's index among the step's ssh
// mounts), the mode to 0600.
func (s *State) sshMount(c *instructions.RunCommand, m *instructions.Mount, n int) (SSHMount, error) {
	if m.Source != "" {
		return SSHMount{}, Errorf(c, "RUN --mount=type=ssh does not support source")
	}
	sm := SSHMount{ID: m.CacheID, Target: m.Target, Required: m.Required, Mode: 0o600}
	if sm.ID == "" {
		sm.ID = "default"
	}
	if sm.Target == "" {
		sm.Target = DefaultSSHTarget + strconv.Itoa(n)
	}
	if !path.IsAbs(sm.Target) {
		sm.Target = path.Join("/", s.Config.WorkingDir, sm.Target)
	}
	sm.Target = path.Clean(sm.Target)
	if sm.Target == "/" || strings.ContainsRune(sm.Target, 0) {
		return SSHMount{}, Errorf(c, "RUN --mount=type=ssh: target=%q is not a socket path", m.Target)
	}
	if m.Mode != nil {
		if *m.Mode > 0o7777 {
			return SSHMount{}, Errorf(c, "RUN --mount=type=ssh: mode %o is not a permission", *m.Mode)
		}
		sm.Mode = uint32(*m.Mode)
	}
	if m.UID != nil {
		sm.UID = uint32(*m.UID)
	}
	if m.GID != nil {
		sm.GID = uint32(*m.GID)
	}
	return sm, nil
}

// runMounts expands a RUN's --mount flags with env (the build arguments in
// scope and the config's variables, as BuildKit expands them) and resolves
// them: secret and ssh mounts, and the cache, tmpfs and bind mounts the
// step's root gets (see fsMount). Other types are refused.
func (s *State) runMounts(c *instructions.RunCommand, env []string) (runMounts, error) {
	var rm runMounts
	if !hasFlag(c.FlagsUsed, "mount") {
		return rm, nil
	}
	if err := c.Expand(func(word string) (string, error) { return expandWord(s.lex, word, env) }); err != nil {
		return rm, Errorf(c, "RUN --mount: %v", err)
	}
	targets := map[string]bool{}
	for _, m := range instructions.GetMounts(c) {
		target := ""
		switch m.Type {
		case instructions.MountTypeSecret:
			sm, err := s.secretMount(c, m)
			if err != nil {
				return rm, err
			}
			rm.secrets = append(rm.secrets, sm)
			target = sm.Target
		case instructions.MountTypeSSH:
			sm, err := s.sshMount(c, m, len(rm.ssh))
			if err != nil {
				return rm, err
			}
			rm.ssh = append(rm.ssh, sm)
			target = sm.Target
		case instructions.MountTypeCache, instructions.MountTypeTmpfs, instructions.MountTypeBind:
			if err := s.fsMount(c, m); err != nil {
				return rm, err
			}
			rm.fs = append(rm.fs, m)
			target = m.Target
		default:
			return rm, Errorf(c, "RUN --mount=type=%s is not supported by this builder", m.Type)
		}
		if target != "" {
			if targets[target] {
				return rm, Errorf(c, "RUN --mount: two mounts at %s", target)
			}
			targets[target] = true
		}
	}
	return rm, nil
}

// runMounts are a RUN's resolved mounts by kind.
type runMounts struct {
	secrets []SecretMount
	ssh     []SSHMount
	fs      []*instructions.Mount
}

// MountFroms returns the from= of a RUN's mounts, as written: stages the
// step needs built before it (or images, or nothing for the context).
func MountFroms(c *instructions.RunCommand) []string {
	var out []string
	for _, m := range instructions.GetMounts(c) {
		if m.From != "" {
			out = append(out, m.From)
		}
	}
	return out
}

// fsMount checks a cache, tmpfs or bind mount and fills in BuildKit's
// defaults: an absolute target (relative ones are taken from the working
// directory), a cache's id (its target as written, cleaned: a relative
// target names the same cache under any working directory, as in
// BuildKit) and sharing (shared), a clean absolute source.
func (s *State) fsMount(c *instructions.RunCommand, m *instructions.Mount) error {
	if m.Target == "" {
		return Errorf(c, "RUN --mount=type=%s: target is required", m.Type)
	}
	if m.Type == instructions.MountTypeCache && m.CacheID == "" {
		m.CacheID = path.Clean(m.Target)
	}
	if !path.IsAbs(m.Target) {
		m.Target = path.Join("/", s.Config.WorkingDir, m.Target)
	}
	m.Target = path.Clean(m.Target)
	if m.Target == "/" {
		return Errorf(c, "RUN --mount=type=%s,target=/: cannot mount over the root", m.Type)
	}
	m.Source = path.Join("/", m.Source)
	switch m.Type {
	case instructions.MountTypeCache:
		if m.CacheSharing == "" {
			m.CacheSharing = instructions.MountSharingShared
		}
		if m.Mode != nil && *m.Mode > 0o7777 {
			return Errorf(c, "RUN --mount=type=cache: mode=%o is not a file mode", *m.Mode)
		}
		if m.From == "" && m.Source != "/" {
			return Errorf(c, "RUN --mount=type=cache: source=%s needs from=", m.Source)
		}
	case instructions.MountTypeTmpfs:
		if m.From != "" || m.Source != "/" {
			return Errorf(c, "RUN --mount=type=tmpfs takes no from or source")
		}
		if m.SizeLimit < 0 {
			return Errorf(c, "RUN --mount=type=tmpfs: size must not be negative")
		}
	case instructions.MountTypeBind:
		if m.CacheID != "" {
			return Errorf(c, "RUN --mount=type=bind takes no id")
		}
	}
	if strings.ContainsRune(m.Target, 0) || strings.ContainsRune(m.Source, 0) {
		return Errorf(c, "RUN --mount: a path holds a NUL byte")
	}
	return nil
}

// secretMount resolves a secret mount as BuildKit's dispatchSecret does: the
// ID defaults to the target's base name, the target to /run/secrets/<id>
// unless the secret goes to a variable only.
func (s *State) secretMount(c *instructions.RunCommand, m *instructions.Mount) (SecretMount, error) {
	sm := SecretMount{ID: m.CacheID, Target: m.Target, Required: m.Required, Mode: 0o400}
	if m.Source != "" {
		sm.ID = m.Source
	}
	if sm.ID == "" {
		if sm.Target == "" {
			return SecretMount{}, Errorf(c, "RUN --mount=type=secret: one of id, source or target is required")
		}
		sm.ID = path.Base(sm.Target)
	}
	if m.Env != nil {
		sm.Env = *m.Env
		if sm.Env == "" {
			sm.Env = sm.ID
		}
		if strings.ContainsAny(sm.Env, "=\x00") {
			return SecretMount{}, Errorf(c, "RUN --mount=type=secret: env=%q is not a variable name", sm.Env)
		}
	} else if sm.Target == "" {
		sm.Target = DefaultSecretDir + "/" + path.Base(sm.ID)
	}
	if sm.Target != "" {
		if !path.IsAbs(sm.Target) {
			sm.Target = path.Join("/", s.Config.WorkingDir, sm.Target)
		}
		sm.Target = path.Clean(sm.Target)
		if sm.Target == "/" {
			return SecretMount{}, Errorf(c, "RUN --mount=type=secret: the target cannot be /")
		}
	}
	if m.Mode != nil {
		if *m.Mode > 0o7777 {
			return SecretMount{}, Errorf(c, "RUN --mount=type=secret: mode %o is not a permission", *m.Mode)
		}
		sm.Mode = uint32(*m.Mode)
	}
	if m.UID != nil {
		sm.UID = uint32(*m.UID)
	}
	if m.GID != nil {
		sm.GID = uint32(*m.GID)
	}
	return sm, nil
}

func hasFlag(flags []string, name string) bool {
	for _, f := range flags {
		if f == name {
			return true
		}
	}
	return false
}
