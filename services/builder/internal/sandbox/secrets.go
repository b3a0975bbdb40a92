package sandbox

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Secret is a build secret given to one process (RUN
// --mount=type=secret): as the read-only file Target, as the variable Env,
// or both. Its value stays in memory and in a tmpfs the runner mounts for
// the run and unmounts after it: never on disk. The mount point of the
// file is the caller's to make and remove, as a mount's.
type Secret struct {
	// Target is the file's absolute path in the container; empty for a
	// variable only.
	Target string
	// Env is the variable's name; empty for a file only.
	Env  string
	Data []byte
	// Mode is the file's permission bits; UID and GID its owner.
	Mode     fs.FileMode
	UID, GID uint32
}

// secretsTmpfs mounts a tmpfs on the run's bundle directory, which then
// holds its config (the secrets' variables are in the process's
// environment) and the secrets' files, and writes the files. It returns
// the bind mounts that put them at their targets, read-only. The caller
// unmounts the bundle once runc deleted the container.
func secretsTmpfs(bundle string, secrets []Secret) ([]specs.Mount, error) {
	size := int64(64 << 20)
	for _, s := range secrets {
		size += int64(len(s.Data)) + 4096
	}
	opts := "mode=0700,size=" + strconv.FormatInt(size, 10)
	if err := unix.Mount("tmpfs", bundle, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, opts); err != nil {
		return nil, fmt.Errorf("mounting the secrets' tmpfs: %w", err)
	}
	var mounts []specs.Mount
	for i, s := range secrets {
		if s.Target == "" {
			continue
		}
		name := filepath.Join(bundle, "secret-"+strconv.Itoa(i))
		f, err := os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return nil, err
		}
		_, err = f.Write(s.Data)
		if err == nil {
			err = f.Chown(int(s.UID), int(s.GID))
		}
		if err == nil {
			// After chown, which clears the setuid and setgid bits.
			err = f.Chmod(s.Mode.Perm() | s.Mode&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky))
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("writing a secret's file: %w", err)
		}
		mounts = append(mounts, specs.Mount{Destination: s.Target, Type: "bind", Source: name,
			Options: []string{"rbind", "rprivate", "ro", "nosuid", "nodev", "noexec"}})
	}
	return mounts, nil
}

// withSecretEnv returns env with the secrets' variables, which replace
// variables of the same name.
func withSecretEnv(env []string, secrets []Secret) []string {
	out := env
	for _, s := range secrets {
		if s.Env == "" {
			continue
		}
		kept := out[:0:0]
		for _, kv := range out {
			if k, _, _ := strings.Cut(kv, "="); k != s.Env {
				kept = append(kept, kv)
			}
		}
		out = append(kept, s.Env+"="+string(s.Data))
	}
	return out
}
