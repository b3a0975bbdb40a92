package command

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/strata-build/strata/client"
	"github.com/strata-build/strata/lib/errdefs"
)

// Every command, as Docker's, documents itself with an example.
func TestEveryCommandHasAnExample(t *testing.T) {
	root := NewRoot(&CLI{})
	walk(root, func(cmd *cobra.Command) {
		if cmd.Example == "" {
			t.Errorf("%q has no example", cmd.CommandPath())
		}
		if cmd.Short == "" {
			t.Errorf("%q has no short description", cmd.CommandPath())
		}
	})
}

// The image commands exist at the top level and under `strata image`, with
// Docker's names.
func TestCommandTreeMatchesDocker(t *testing.T) {
	root := NewRoot(&CLI{})
	for _, path := range []string{
		"history", "inspect", "tag", "images", "rmi", "import", "load", "save", "pull", "push",
		"image history", "image inspect", "image tag", "image ls", "image list", "image rm", "image rmi",
		"image remove", "image prune", "image import", "image load", "image save", "image pull", "image push",
		"system df", "version", "completion", "help",
	} {
		cmd, rest, err := root.Find(strings.Fields(path))
		if err != nil || len(rest) != 0 || cmd == root {
			t.Errorf("strata %s: not a command (found %q, rest %q, err %v)", path, cmd.CommandPath(), rest, err)
		}
	}
	if cmd, _, _ := root.Find([]string{"prune"}); cmd != root {
		t.Errorf("strata prune exists (%q); Docker has only `image prune`", cmd.CommandPath())
	}
}

func TestCompletionScripts(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		var out, errOut bytes.Buffer
		code := Execute(context.Background(), []string{"completion", shell}, strings.NewReader(""), &out, &errOut)
		if code != 0 || !strings.Contains(out.String(), "strata") {
			t.Errorf("strata completion %s: exit %d, %d bytes, stderr %q", shell, code, out.Len(), errOut.String())
		}
	}
	var out, errOut bytes.Buffer
	if code := Execute(context.Background(), []string{"completion", "tcsh"}, strings.NewReader(""), &out, &errOut); code == 0 {
		t.Errorf("strata completion tcsh succeeded; want an error naming the shell")
	}
}

// Usage mistakes print Docker's messages and exit as Docker does.
func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		wantCode int
		wantErr  string
	}{
		{[]string{"history"}, 1, "Error: \"strata history\" requires exactly 1 argument.\nSee 'strata history --help'.\n\nUsage:  strata history [OPTIONS] IMAGE\n"},
		{[]string{"image", "ls", "a", "b"}, 1, "Error: \"strata image ls\" requires at most 1 argument."},
		{[]string{"images", "--bogus"}, 125, "Error: unknown flag: --bogus\nSee 'strata images --help'.\n"},
		{[]string{"images", "--filter", "dangling"}, 125, "bad format of filter (expected name=value)"},
	} {
		var out, errOut bytes.Buffer
		code := Execute(context.Background(), tc.args, strings.NewReader(""), &out, &errOut)
		if code != tc.wantCode || !strings.Contains(errOut.String(), tc.wantErr) {
			t.Errorf("strata %v: exit %d, stderr %q; want exit %d, stderr containing %q", tc.args, code, errOut.String(), tc.wantCode, tc.wantErr)
		}
	}
}

// The "is the service running?" hint comes only when the CLI cannot reach a
// service itself, not when a service it reached reports something else as
// unavailable (a registry, the blob store behind the builder).
func TestUnavailableHintOnlyWhenTheServiceIsUnreachable(t *testing.T) {
	const hint = "(is the service running?"
	f := &fakeServices{errs: map[string]error{
		"app": errdefs.ToGRPC(errdefs.Unavailable("the blob store at 10.0.0.7:50053 cannot be reached: connection refused")),
	}}
	addr := f.serve(t)
	r := run(t, addr, "", "history", "app")
	if r.code == 0 || !strings.Contains(r.errOut, "the blob store at 10.0.0.7:50053 cannot be reached") || strings.Contains(r.errOut, hint) {
		t.Errorf("a service's UNAVAILABLE: exit %d, stderr %q; want the service's message without the hint", r.code, r.errOut)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := l.Addr().String()
	l.Close()
	r = run(t, down, "", "history", "app")
	if r.code == 0 || !strings.Contains(r.errOut, hint) {
		t.Errorf("no service listening: exit %d, stderr %q; want the hint", r.code, r.errOut)
	}
}

// The configuration file gives the global flags' defaults, with relative
// paths from its directory; a client variable in the environment, or a
// flag, wins.
func TestConfigFile(t *testing.T) {
	for _, v := range client.EnvVars() {
		t.Setenv(v, "")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "config.json")
	t.Setenv(ConfigEnv, path)
	if err := os.WriteFile(path, []byte(`{"metadata": "strata.example:50052", "tlscacert": "ca.crt", "token_file": "/secrets/admin.token", "stack": "strata"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	parse := func(args ...string) *CLI {
		c := &CLI{}
		root := NewRoot(c)
		if err := root.PersistentFlags().Parse(args); err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := parse()
	if c.MetadataAddr != "strata.example:50052" || c.BuilderAddr != "localhost:50051" || c.Conn.CAFile != filepath.Join(dir, "ca.crt") || c.Conn.TokenFile != "/secrets/admin.token" {
		t.Errorf("from the file: metadata %q, builder %q, CA %q, token file %q", c.MetadataAddr, c.BuilderAddr, c.Conn.CAFile, c.Conn.TokenFile)
	}
	if c := parse("--metadata", "other:1"); c.MetadataAddr != "other:1" || c.Conn.CAFile == "" {
		t.Errorf("a flag: metadata %q, CA %q; want the flag's address and the file's CA", c.MetadataAddr, c.Conn.CAFile)
	}
	t.Setenv("STRATA_METADATA_ADDR", "127.0.0.1:9")
	if c := parse(); c.MetadataAddr != "127.0.0.1:9" || c.Conn.CAFile != "" || c.Conn.TokenFile != "" {
		t.Errorf("with STRATA_METADATA_ADDR set: metadata %q, CA %q, token file %q; want the file ignored", c.MetadataAddr, c.Conn.CAFile, c.Conn.TokenFile)
	}
	t.Setenv("STRATA_METADATA_ADDR", "")
	if err := os.WriteFile(path, []byte(`{"metadata": `), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := Execute(context.Background(), []string{"images"}, strings.NewReader(""), &out, &errOut); code != 1 || !strings.Contains(errOut.String(), path) {
		t.Errorf("a broken configuration file: exit %d, %q; want exit 1 naming the file", code, errOut.String())
	}
}
