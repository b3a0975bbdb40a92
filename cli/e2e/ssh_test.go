package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/pem"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/strata-build/strata/lib/harness"
)

// strata build --ssh forwards SSH agents to RUN --mount=type=ssh: the
// agent of $SSH_AUTH_SOCK (--ssh default) and keys from a file (--ssh
// ID=KEY). A step lists the keys and gets signatures the test verifies;
// it sees the socket where BuildKit puts it, with the mount's mode and
// owner; it cannot add, remove or lock keys; a required agent the build
// lacks fails the build naming it; and nothing of the socket or the keys
// is left in the image or anywhere in the stack.
func TestBuildWithSSH(t *testing.T) {
	s := startStack(t)
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs.tar")
	if err := os.WriteFile(rootfs, harness.BusyboxRootfs(t), 0o644); err != nil {
		t.Fatal(err)
	}
	s.ok(t, "", "import", rootfs, "busybox")

	// Outside the directories scanned: the agent's socket and the key file.
	keyDir, err := os.MkdirTemp("", "strata-e2e-ssh-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(keyDir) })
	agentPub, agentKey := newKey(t)
	keyring := agent.NewKeyring()
	if err := keyring.Add(agent.AddedKey{PrivateKey: agentKey}); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(keyDir, "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = agent.ServeAgent(keyring, c)
			}()
		}
	}()
	t.Setenv("SSH_AUTH_SOCK", sock)
	filePub, fileKey := newKey(t)
	block, err := ssh.MarshalPrivateKey(fileKey, "")
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(block)
	keyFile := filepath.Join(keyDir, "id_ed25519")
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}

	ctx := filepath.Join(dir, "ctx")
	if err := os.Mkdir(ctx, 0o755); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-o", filepath.Join(ctx, "sshprobe"), "./testdata/sshprobe")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the probe: %v\n%s", err, out)
	}
	df := "FROM busybox\n" +
		"COPY sshprobe /usr/local/bin/sshprobe\n" +
		`RUN --mount=type=ssh,required sh -c 'echo "one auth=$SSH_AUTH_SOCK"; stat -c "one stat=%n %a %u %g %F" "$SSH_AUTH_SOCK"; sshprobe challenge-one | sed "s/^/one /"'` + "\n" +
		`RUN --mount=type=ssh,id=deploy,target=/tmp/deploy.sock,mode=0660,uid=1000,gid=1001 sh -c 'stat -c "two stat=%n %a %u %g %F" /tmp/deploy.sock; SSH_AUTH_SOCK=/tmp/deploy.sock sshprobe challenge-two | sed "s/^/two /"'` + "\n" +
		`RUN --mount=type=ssh,id=absent sh -c 'echo "three auth=$SSH_AUTH_SOCK"; test -e /run/buildkit/ssh_agent.0 || echo "three skipped"'` + "\n" +
		`RUN sh -c 'test -e /run/buildkit || test -e /tmp/deploy.sock || echo "four clean"'` + "\n"
	if err := os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	out := s.ok(t, "", "build", "--progress=plain", "--ssh", "default", "--ssh", "deploy="+keyFile, "-t", "ssh:1", ctx)
	// The steps' "one key=value" lines, whatever the progress output puts
	// before them.
	lines := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)(?:^|\s)((?:one|two|three) [a-z]+)=(.*)$`).FindAllStringSubmatch(out, -1) {
		lines[m[1]] = strings.TrimSpace(m[2])
	}
	for k, want := range map[string]string{
		"one auth":      "/run/buildkit/ssh_agent.0",
		"one stat":      "/run/buildkit/ssh_agent.0 600 0 0 socket",
		"one keys":      "1",
		"one add":       "refused",
		"one removeall": "refused",
		"one lock":      "refused",
		"two stat":      "/tmp/deploy.sock 660 1000 1001 socket",
		"two keys":      "1",
		"two add":       "refused",
		"three auth":    "/run/buildkit/ssh_agent.0",
	} {
		if got := lines[k]; got != want {
			t.Errorf("the step printed %s=%q, want %q", k, got, want)
		}
	}
	for _, want := range []string{"three skipped", "four clean"} {
		if !strings.Contains(out, want) {
			t.Errorf("the output lacks %q", want)
		}
	}
	verify(t, "one", lines, agentPub, "challenge-one")
	verify(t, "two", lines, filePub, "challenge-two")
	if keys, err := keyring.List(); err != nil || len(keys) != 1 {
		t.Errorf("the user's agent holds %d keys after the build (%v), want its 1", len(keys), err)
	}

	r := s.strata(t, "", "build", "--progress=plain", "--no-cache", "-t", "ssh:2", ctx)
	if r.code == 0 || !strings.Contains(r.stderr, `SSH agent "default" is required`) {
		t.Errorf("build without the required agent: exit %d, stderr %q; want a failure naming default", r.code, r.stderr)
	}
	r = s.strata(t, "", "build", "--ssh", "deploy="+filepath.Join(keyDir, "nosuch"), ctx)
	if r.code == 0 || !strings.Contains(r.stderr, "nosuch") {
		t.Errorf("build with a missing key file: exit %d, stderr %q; want a failure naming it", r.code, r.stderr)
	}

	names := layerEntries(t, []byte(s.ok(t, "", "save", "ssh:1")))
	if len(names) == 0 {
		t.Fatal("the saved image has no layer entries")
	}
	for _, name := range names {
		if strings.Contains(name, "buildkit") || strings.Contains(name, "deploy.sock") {
			t.Errorf("a layer holds %s", name)
		}
	}
	secrets := [][]byte{keyPEM, fileKey.Seed(), agentKey.Seed()}
	root := filepath.Dir(t.TempDir())
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.Type()&fs.ModeSocket != 0 {
			t.Errorf("a socket is left in the stack's files: %s", p)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		b = expand(b)
		for _, v := range secrets {
			if bytes.Contains(b, v) {
				t.Errorf("key material is in %s", p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// layerEntries returns the names of the entries of the layers in a saved
// image's tar.
func layerEntries(t *testing.T, saved []byte) []string {
	t.Helper()
	var names []string
	tr := tar.NewReader(bytes.NewReader(saved))
	for {
		if _, err := tr.Next(); err != nil {
			break
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if gz, err := gzip.NewReader(bytes.NewReader(b)); err == nil {
			if raw, err := io.ReadAll(gz); err == nil {
				b = raw
			}
		}
		lr := tar.NewReader(bytes.NewReader(b))
		for {
			h, err := lr.Next()
			if err != nil {
				break
			}
			names = append(names, h.Name)
		}
	}
	return names
}

func newKey(t *testing.T) (ssh.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return sshPub, priv
}

// verify checks that the step named step listed pub and signed data with it.
func verify(t *testing.T, step string, lines map[string]string, pub ssh.PublicKey, data string) {
	t.Helper()
	listed, _, _, _, err := ssh.ParseAuthorizedKey([]byte(lines[step+" key"]))
	if err != nil || !bytes.Equal(listed.Marshal(), pub.Marshal()) {
		t.Errorf("step %s listed key %q (%v), want %s", step, lines[step+" key"], err, ssh.MarshalAuthorizedKey(pub))
		return
	}
	raw, err := base64.StdEncoding.DecodeString(lines[step+" sig"])
	var sig ssh.Signature
	if err == nil {
		err = ssh.Unmarshal(raw, &sig)
	}
	if err == nil {
		err = pub.Verify([]byte(data), &sig)
	}
	if err != nil {
		t.Errorf("step %s's signature does not verify: %v", step, err)
	}
}
