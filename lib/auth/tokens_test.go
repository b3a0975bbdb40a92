package auth

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseTokens(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		want    []Token
		wantErr string // a substring; the file and line are always named
	}{
		{"roles and names", "# the stack's tokens\nread r1 alice\n\nwrite\tw1\tci-bot\nADMIN a1 ops\nservice s1 strata-services\n", []Token{
			{Value: "r1", Role: RoleRead, Name: "alice"},
			{Value: "w1", Role: RoleWrite, Name: "ci-bot"},
			{Value: "a1", Role: RoleAdmin, Name: "ops"},
			{Value: "s1", Role: RoleService, Name: "strata-services"},
		}, ""},
		{"no name: file and line", "write w1\n", []Token{{Value: "w1", Role: RoleWrite, Name: "tokens:1"}}, ""},
		{"the older form has every role", "  old-token  \nread r1 alice\n", []Token{
			{Value: "old-token", Role: RoleService, Name: "tokens:1"},
			{Value: "r1", Role: RoleRead, Name: "alice"},
		}, ""},
		{"unknown role", "wirte w1 bob\n", nil, `tokens:1: unknown role "wirte"`},
		{"a role without a token", "read r1\nadmin\n", nil, "tokens:2: role admin without a token"},
		{"too many fields", "read r1 alice smith\n", nil, "tokens:1: 4 fields"},
		{"a token twice", "read r1\nwrite r1\n", nil, "tokens:2: the token of line 1 again"},
		{"empty", "\n# nothing\n", nil, "tokens holds no token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseTokens("tokens", []byte(tt.file))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseTokens(%q) error = %v, want one containing %q", tt.file, err, tt.wantErr)
				}
				for _, tok := range []string{"r1", "w1"} {
					if strings.Contains(err.Error(), " "+tok) {
						t.Errorf("error %q shows the token %q", err, tok)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseTokens(%q): %v", tt.file, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseTokens(%q) (-want +got):\n%s", tt.file, diff)
			}
		})
	}
}

func TestRolesNest(t *testing.T) {
	for i, r := range Roles {
		for j, other := range Roles {
			if got, want := r.Includes(other), i >= j; got != want {
				t.Errorf("%s.Includes(%s) = %v, want %v", r, other, got, want)
			}
		}
	}
	if Role("").Includes(RoleRead) || RoleService.Includes(Open) {
		t.Error("no role, or an unknown one, is included in or includes another")
	}
}

func TestIsLoopback(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "LOCALHOST": true, "127.0.0.1": true, "127.9.9.9": true, "::1": true, "[::1]": true,
		"::ffff:127.0.0.1": true, "": false, "0.0.0.0": false, "::": false, "10.0.0.1": false, "metadata": false,
		"localhost.example.com": false, "x.localhost": false, "metadata.localhost": false,
	} {
		if got := IsLoopback(host); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", host, got, want)
		}
	}
}
