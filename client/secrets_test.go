package client

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
)

// Secrets travel right after the options, one message each in the order
// the options list their IDs, whichever way the context goes (a
// directory's Sync sends the options through the same stream); the
// options carry the IDs only.
func TestBuildSendsSecretsAfterTheOptions(t *testing.T) {
	f := &fakeBuilder{}
	c := startFake(t, f)
	secrets := map[string][]byte{"npmrc": []byte("registry-token"), "A": []byte("a")}
	for name, opts := range map[string]BuildOptions{
		"tar":        {ContextTar: bytes.NewReader([]byte("tar")), Secrets: secrets},
		"no context": {NoContext: true, DockerfileContent: []byte("FROM scratch\n"), Secrets: secrets},
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Build(context.Background(), dir, opts); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := f.opts.GetSecretIds(); !slices.Equal(got, []string{"A", "npmrc"}) {
			t.Errorf("%s: secret_ids = %q, want [A npmrc]", name, got)
		}
		if diff := cmp.Diff(secrets, f.secrets); diff != "" {
			t.Errorf("%s: secrets received (-sent +got):\n%s", name, diff)
		}
		b, _ := proto.Marshal(f.opts)
		if bytes.Contains(b, []byte("registry-token")) {
			t.Errorf("%s: the options hold a secret's value", name)
		}
	}
	if _, err := c.Build(context.Background(), "", BuildOptions{NoContext: true, DockerfileContent: []byte("FROM scratch\n"),
		Secrets: map[string][]byte{"big": make([]byte, MaxSecretSize+1)}}); err == nil || !strings.Contains(err.Error(), "big") {
		t.Errorf("Build with a secret of more than 500 KiB = %v, want an error naming it", err)
	}
}

func TestReadSecret(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "npmrc")
	if err := os.WriteFile(file, []byte("from-file"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("STRATA_TEST_TOKEN", "from-env")
	t.Chdir(dir)
	if err := os.WriteFile("bare", []byte("bare-file"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ spec, id, value string }{
		{"id=npmrc,src=" + file, "npmrc", "from-file"},
		{"id=npmrc,source=" + file, "npmrc", "from-file"},
		{"type=file,id=npmrc,src=" + file, "npmrc", "from-file"},
		{"id=tok,env=STRATA_TEST_TOKEN", "tok", "from-env"},
		{"type=env,id=tok,src=STRATA_TEST_TOKEN", "tok", "from-env"},
		{"id=STRATA_TEST_TOKEN", "STRATA_TEST_TOKEN", "from-env"},
		{"id=bare", "bare", "bare-file"},
	} {
		id, v, err := ReadSecret(tc.spec)
		if err != nil || id != tc.id || string(v) != tc.value {
			t.Errorf("ReadSecret(%q) = %q, %q, %v; want %q, %q", tc.spec, id, v, err, tc.id, tc.value)
		}
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, make([]byte, MaxSecretSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, spec := range []string{"src=" + file, "id=x,src=" + filepath.Join(dir, "nosuch"), "id=x,env=STRATA_TEST_UNSET",
		"id=x,type=ssh", "id=x,bogus=1", "id=x,novalue", "id=big,src=" + big} {
		if id, _, err := ReadSecret(spec); err == nil {
			t.Errorf("ReadSecret(%q) = %q, no error", spec, id)
		}
	}
}
