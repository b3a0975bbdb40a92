package command

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/distribution/reference"
	"github.com/google/go-cmp/cmp"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/testing/protocmp"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
)

// Pull and push send what `docker login` stored, in the file or through
// the credential helper it names, unless --creds or --authfile say
// otherwise.
func TestRegistryCredentials(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// A credential helper, as docker-credential-pass or -ecr-login would be:
	// `get` reads the registry on stdin and prints its credentials.
	helpers := filepath.Join(dir, "bin")
	if err := os.Mkdir(helpers, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(helpers, "docker-credential-strata-test"), []byte(`#!/bin/sh
read server
[ "$1" = get ] && [ "$server" = helped.example.com ] || { echo "credentials not found in native keychain"; exit 1; }
echo '{"ServerURL":"helped.example.com","Username":"from-helper","Secret":"helper-secret"}'
`), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", helpers+string(os.PathListSeparator)+os.Getenv("PATH"))
	configDir := filepath.Join(dir, "docker")
	if err := os.Mkdir(configDir, 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(configDir, "config.json"), []byte(`{
	"auths": {
		"https://index.docker.io/v1/": {"auth": "ZGF2aWQ6aHViLXNlY3JldA=="},
		"localhost:5000": {"auth": "dGVhbTpwYXNzOndpdGg6Y29sb25z"},
		"registry.example.com": {"identitytoken": "id-token"}
	},
	"credHelpers": {"helped.example.com": "strata-test"}
}`), 0o600)
	t.Setenv("DOCKER_CONFIG", configDir)
	other := write("other.json", `{"auths": {"localhost:5000": {"username": "ci", "password": "from-authfile"}}}`, 0o600)

	for _, tc := range []struct {
		name, ref, stdin string
		flags            []string
		want             *builderv1.RegistryAuth
	}{
		{"Docker Hub", "busybox", "", nil, &builderv1.RegistryAuth{Username: "david", Password: "hub-secret"}},
		{"a local registry", "localhost:5000/team/app", "", nil, &builderv1.RegistryAuth{Username: "team", Password: "pass:with:colons"}},
		{"an identity token", "registry.example.com/app", "", nil, &builderv1.RegistryAuth{IdentityToken: "id-token"}},
		{"a credential helper", "helped.example.com/app", "", nil, &builderv1.RegistryAuth{Username: "from-helper", Password: "helper-secret"}},
		{"a registry with none", "localhost:5001/app", "", nil, nil},
		{"--creds", "localhost:5000/team/app", "", []string{"--creds", "bot:tok:en"}, &builderv1.RegistryAuth{Username: "bot", Password: "tok:en"}},
		{"--creds with the password on stdin", "localhost:5000/team/app", "from-stdin\n", []string{"--creds", "bot"}, &builderv1.RegistryAuth{Username: "bot", Password: "from-stdin"}},
		{"--authfile", "localhost:5000/team/app", "", []string{"--authfile", other}, &builderv1.RegistryAuth{Username: "ci", Password: "from-authfile"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			named, err := reference.ParseNormalizedNamed(tc.ref)
			if err != nil {
				t.Fatal(err)
			}
			var creds registryCredentials
			flags := pflag.NewFlagSet("pull", pflag.ContinueOnError)
			creds.register(flags)
			if err := flags.Parse(tc.flags); err != nil {
				t.Fatal(err)
			}
			got, err := creds.auth(&CLI{In: strings.NewReader(tc.stdin)}, named)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("credentials for %s (-want +got):\n%s", tc.ref, diff)
			}
		})
	}

	addr := (&fakeServices{}).serve(t)
	missing := filepath.Join(dir, "missing.json")
	if r := run(t, addr, "", "pull", "--authfile", missing, "localhost:5000/app"); r.code != 1 || !strings.Contains(r.errOut, missing) {
		t.Errorf("pull with a missing --authfile: exit %d, stderr %q; want exit 1 naming the file", r.code, r.errOut)
	}
	bad := write("bad.json", `{"auths": {"localhost:5000": {"auth": "%%%"}}}`, 0o600)
	if r := run(t, addr, "", "push", "--authfile", bad, "localhost:5000/app"); r.code != 1 || !strings.Contains(r.errOut, bad) {
		t.Errorf("push with a corrupt --authfile: exit %d, stderr %q; want exit 1 naming the file", r.code, r.errOut)
	}
}
