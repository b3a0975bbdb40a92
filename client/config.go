package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/strata-build/strata/lib/grpcclient"
)

// The environment variables New reads, the strata CLI's.
const (
	BuilderAddrEnv   = grpcclient.BuilderAddrEnv   // STRATA_BUILDER_ADDR
	MetadataAddrEnv  = grpcclient.MetadataAddrEnv  // STRATA_METADATA_ADDR
	BlobstoreAddrEnv = grpcclient.BlobstoreAddrEnv // STRATA_BLOBSTORE_ADDR
	TLSEnv           = "STRATA_CLIENT_TLS"
	TLSCAEnv         = "STRATA_CLIENT_TLS_CA"
	TLSCertEnv       = "STRATA_CLIENT_TLS_CERT"
	TLSKeyEnv        = "STRATA_CLIENT_TLS_KEY"
	TokenEnv         = "STRATA_CLIENT_TOKEN"
	TokenFileEnv     = "STRATA_CLIENT_TOKEN_FILE"
	// ConfigEnv names the configuration file when set.
	ConfigEnv = "STRATA_CONFIG"
)

// The default addresses.
const (
	DefaultBuilderAddr   = grpcclient.DefaultBuilderAddr
	DefaultMetadataAddr  = grpcclient.DefaultMetadataAddr
	DefaultBlobstoreAddr = grpcclient.DefaultBlobstoreAddr
)

// clientEnv are the variables that say where the services are and how to
// reach them; while any is set, the configuration file is not read, as
// Docker ignores its context when DOCKER_HOST is set: settings of two
// deployments must not mix (one's CA with the other's addresses).
var clientEnv = []string{
	BuilderAddrEnv, MetadataAddrEnv, BlobstoreAddrEnv, TLSEnv, TLSCAEnv, TLSCertEnv, TLSKeyEnv, TokenEnv, TokenFileEnv,
}

// Config says where the services are and how to reach them. Its JSON form
// is the configuration file's (`make up` writes one; Stack names the stack
// that wrote it, so that `make down` removes only its own).
type Config struct {
	Builder   string `json:"builder,omitempty"`
	Metadata  string `json:"metadata,omitempty"`
	Blobstore string `json:"blobstore,omitempty"`
	TLS       bool   `json:"tls,omitempty"`
	TLSCACert string `json:"tlscacert,omitempty"`
	TLSCert   string `json:"tlscert,omitempty"`
	TLSKey    string `json:"tlskey,omitempty"`
	// Token is never read from the file; TokenFile is.
	Token     string `json:"-"`
	TokenFile string `json:"token_file,omitempty"`
	Stack     string `json:"stack,omitempty"`
}

// EnvVars returns the names of the environment variables LoadConfig reads;
// while any of them is set, the configuration file is not read.
func EnvVars() []string { return append([]string(nil), clientEnv...) }

func (c Config) connConfig() grpcclient.Config {
	return grpcclient.Config{TLS: c.TLS, CAFile: c.TLSCACert, CertFile: c.TLSCert, KeyFile: c.TLSKey, Token: c.Token, TokenFile: c.TokenFile}
}

// ConfigPath is where the configuration file is: $STRATA_CONFIG, else
// strata/config.json in the user's configuration directory
// ($XDG_CONFIG_HOME, ~/.config); "" when there is none.
func ConfigPath() string {
	if p := os.Getenv(ConfigEnv); p != "" {
		return p
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "strata", "config.json")
}

// LoadConfigFile reads the configuration file, unless a client variable is
// set or there is none (then it returns the zero Config). Relative paths in
// the file are relative to the file.
func LoadConfigFile() (Config, error) {
	for _, v := range clientEnv {
		if os.Getenv(v) != "" {
			return Config{}, nil
		}
	}
	path := ConfigPath()
	if path == "" {
		return Config{}, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Config{}, nil
	}
	if err != nil {
		return Config{}, err
	}
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return Config{}, fmt.Errorf("the configuration file %s: %v (%s names another)", path, err, ConfigEnv)
	}
	for _, p := range []*string{&c.TLSCACert, &c.TLSCert, &c.TLSKey, &c.TokenFile} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(filepath.Dir(path), *p)
		}
	}
	return c, nil
}

// LoadConfig returns the defaults, overridden by the configuration file,
// overridden by the environment: what the strata CLI uses before its flags.
func LoadConfig() (Config, error) {
	file, err := LoadConfigFile()
	if err != nil {
		return Config{}, err
	}
	return Config{
		Builder:   envOr(BuilderAddrEnv, or(file.Builder, DefaultBuilderAddr)),
		Metadata:  envOr(MetadataAddrEnv, or(file.Metadata, DefaultMetadataAddr)),
		Blobstore: envOr(BlobstoreAddrEnv, or(file.Blobstore, DefaultBlobstoreAddr)),
		TLS:       os.Getenv(TLSEnv) != "" || file.TLS,
		TLSCACert: envOr(TLSCAEnv, file.TLSCACert),
		TLSCert:   envOr(TLSCertEnv, file.TLSCert),
		TLSKey:    envOr(TLSKeyEnv, file.TLSKey),
		Token:     os.Getenv(TokenEnv),
		TokenFile: envOr(TokenFileEnv, file.TokenFile),
		Stack:     file.Stack,
	}, nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func or(v, def string) string {
	if v != "" {
		return v
	}
	return def
}
