package grpcserver

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/strata-build/strata/gen/descriptors"
)

// registerReflection serves both reflection versions grpcurl asks for,
// describing Strata's services from the embedded descriptors (which keep
// the proto comments) and everything else from the linked-in registry.
func registerReflection(s *grpc.Server) error {
	files, err := descriptors.Files()
	if err != nil {
		return err
	}
	opts := reflection.ServerOptions{
		Services:           s,
		DescriptorResolver: resolver{files},
		ExtensionResolver:  protoregistry.GlobalTypes,
	}
	reflectionv1.RegisterServerReflectionServer(s, reflection.NewServerV1(opts))
	reflectionv1alpha.RegisterServerReflectionServer(s, reflection.NewServer(opts))
	return nil
}

// resolver looks in the documented files first, then in the global registry.
type resolver struct{ documented *protoregistry.Files }

var _ protodesc.Resolver = resolver{}

func (r resolver) FindFileByPath(path string) (protoreflect.FileDescriptor, error) {
	if fd, err := r.documented.FindFileByPath(path); err == nil {
		return fd, nil
	}
	return protoregistry.GlobalFiles.FindFileByPath(path)
}

func (r resolver) FindDescriptorByName(name protoreflect.FullName) (protoreflect.Descriptor, error) {
	if d, err := r.documented.FindDescriptorByName(name); err == nil {
		return d, nil
	}
	return protoregistry.GlobalFiles.FindDescriptorByName(name)
}
