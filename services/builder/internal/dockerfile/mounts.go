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
	// it, a missing secret means no file and no variable, as in BuildKit.
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

// runMounts expands a RUN's --mount flags with env (the build arguments in
// scope and the config's variables, as BuildKit expands them) and resolves
// them. Only secret mounts are implemented; other types are refused.
func (s *State) runMounts(c *instructions.RunCommand, env []string) ([]SecretMount, error) {
	if !hasFlag(c.FlagsUsed, "mount") {
		return nil, nil
	}
	if err := c.Expand(func(word string) (string, error) { return expandWord(s.lex, word, env) }); err != nil {
		return nil, Errorf(c, "RUN --mount: %v", err)
	}
	var out []SecretMount
	for _, m := range instructions.GetMounts(c) {
		if m.Type != instructions.MountTypeSecret {
			return nil, Errorf(c, "RUN --mount=type=%s is not supported by this builder", m.Type)
		}
		sm, err := s.secretMount(c, m)
		if err != nil {
			return nil, err
		}
		for _, prev := range out {
			if sm.Target != "" && prev.Target == sm.Target {
				return nil, Errorf(c, "RUN --mount: two secrets mounted at %s", sm.Target)
			}
		}
		out = append(out, sm)
	}
	return out, nil
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
