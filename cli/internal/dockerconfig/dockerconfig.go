// Package dockerconfig reads registry credentials from Docker's client
// configuration (~/.docker/config.json, or $DOCKER_CONFIG/config.json), so
// that `docker login` credentials work for `strata pull` and `strata push`.
//
// Only credentials stored in the file ("auths") are read; credential
// helpers ("credsStore", "credHelpers") run external programs and are not
// supported.
package dockerconfig

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Credentials for one registry. An empty value means anonymous access.
type Credentials struct {
	Username, Password string
	IdentityToken      string
	RegistryToken      string
}

// dockerHubKey is the key Docker stores Docker Hub credentials under.
const dockerHubKey = "https://index.docker.io/v1/"

type file struct {
	Auths map[string]struct {
		Auth          string `json:"auth"`
		Username      string `json:"username"`
		Password      string `json:"password"`
		IdentityToken string `json:"identitytoken"`
		RegistryToken string `json:"registrytoken"`
	} `json:"auths"`
}

// Path returns the config file Docker's client reads: $DOCKER_CONFIG/config.json
// or ~/.docker/config.json.
func Path() (string, error) {
	if dir := os.Getenv("DOCKER_CONFIG"); dir != "" {
		return filepath.Join(dir, "config.json"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(home, ".docker", "config.json"), nil
}

// Lookup returns the credentials stored in the config file at path for a
// registry host ("docker.io", "localhost:5000"). A missing file or a
// registry without an entry gives empty credentials; a file that does not
// parse is an error naming it.
func Lookup(path, registry string) (Credentials, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return Credentials{}, nil
	}
	if err != nil {
		return Credentials{}, err
	}
	var f file
	if err := json.Unmarshal(b, &f); err != nil {
		return Credentials{}, fmt.Errorf("reading registry credentials from %s: %w", path, err)
	}
	for key, entry := range f.Auths {
		if normalize(key) != normalize(registry) {
			continue
		}
		creds := Credentials{
			Username:      entry.Username,
			Password:      entry.Password,
			IdentityToken: entry.IdentityToken,
			RegistryToken: entry.RegistryToken,
		}
		if entry.Auth != "" {
			decoded, err := base64.StdEncoding.DecodeString(entry.Auth)
			if err != nil {
				return Credentials{}, fmt.Errorf("reading registry credentials from %s: auth of %q is not base64: %w", path, key, err)
			}
			user, pass, ok := strings.Cut(string(decoded), ":")
			if !ok {
				return Credentials{}, fmt.Errorf("reading registry credentials from %s: auth of %q is not user:password", path, key)
			}
			creds.Username, creds.Password = user, pass
		}
		return creds, nil
	}
	return Credentials{}, nil
}

// normalize reduces a config key or registry name to a host: Docker writes
// keys as bare hosts or as URLs ("https://host/v1/"), and Docker Hub as
// "https://index.docker.io/v1/".
func normalize(s string) string {
	if s == dockerHubKey {
		return "docker.io"
	}
	s = strings.TrimPrefix(strings.TrimPrefix(s, "https://"), "http://")
	s, _, _ = strings.Cut(s, "/")
	switch s {
	case "index.docker.io", "registry-1.docker.io":
		return "docker.io"
	}
	return s
}
