package auth

import (
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/strata-build/strata/gen/descriptors"
)

// strataMethods returns the full name of every RPC of Strata's protos,
// from the descriptors the servers' reflection serves.
func strataMethods(t *testing.T) []string {
	t.Helper()
	files, err := descriptors.Files()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	files.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		if fd.Package().Parent() == "" || fd.Package().Parent().Parent() != "strata" {
			return true
		}
		for i := 0; i < fd.Services().Len(); i++ {
			sd := fd.Services().Get(i)
			for j := 0; j < sd.Methods().Len(); j++ {
				out = append(out, "/"+string(sd.FullName())+"/"+string(sd.Methods().Get(j).Name()))
			}
		}
		return true
	})
	return out
}

// Every RPC declares its role, and the table lists nothing that is not an
// RPC a Strata server serves.
func TestEveryRPCDeclaresARole(t *testing.T) {
	methods := strataMethods(t)
	if len(methods) < 30 {
		t.Fatalf("found %d RPCs in the descriptors, want every one of the three services'", len(methods))
	}
	served := map[string]bool{}
	for _, m := range methods {
		served[m] = true
		r, ok := RoleFor(m)
		if !ok {
			t.Errorf("%s declares no role: add it to lib/auth's policy", m)
			continue
		}
		if r == Open {
			t.Errorf("%s is open to callers who prove nothing: only health checks are", m)
		}
	}
	for m, r := range policy {
		if served[m] {
			continue
		}
		switch m {
		case "/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch", "/grpc.health.v1.Health/List",
			"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo":
		default:
			t.Errorf("policy lists %s (%s), which no Strata proto declares", m, r)
		}
	}
}
