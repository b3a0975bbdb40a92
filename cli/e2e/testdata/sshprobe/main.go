// Command sshprobe is what a RUN step of the SSH forwarding test runs
// (busybox has no ssh client): it dials $SSH_AUTH_SOCK, lists the keys,
// signs its argument with the first one, and tries to add and remove
// keys, printing what it got as "name=value" lines.
package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: sshprobe DATA")
		os.Exit(2)
	}
	conn, err := net.Dial("unix", os.Getenv("SSH_AUTH_SOCK"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer conn.Close()
	a := agent.NewClient(conn)
	keys, err := a.List()
	if err != nil {
		fmt.Fprintln(os.Stderr, "list:", err)
		os.Exit(1)
	}
	fmt.Printf("keys=%d\n", len(keys))
	for _, k := range keys {
		fmt.Printf("key=%s\n", strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k))))
	}
	if len(keys) > 0 {
		sig, err := a.Sign(keys[0], []byte(os.Args[1]))
		if err != nil {
			fmt.Fprintln(os.Stderr, "sign:", err)
			os.Exit(1)
		}
		fmt.Printf("sig=%s\n", base64.StdEncoding.EncodeToString(ssh.Marshal(sig)))
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("add=%s\n", outcome(a.Add(agent.AddedKey{PrivateKey: priv})))
	fmt.Printf("removeall=%s\n", outcome(a.RemoveAll()))
	fmt.Printf("lock=%s\n", outcome(a.Lock([]byte("x"))))
}

func outcome(err error) string {
	if err != nil {
		return "refused"
	}
	return "done"
}
