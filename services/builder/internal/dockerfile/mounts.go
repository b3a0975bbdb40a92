package dockerfile

import (
	"path"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

// Mount types RUN --mount takes on this builder. BuildKit's grammar knows
// more (secret, ssh); checkMountTypes refuses those.
var mountTypes = map[instructions.MountType]bool{
	instructions.MountTypeCache: true,
	instructions.MountTypeTmpfs: true,
	instructions.MountTypeBind:  true,
}

// checkMountTypes refuses a RUN whose --mount options do not parse or name
// a mount type this builder does not implement. Values are not expanded
// yet: a type given by a variable is checked again by State.Run.
func checkMountTypes(c *instructions.RunCommand) error {
	if err := c.Expand(func(w string) (string, error) { return w, nil }); err != nil {
		return Errorf(c, "RUN --mount: %v", err)
	}
	for _, m := range instructions.GetMounts(c) {
		if !mountTypes[m.Type] {
			return Errorf(c, "RUN --mount=type=%s is not supported by this builder", m.Type)
		}
	}
	return nil
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

// runMounts expands a RUN's --mount options with the variables in scope and
// checks them, and returns them with BuildKit's defaults filled in: an
// absolute target (relative ones are taken from the working directory), a
// cache's id (its target) and sharing (shared), a clean absolute source.
func (s *State) runMounts(c *instructions.RunCommand) ([]*instructions.Mount, error) {
	env := s.Env()
	if err := c.Expand(func(w string) (string, error) { return expandWord(s.lex, w, env) }); err != nil {
		return nil, Errorf(c, "RUN --mount: %v", err)
	}
	mounts := instructions.GetMounts(c)
	targets := map[string]bool{}
	for _, m := range mounts {
		if !mountTypes[m.Type] {
			return nil, Errorf(c, "RUN --mount=type=%s is not supported by this builder", m.Type)
		}
		if m.Target == "" {
			return nil, Errorf(c, "RUN --mount=type=%s: target is required", m.Type)
		}
		if !path.IsAbs(m.Target) {
			m.Target = path.Join("/", s.Config.WorkingDir, m.Target)
		}
		m.Target = path.Clean(m.Target)
		if m.Target == "/" {
			return nil, Errorf(c, "RUN --mount=type=%s,target=/: cannot mount over the root", m.Type)
		}
		if targets[m.Target] {
			return nil, Errorf(c, "RUN --mount: target %s is mounted twice", m.Target)
		}
		targets[m.Target] = true
		m.Source = path.Join("/", m.Source)
		switch m.Type {
		case instructions.MountTypeCache:
			if m.CacheID == "" {
				m.CacheID = m.Target
			}
			if m.CacheSharing == "" {
				m.CacheSharing = instructions.MountSharingShared
			}
			if m.Mode != nil && *m.Mode > 0o7777 {
				return nil, Errorf(c, "RUN --mount=type=cache: mode=%o is not a file mode", *m.Mode)
			}
			if m.From == "" && m.Source != "/" {
				return nil, Errorf(c, "RUN --mount=type=cache: source=%s needs from=", m.Source)
			}
		case instructions.MountTypeTmpfs:
			if m.From != "" || m.Source != "/" {
				return nil, Errorf(c, "RUN --mount=type=tmpfs takes no from or source")
			}
			if m.SizeLimit < 0 {
				return nil, Errorf(c, "RUN --mount=type=tmpfs: size must not be negative")
			}
		case instructions.MountTypeBind:
			if m.CacheID != "" {
				return nil, Errorf(c, "RUN --mount=type=bind takes no id")
			}
		}
		if strings.ContainsRune(m.Target, 0) || strings.ContainsRune(m.Source, 0) {
			return nil, Errorf(c, "RUN --mount: a path holds a NUL byte")
		}
	}
	return mounts, nil
}
