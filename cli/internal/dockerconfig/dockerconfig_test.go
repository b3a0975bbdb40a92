package dockerconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestLookup(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.json")
	config := `{
	"auths": {
		"https://index.docker.io/v1/": {"auth": "ZGF2aWQ6aHViLXNlY3JldA=="},
		"localhost:5000": {"auth": "dGVhbTpwYXNzOndpdGg6Y29sb25z"},
		"https://registry.example.com/v1/": {"identitytoken": "id-token"}
	},
	"credsStore": "desktop"
}`
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		registry string
		want     Credentials
	}{
		{"docker.io", Credentials{Username: "david", Password: "hub-secret"}},
		{"localhost:5000", Credentials{Username: "team", Password: "pass:with:colons"}},
		{"registry.example.com", Credentials{IdentityToken: "id-token"}},
		{"localhost:5001", Credentials{}},
	} {
		got, err := Lookup(path, tc.registry)
		if err != nil {
			t.Fatalf("Lookup(%q): %v", tc.registry, err)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("Lookup(%q) (-want +got):\n%s", tc.registry, diff)
		}
	}
}

func TestLookupMissingFileIsAnonymous(t *testing.T) {
	got, err := Lookup(filepath.Join(t.TempDir(), "none.json"), "docker.io")
	if err != nil || got != (Credentials{}) {
		t.Fatalf("Lookup(missing file) = %+v, %v; want empty credentials", got, err)
	}
}

func TestLookupBadFileNamesIt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, []byte(`{"auths": {"localhost:5000": {"auth": "%%%"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Lookup(path, "localhost:5000")
	if err == nil {
		t.Fatal("Lookup with a bad auth value succeeded")
	}
	if want := path; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not name the file %s", err, want)
	}
}
