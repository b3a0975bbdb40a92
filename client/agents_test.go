package client

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func writeKey(t *testing.T, path string, passphrase string) ssh.PublicKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var block *pem.Block
	if passphrase == "" {
		block, err = ssh.MarshalPrivateKey(priv, "")
	} else {
		block, err = ssh.MarshalPrivateKeyWithPassphrase(priv, "", []byte(passphrase))
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return sshPub
}

// LoadSSHAgent reads buildx's --ssh specs: key files into an agent that
// lists them, a socket alone, $SSH_AUTH_SOCK without a path; a spec it
// cannot use is an error naming what is wrong.
func TestLoadSSHAgent(t *testing.T) {
	dir := t.TempDir()
	key1, key2 := filepath.Join(dir, "k1"), filepath.Join(dir, "k2")
	pub1, pub2 := writeKey(t, key1, ""), writeKey(t, key2, "")
	locked := filepath.Join(dir, "locked")
	writeKey(t, locked, "pw")
	notKey := filepath.Join(dir, "notakey")
	if err := os.WriteFile(notKey, []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	id, a, err := LoadSSHAgent("deploy=" + key1 + "," + key2)
	if err != nil || id != "deploy" {
		t.Fatalf("LoadSSHAgent(keys) = %q, %v", id, err)
	}
	ag, release, err := a.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	keys, err := ag.List()
	if err != nil || len(keys) != 2 || string(keys[0].Marshal()) != string(pub1.Marshal()) || string(keys[1].Marshal()) != string(pub2.Marshal()) {
		t.Errorf("the agent of two key files lists %v (%v), want both keys", keys, err)
	}
	ro := readOnlyAgent{ag}
	if err := ro.RemoveAll(); err == nil {
		t.Error("the read-only agent removed the keys")
	}
	if keys, _ := ag.List(); len(keys) != 2 {
		t.Errorf("after a refused RemoveAll the agent lists %d keys, want 2", len(keys))
	}
	if _, err := ro.Sign(pub1, []byte("data")); err != nil {
		t.Errorf("the read-only agent does not sign: %v", err)
	}

	if _, a, err := LoadSSHAgent("default=" + sock); err != nil {
		t.Errorf("LoadSSHAgent(socket) = %v", err)
	} else if _, ok := a.(socketAgent); !ok {
		t.Errorf("LoadSSHAgent(socket) = %T, want a socket agent", a)
	}
	t.Setenv("SSH_AUTH_SOCK", sock)
	if id, a, err := LoadSSHAgent("default"); err != nil || id != "default" || a != socketAgent(sock) {
		t.Errorf("LoadSSHAgent(default) = %q, %v, %v; want the agent of $SSH_AUTH_SOCK", id, a, err)
	}

	for spec, want := range map[string]string{
		"=" + key1:                               "the ID is missing",
		"deploy=" + filepath.Join(dir, "nosuch"): "nosuch",
		"deploy=" + locked:                       "passphrase",
		"deploy=" + sock + "," + key1:            "cannot be given with other paths",
		"deploy=" + notKey:                       "reading the private key",
	} {
		if _, _, err := LoadSSHAgent(spec); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("LoadSSHAgent(%q) = %v, want an error with %q", spec, err, want)
		}
	}
	t.Setenv("SSH_AUTH_SOCK", "")
	if _, _, err := LoadSSHAgent("default"); err == nil || !strings.Contains(err.Error(), "SSH_AUTH_SOCK is not set") {
		t.Errorf("LoadSSHAgent(default) without an agent = %v, want an error naming SSH_AUTH_SOCK", err)
	}
}
