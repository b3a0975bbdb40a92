package client

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
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

// sentStream records what an agentsStream sends to the builder.
type sentStream struct{ sent chan *builderv1.AgentData }

func (s sentStream) Send(m *builderv1.BuildRequest) error {
	if a := m.GetAgent(); a != nil {
		s.sent <- a
	}
	return nil
}
func (sentStream) Recv() (*builderv1.BuildResponse, error) { return nil, io.EOF }
func (sentStream) CloseSend() error                        { return nil }

// A step's requests other than listing and signing are answered with a
// failure before any agent sees them: its keys stay as they were, and
// nothing is logged on the CLI's stderr (x/crypto's ServeAgent logs each
// request it refuses, which a step could repeat without end).
func TestAgentRequestsOtherThanListAndSignAreRefused(t *testing.T) {
	var logged bytes.Buffer
	log.SetOutput(&logged)
	defer log.SetOutput(os.Stderr)
	dir := t.TempDir()
	key := filepath.Join(dir, "k")
	pub := writeKey(t, key, "")
	_, ag, err := LoadSSHAgent("deploy=" + key)
	if err != nil {
		t.Fatal(err)
	}
	out := sentStream{sent: make(chan *builderv1.AgentData, 8)}
	s := newAgentsStream(out, map[string]SSHAgent{"deploy": ag})
	defer s.close()
	msg := func(typ byte, body ...byte) []byte {
		return append([]byte{0, 0, 0, byte(1 + len(body)), typ}, body...)
	}
	answer := func(what string) []byte {
		t.Helper()
		select {
		case a := <-out.sent:
			return a.GetData()
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no answer", what)
			return nil
		}
	}
	for _, req := range []struct {
		what string
		data []byte
	}{
		{"remove all identities", msg(19)},
		{"lock", msg(22, 0, 0, 0, 1, 'x')},
		{"an extension", msg(27, 0, 0, 0, 1, 'x')},
		{"a type no agent knows", msg(200)},
	} {
		s.handle(&builderv1.AgentData{Connection: 1, Id: "deploy", Data: req.data})
		if got := answer(req.what); !bytes.Equal(got, agentFailure) {
			t.Errorf("%s: answered %v, want SSH_AGENT_FAILURE", req.what, got)
		}
	}
	s.handle(&builderv1.AgentData{Connection: 1, Id: "deploy", Data: msg(11)})
	if got := answer("list"); len(got) < 5 || got[4] != 12 || !bytes.Contains(got, pub.Marshal()) {
		t.Errorf("list: answered %v, want SSH_AGENT_IDENTITIES_ANSWER with the key", got)
	}
	if logged.Len() > 0 {
		t.Errorf("the refusals were logged: %q", logged.String())
	}
}
