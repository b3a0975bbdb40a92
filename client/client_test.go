package client

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/strata-build/strata/lib/errdefs"
)

func TestAsBuildError(t *testing.T) {
	tests := []struct {
		msg  string
		want *BuildError // nil: not a build error
	}{
		{"Dockerfile:3: unknown instruction: FOO", &BuildError{File: "Dockerfile", Line: 3}},
		{"Dockerfile:1: FROM: invalid reference format", &BuildError{File: "Dockerfile", Line: 1, Instruction: "FROM"}},
		{"Dockerfile:5: The command '/bin/sh -c exit 3' returned a non-zero code: 3",
			&BuildError{File: "Dockerfile", Line: 5, Instruction: "RUN", ExitCode: 3}},
		{"image busybox: not found", nil},
	}
	for _, tt := range tests {
		src := errdefs.ToGRPC(errdefs.InvalidArgument("%s", tt.msg))
		err := asBuildError(errdefs.FromGRPC(src))
		var be *BuildError
		if !errors.As(err, &be) {
			if tt.want != nil {
				t.Errorf("asBuildError(%q) = %v, want a *BuildError", tt.msg, err)
			}
			continue
		}
		if tt.want == nil {
			t.Errorf("asBuildError(%q) = %+v, want no *BuildError", tt.msg, be)
			continue
		}
		tt.want.Message = tt.msg
		if diff := cmp.Diff(tt.want, be, cmpopts.IgnoreUnexported(BuildError{})); diff != "" {
			t.Errorf("asBuildError(%q) (-want +got):\n%s", tt.msg, diff)
		}
		if !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("asBuildError(%q) does not match ErrInvalidArgument", tt.msg)
		}
	}
}

func TestBuildErrorFromDetails(t *testing.T) {
	src := errdefs.InvalidArgument("RUN failed").WithDetail("line", "7").WithDetail("instruction", "RUN").WithDetail("exit_code", "2").WithDetail("file", "Dockerfile.ci")
	err := asBuildError(errdefs.FromGRPC(errdefs.ToGRPC(src)))
	var be *BuildError
	if !errors.As(err, &be) {
		t.Fatalf("asBuildError = %v, want a *BuildError", err)
	}
	want := &BuildError{File: "Dockerfile.ci", Line: 7, Instruction: "RUN", ExitCode: 2, Message: "RUN failed"}
	if diff := cmp.Diff(want, be, cmpopts.IgnoreUnexported(BuildError{})); diff != "" {
		t.Errorf("BuildError (-want +got):\n%s", diff)
	}
}

func TestNewConfig(t *testing.T) {
	t.Setenv(ConfigEnv, t.TempDir()+"/none.json")
	t.Setenv(MetadataAddrEnv, "meta:1")
	c, err := New(t.Context(), WithBuilderAddr("b:2"), WithToken("tok"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	want := Config{Builder: "b:2", Metadata: "meta:1", Blobstore: DefaultBlobstoreAddr, Token: "tok"}
	if diff := cmp.Diff(want, c.Config()); diff != "" {
		t.Errorf("Config (-want +got):\n%s", diff)
	}
}

func TestOptions(t *testing.T) {
	base := Config{Builder: "b:1", Metadata: "m:1", Blobstore: "s:1", Token: "from-base"}
	c, err := New(t.Context(), WithConfig(base), WithMetadataAddr("m:2"), WithBlobstoreAddr("s:2"),
		WithTLS("ca.pem"), WithClientCertificate("c.pem", "k.pem"), WithTokenFile("/run/token"))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Builder: "b:1", Metadata: "m:2", Blobstore: "s:2", TLS: true, TLSCACert: "ca.pem",
		TLSCert: "c.pem", TLSKey: "k.pem", Token: "from-base", TokenFile: "/run/token"}
	if diff := cmp.Diff(want, c.Config()); diff != "" {
		t.Errorf("Config (-want +got):\n%s", diff)
	}
	if _, err := New(t.Context(), WithConfig(Config{Builder: "b:1"})); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("New without a metadata address = %v, want ErrInvalidArgument", err)
	}
}
