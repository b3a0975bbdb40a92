package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/lib/auth"
	"github.com/strata-build/strata/lib/harness"
)

// TestAuth checks the tokens of the gRPC services at the registry: bearer,
// basic with the token as password, Docker's token flow (docker login,
// push and pull), and anonymous pull when asked for.
func TestAuth(t *testing.T) {
	const token = "registry-test-token"
	stack := harness.StartStack(t, harness.StackOptions{NoBuilder: true, Registry: true, RegistryEnv: []string{"STRATA_AUTH_TOKEN=" + token}})
	base := "http://" + stack.RegistryAddr
	get := func(path string, set func(*http.Request)) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if set != nil {
			set(req)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	resp := get("/v2/", nil)
	if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), `Bearer realm="`+base+`/token"`) {
		t.Errorf("GET /v2/ without a token = %s, %q; want 401 and the token challenge", resp.Status, resp.Header.Get("WWW-Authenticate"))
	}
	if resp := get("/v2/", func(r *http.Request) { r.Header.Set("Authorization", "Bearer wrong") }); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /v2/ with a wrong token = %s, want 401", resp.Status)
	}
	if resp := get("/v2/", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }); resp.StatusCode != http.StatusOK {
		t.Errorf("GET /v2/ with the token = %s, want 200", resp.Status)
	}
	if resp := get("/v2/", func(r *http.Request) { r.SetBasicAuth("anyone", token) }); resp.StatusCode != http.StatusOK {
		t.Errorf("GET /v2/ with basic auth = %s, want 200", resp.Status)
	}
	req, _ := http.NewRequest(http.MethodGet, base+"/token?service=strata-registry&scope=repository:a/b:pull", nil)
	req.SetBasicAuth("anyone", token)
	tr, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var tok struct{ Token string }
	_ = json.NewDecoder(tr.Body).Decode(&tok)
	tr.Body.Close()
	if tok.Token != token {
		t.Errorf("the token endpoint answered %q", tok.Token)
	}

	// docker login, push and pull through the token flow, with a Docker
	// configuration of the test's own.
	env := []string{"DOCKER_CONFIG=" + t.TempDir()}
	ref := stack.RegistryAddr + "/auth/tiny:1"
	run(t, nil, harness.BusyboxRootfs(t), "docker", "import", "-", ref)
	t.Cleanup(func() { _ = exec.Command("docker", "rmi", "-f", ref).Run() })
	cmd := exec.Command("docker", "push", ref)
	cmd.Env = append(cmd.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("docker push without login succeeded: %s", out)
	}
	run(t, env, []byte(token), "docker", "login", "-u", "anyone", "--password-stdin", stack.RegistryAddr)
	run(t, env, nil, "docker", "push", ref)
	run(t, nil, nil, "docker", "rmi", ref)
	run(t, env, nil, "docker", "pull", ref)
}

func TestAnonymousPull(t *testing.T) {
	stack := harness.StartStack(t, harness.StackOptions{NoBuilder: true, Registry: true,
		RegistryEnv: []string{"STRATA_AUTH_TOKEN=t0ken", "STRATA_ANONYMOUS_PULL=true"}})
	c := client{t: t, base: "http://" + stack.RegistryAddr}
	c.want(c.do(http.MethodGet, "/v2/", nil, nil), http.StatusOK)
	c.want(c.do(http.MethodGet, "/v2/nobody/here/tags/list", nil, nil), http.StatusNotFound)
	c.want(c.do(http.MethodPost, "/v2/team/app/blobs/uploads/", nil, nil), http.StatusUnauthorized)
	c.want(c.do(http.MethodPost, "/v2/team/app/blobs/uploads/", nil, map[string]string{"Authorization": "Bearer t0ken"}), http.StatusAccepted)
}

// TestRoles runs the registry as the secure stack runs every service
// (mutual TLS, a token file with a token per role) and checks the route to
// role table: read pulls, write pushes, admin deletes.
func TestRoles(t *testing.T) {
	stack := harness.StartStack(t, harness.StackOptions{NoBuilder: true, Registry: true, Secure: true})
	dir := filepath.Join(stack.Dir, "tls")
	tlsCfg, err := auth.ClientTLS(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key"))
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	do := func(role auth.Role, method, path string, body []byte) int {
		t.Helper()
		req, _ := http.NewRequest(method, "https://"+stack.RegistryAddr+path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+stack.Tokens[role])
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	blob := []byte("a blob for roles")
	d := digest.FromBytes(blob).String()
	push := "/v2/team/roles/blobs/uploads/?digest=" + d
	for _, c := range []struct {
		role         auth.Role
		method, path string
		want         int
	}{
		{auth.RoleRead, http.MethodPost, push, http.StatusForbidden},
		{auth.RoleWrite, http.MethodPost, push, http.StatusCreated},
		{auth.RoleRead, http.MethodGet, "/v2/team/roles/blobs/" + d, http.StatusOK},
		{auth.RoleWrite, http.MethodDelete, "/v2/team/roles/blobs/" + d, http.StatusForbidden},
		{auth.RoleAdmin, http.MethodDelete, "/v2/team/roles/blobs/" + d, http.StatusAccepted},
	} {
		if got := do(c.role, c.method, c.path, blob); got != c.want {
			t.Errorf("%s %s with the %s token = %d, want %d", c.method, c.path, c.role, got, c.want)
		}
	}
}
