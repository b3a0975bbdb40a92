package command

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// ConfigEnv names the CLI's configuration file when set.
const ConfigEnv = "STRATA_CONFIG"

// clientEnv are the variables that say where the services are and how to
// reach them; while any is set, the configuration file is not read, as
// Docker ignores its context when DOCKER_HOST is set: settings of two
// deployments must not mix (one's CA with the other's addresses).
var clientEnv = []string{
	"STRATA_BUILDER_ADDR", "STRATA_METADATA_ADDR", "STRATA_BLOBSTORE_ADDR", "STRATA_CLIENT_TLS", "STRATA_CLIENT_TLS_CA",
	"STRATA_CLIENT_TLS_CERT", "STRATA_CLIENT_TLS_KEY", "STRATA_CLIENT_TOKEN", "STRATA_CLIENT_TOKEN_FILE",
}

// fileConfig is the CLI's configuration file: where the services are and
// how to reach them, the defaults of the global flags. `make up` writes one
// for the stack it starts (Stack names it, so that `make down` removes
// only its own). Relative paths are relative to the file.
type fileConfig struct {
	Builder   string `json:"builder,omitempty"`
	Metadata  string `json:"metadata,omitempty"`
	Blobstore string `json:"blobstore,omitempty"`
	TLS       bool   `json:"tls,omitempty"`
	TLSCACert string `json:"tlscacert,omitempty"`
	TLSCert   string `json:"tlscert,omitempty"`
	TLSKey    string `json:"tlskey,omitempty"`
	TokenFile string `json:"token_file,omitempty"`
	Stack     string `json:"stack,omitempty"`
}

// configPath is where the configuration file is: $STRATA_CONFIG, else
// strata/config.json in the user's configuration directory
// ($XDG_CONFIG_HOME, ~/.config).
func configPath() string {
	if p := os.Getenv(ConfigEnv); p != "" {
		return p
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "strata", "config.json")
}

// loadConfig reads the configuration file, unless a client variable is set
// or there is none.
func loadConfig() (fileConfig, error) {
	for _, v := range clientEnv {
		if os.Getenv(v) != "" {
			return fileConfig{}, nil
		}
	}
	path := configPath()
	if path == "" {
		return fileConfig{}, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fileConfig{}, nil
	}
	if err != nil {
		return fileConfig{}, err
	}
	var c fileConfig
	if err := json.Unmarshal(b, &c); err != nil {
		return fileConfig{}, fmt.Errorf("the configuration file %s: %v (%s names another)", path, err, ConfigEnv)
	}
	for _, p := range []*string{&c.TLSCACert, &c.TLSCert, &c.TLSKey, &c.TokenFile} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(filepath.Dir(path), *p)
		}
	}
	return c, nil
}

// or returns v, or def when v is empty.
func or(v, def string) string {
	if v != "" {
		return v
	}
	return def
}
