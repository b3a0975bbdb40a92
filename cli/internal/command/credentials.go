package command

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/distribution/reference"
	dockerconfig "github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/configfile"
	"github.com/spf13/pflag"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
)

// dockerHubAuthKey is the key Docker's client stores Docker Hub credentials
// under.
const dockerHubAuthKey = "https://index.docker.io/v1/"

// registryCredentials are the credential flags of pull and push, podman's:
// --creds USER[:PASSWORD] and --authfile PATH.
type registryCredentials struct {
	creds, authFile string
}

func (r *registryCredentials) register(f *pflag.FlagSet) {
	f.StringVar(&r.creds, "creds", "", "Credentials USERNAME[:PASSWORD] for the registry; without :PASSWORD it is read from STDIN")
	f.StringVar(&r.authFile, "authfile", "", "Docker client configuration to read credentials from, instead of ~/.docker/config.json (or $DOCKER_CONFIG)")
}

// auth returns the credentials for the reference's registry: --creds when
// given, else what `docker login` stored for it in the configuration file
// or a credential helper it names, read by Docker's own config package; nil
// means anonymous.
func (r *registryCredentials) auth(c *CLI, named reference.Named) (*builderv1.RegistryAuth, error) {
	if r.creds != "" {
		user, password, ok := strings.Cut(r.creds, ":")
		if user == "" {
			return nil, statusError{code: 125, msg: "invalid --creds: want USERNAME[:PASSWORD]"}
		}
		if !ok {
			line, err := bufio.NewReader(c.In).ReadString('\n')
			if err != nil && line == "" {
				return nil, fmt.Errorf("reading the password of --creds from STDIN: %w", err)
			}
			password = strings.TrimRight(line, "\r\n")
		}
		return &builderv1.RegistryAuth{Username: user, Password: password}, nil
	}
	cfg, err := r.config()
	if err != nil {
		return nil, err
	}
	key := reference.Domain(named)
	if key == "docker.io" {
		key = dockerHubAuthKey
	}
	ac, err := cfg.GetAuthConfig(key)
	if err != nil {
		return nil, fmt.Errorf("reading the credentials for %s from %s: %w", reference.Domain(named), cfg.Filename, err)
	}
	if ac.Username == "" && ac.Password == "" && ac.IdentityToken == "" && ac.RegistryToken == "" {
		return nil, nil
	}
	return &builderv1.RegistryAuth{
		Username: ac.Username, Password: ac.Password,
		IdentityToken: ac.IdentityToken, RegistryToken: ac.RegistryToken,
	}, nil
}

func (r *registryCredentials) config() (*configfile.ConfigFile, error) {
	if r.authFile == "" {
		// Docker's client directory, found at each call (config.Dir finds
		// it once per process); a missing file means anonymous.
		dir := os.Getenv(dockerconfig.EnvOverrideConfigDir)
		if dir == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return configfile.New(""), nil
			}
			dir = filepath.Join(home, ".docker")
		}
		return dockerconfig.Load(dir)
	}
	f, err := os.Open(r.authFile)
	if err != nil {
		return nil, fmt.Errorf("--authfile: %w", err)
	}
	defer f.Close()
	cfg, err := dockerconfig.LoadFromReader(f)
	if err != nil {
		return nil, fmt.Errorf("--authfile %s: %w", r.authFile, err)
	}
	cfg.Filename = r.authFile
	return cfg, nil
}
