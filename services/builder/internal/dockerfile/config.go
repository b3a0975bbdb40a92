package dockerfile

import (
	"slices"

	"github.com/strata-build/strata/services/builder/internal/image"
)

// DefaultPathEnv is the PATH Docker adds to a stage's environment when its
// base image sets none.
const DefaultPathEnv = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// ShellOf returns the shell that shell-form instructions run with: the
// SHELL instruction's, or /bin/sh -c.
func ShellOf(c *image.ContainerConfig) []string {
	if len(c.Shell) > 0 {
		return slices.Clone(c.Shell)
	}
	return []string{"/bin/sh", "-c"}
}

// LookupEnv returns the value of NAME in an environment list.
func LookupEnv(env []string, name string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		k, v, _ := cut(env[i])
		if k == name {
			return v, true
		}
	}
	return "", false
}

// SetEnv sets NAME=value in an environment list, replacing an existing
// entry in place as Docker does, or appending.
func SetEnv(env []string, name, value string) []string {
	for i, e := range env {
		if k, _, _ := cut(e); k == name {
			env[i] = name + "=" + value
			return env
		}
	}
	return append(env, name+"="+value)
}

func cut(e string) (string, string, bool) {
	for i := 0; i < len(e); i++ {
		if e[i] == '=' {
			return e[:i], e[i+1:], true
		}
	}
	return e, "", false
}
