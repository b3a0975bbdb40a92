// Package descriptors embeds the descriptor set of Strata's protos with
// their comments, which `make generate` writes with `buf build`. The Go code
// protoc-gen-go makes drops comments, so server reflection serves these
// instead and `grpcurl describe` shows every RPC's, message's and field's
// documentation.
//
// This file is written by hand; descriptors.binpb is generated.
package descriptors

import (
	_ "embed"
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

//go:embed descriptors.binpb
var set []byte

// Files returns Strata's proto files, and those they import, with comments.
func Files() (*protoregistry.Files, error) {
	var fds descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(set, &fds); err != nil {
		return nil, fmt.Errorf("reading the embedded descriptor set: %w", err)
	}
	return protodesc.NewFiles(&fds)
}
