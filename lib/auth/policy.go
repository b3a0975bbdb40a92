package auth

import (
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"

	blobv1 "github.com/strata-build/strata/gen/strata/blob/v1"
	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
)

// Open marks a method that needs no identity at all.
const Open Role = "open"

// RoleFor returns the role a method needs, by full method name
// ("/strata.blob.v1.BlobService/Delete"); ok is false for a method that
// declares none, which servers refuse to everyone.
func RoleFor(method string) (r Role, ok bool) {
	r, ok = policy[method]
	return r, ok
}

// policy is the role every method of Strata's servers needs: the one place
// where that is decided. policy_test.go checks that every RPC of the protos
// is listed, and nothing else.
var policy = map[string]Role{
	// Health stays open: probes (compose health checks, load balancers)
	// carry no token, and it tells only whether a service serves.
	healthpb.Health_Check_FullMethodName: Open,
	healthpb.Health_Watch_FullMethodName: Open,
	healthpb.Health_List_FullMethodName:  Open,
	// Reflection describes the public API, to any caller who proves who
	// they are (grpcurl sends the same headers to it as to the call).
	reflectionv1.ServerReflection_ServerReflectionInfo_FullMethodName:      RoleRead,
	reflectionv1alpha.ServerReflection_ServerReflectionInfo_FullMethodName: RoleRead,

	blobv1.BlobService_Write_FullMethodName:        RoleWrite,
	blobv1.BlobService_Read_FullMethodName:         RoleRead,
	blobv1.BlobService_Stat_FullMethodName:         RoleRead,
	blobv1.BlobService_Exists_FullMethodName:       RoleRead,
	blobv1.BlobService_Delete_FullMethodName:       RoleAdmin,
	blobv1.BlobService_List_FullMethodName:         RoleRead,
	blobv1.BlobService_UploadStatus_FullMethodName: RoleWrite,
	blobv1.BlobService_AbortUpload_FullMethodName:  RoleWrite,
	blobv1.BlobService_ListUploads_FullMethodName:  RoleRead,
	// A scrub re-reads every stored blob: an operator's job.
	blobv1.BlobService_Verify_FullMethodName: RoleAdmin,

	// Images are recorded only by the builder (build, import, load, pull),
	// which checks what it records; cache records likewise, so that no
	// user can point another user's build step at an image of their own.
	metadatav1.ImageService_PutImage_FullMethodName: RoleService,
	// The registry's: recording a pushed manifest records an image, as
	// PutImage does, and a blob link vouches for a blob's upload.
	metadatav1.ImageService_PutManifest_FullMethodName:         RoleService,
	metadatav1.ImageService_LinkBlob_FullMethodName:            RoleService,
	metadatav1.ImageService_GetManifest_FullMethodName:         RoleRead,
	metadatav1.ImageService_ListTags_FullMethodName:            RoleRead,
	metadatav1.ImageService_ListReferrers_FullMethodName:       RoleRead,
	metadatav1.ImageService_HasBlob_FullMethodName:             RoleRead,
	metadatav1.ImageService_DeleteManifest_FullMethodName:      RoleWrite,
	metadatav1.ImageService_UnlinkBlob_FullMethodName:          RoleWrite,
	metadatav1.ImageService_GetImage_FullMethodName:            RoleRead,
	metadatav1.ImageService_InspectImage_FullMethodName:        RoleRead,
	metadatav1.ImageService_ListImages_FullMethodName:          RoleRead,
	metadatav1.ImageService_ImageHistory_FullMethodName:        RoleRead,
	metadatav1.ImageService_TagImage_FullMethodName:            RoleWrite,
	metadatav1.ImageService_UntagImage_FullMethodName:          RoleWrite,
	metadatav1.ImageService_DeleteImage_FullMethodName:         RoleWrite,
	metadatav1.ImageService_PruneImages_FullMethodName:         RoleAdmin,
	metadatav1.ImageService_PutCacheRecord_FullMethodName:      RoleService,
	metadatav1.ImageService_LookupCacheRecords_FullMethodName:  RoleService,
	metadatav1.ImageService_ListCacheRecords_FullMethodName:    RoleRead,
	metadatav1.ImageService_PruneCacheRecords_FullMethodName:   RoleAdmin,
	metadatav1.ImageService_ListReferencedBlobs_FullMethodName: RoleRead,
	metadatav1.ImageService_CollectGarbage_FullMethodName:      RoleAdmin,
	// Leases keep blobs from garbage collection: what the builder (and the
	// registry's uploads) hold while they store an image's blobs.
	metadatav1.ImageService_CreateLease_FullMethodName:      RoleService,
	metadatav1.ImageService_AddLeaseResource_FullMethodName: RoleService,
	metadatav1.ImageService_DeleteLease_FullMethodName:      RoleService,
	metadatav1.ImageService_GetDiskUsage_FullMethodName:     RoleRead,
	metadatav1.ImageService_WatchEvents_FullMethodName:      RoleRead,
	// The builder records its builds' starts and ends for WatchEvents.
	metadatav1.ImageService_RecordBuildEvent_FullMethodName: RoleService,

	builderv1.BuildService_Build_FullMethodName:  RoleWrite,
	builderv1.BuildService_Import_FullMethodName: RoleWrite,
	builderv1.BuildService_Load_FullMethodName:   RoleWrite,
	builderv1.BuildService_Save_FullMethodName:   RoleRead,
	builderv1.BuildService_Pull_FullMethodName:   RoleWrite,
	builderv1.BuildService_Push_FullMethodName:   RoleWrite,
	// Builds as resources: anyone who may read sees the builds (their
	// tags, state and requester) and may watch their own; canceling needs
	// write. Watching or canceling another caller's build also needs
	// admin, checked by the builder, since a build's output is its
	// requester's.
	builderv1.BuildService_ListBuilds_FullMethodName:  RoleRead,
	builderv1.BuildService_GetBuild_FullMethodName:    RoleRead,
	builderv1.BuildService_WatchBuild_FullMethodName:  RoleRead,
	builderv1.BuildService_CancelBuild_FullMethodName: RoleWrite,
	// Cache mounts are shared by every build on a builder: listing them
	// tells only ids and sizes, but removing them takes from every build
	// what it relies on, an operator's job.
	builderv1.BuildService_ListCacheMounts_FullMethodName:  RoleRead,
	builderv1.BuildService_PruneCacheMounts_FullMethodName: RoleAdmin,
}
