package command

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	metadatav1 "github.com/strata-build/strata/gen/strata/metadata/v1"
	"github.com/strata-build/strata/lib/errdefs"
)

// fakeServices answers the CLI's calls from canned data and records the
// requests, for fast tests of the commands' wiring and output. The
// end-to-end tests run the same commands against the real services.
type fakeServices struct {
	metadatav1.UnimplementedImageServiceServer
	builderv1.UnimplementedBuildServiceServer

	mu       sync.Mutex
	requests []any

	history   map[string][]*metadatav1.HistoryRow
	images    []*metadatav1.ImageSummary
	inspect   map[string][]byte
	deleted   map[string][]*metadatav1.DeletedItem
	prune     *metadatav1.PruneImagesResponse
	diskUsage *metadatav1.GetDiskUsageResponse
	errs      map[string]error  // by reference
	existing  map[string]string // image IDs by reference, for GetImage

	loadResult *builderv1.LoadResult
	progress   []*builderv1.TransferProgress
	received   bytes.Buffer // bytes of an import or load
	archive    []byte       // what save sends
	pull       *builderv1.PullResult
	push       *builderv1.PushResult
	block      chan struct{} // when set, streaming calls wait on it or their context

	cacheMounts *builderv1.ListCacheMountsResponse
	pruneMounts *builderv1.PruneCacheMountsResponse
}

func (f *fakeServices) ListCacheMounts(_ context.Context, req *builderv1.ListCacheMountsRequest) (*builderv1.ListCacheMountsResponse, error) {
	f.record(req)
	return f.cacheMounts, nil
}

func (f *fakeServices) PruneCacheMounts(_ context.Context, req *builderv1.PruneCacheMountsRequest) (*builderv1.PruneCacheMountsResponse, error) {
	f.record(req)
	return f.pruneMounts, nil
}

func (f *fakeServices) record(req any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, req)
}

func (f *fakeServices) ImageHistory(_ context.Context, req *metadatav1.ImageHistoryRequest) (*metadatav1.ImageHistoryResponse, error) {
	f.record(req)
	if err := f.errs[req.GetReference()]; err != nil {
		return nil, err
	}
	return &metadatav1.ImageHistoryResponse{Rows: f.history[req.GetReference()]}, nil
}

func (f *fakeServices) ListImages(_ context.Context, req *metadatav1.ListImagesRequest) (*metadatav1.ListImagesResponse, error) {
	f.record(req)
	// Two pages, to prove the CLI follows page tokens.
	if req.GetPageToken() == "" && len(f.images) > 1 {
		return &metadatav1.ListImagesResponse{Images: f.images[:1], NextPageToken: "page-2"}, nil
	}
	if req.GetPageToken() == "page-2" {
		return &metadatav1.ListImagesResponse{Images: f.images[1:]}, nil
	}
	return &metadatav1.ListImagesResponse{Images: f.images}, nil
}

// GetImage answers from existing and is not recorded: the CLI asks it
// before a pull, to tell "up to date" from "downloaded".
func (f *fakeServices) GetImage(_ context.Context, req *metadatav1.GetImageRequest) (*metadatav1.GetImageResponse, error) {
	id, ok := f.existing[req.GetReference()]
	if !ok {
		return nil, errdefs.ToGRPC(errdefs.NotFound("no such image: %s", req.GetReference()))
	}
	return &metadatav1.GetImageResponse{Image: &metadatav1.Image{Id: id}}, nil
}

func (f *fakeServices) InspectImage(_ context.Context, req *metadatav1.InspectImageRequest) (*metadatav1.InspectImageResponse, error) {
	f.record(req)
	if err := f.errs[req.GetReference()]; err != nil {
		return nil, err
	}
	return &metadatav1.InspectImageResponse{DockerJson: f.inspect[req.GetReference()]}, nil
}

func (f *fakeServices) TagImage(_ context.Context, req *metadatav1.TagImageRequest) (*metadatav1.TagImageResponse, error) {
	f.record(req)
	if err := f.errs[req.GetSource()]; err != nil {
		return nil, err
	}
	return &metadatav1.TagImageResponse{ImageId: "sha256:1", Tag: req.GetTarget()}, nil
}

func (f *fakeServices) DeleteImage(_ context.Context, req *metadatav1.DeleteImageRequest) (*metadatav1.DeleteImageResponse, error) {
	f.record(req)
	if err := f.errs[req.GetReference()]; err != nil {
		return nil, err
	}
	return &metadatav1.DeleteImageResponse{Items: f.deleted[req.GetReference()]}, nil
}

func (f *fakeServices) PruneImages(_ context.Context, req *metadatav1.PruneImagesRequest) (*metadatav1.PruneImagesResponse, error) {
	f.record(req)
	return f.prune, nil
}

func (f *fakeServices) GetDiskUsage(_ context.Context, req *metadatav1.GetDiskUsageRequest) (*metadatav1.GetDiskUsageResponse, error) {
	f.record(req)
	return f.diskUsage, nil
}

func (f *fakeServices) Import(stream grpc.BidiStreamingServer[builderv1.ImportRequest, builderv1.ImportResponse]) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	f.record(first.GetOptions())
	for {
		req, err := stream.Recv()
		if err != nil {
			break
		}
		f.received.Write(req.GetData())
	}
	for _, p := range f.progress {
		if err := stream.Send(&builderv1.ImportResponse{Response: &builderv1.ImportResponse_Progress{Progress: p}}); err != nil {
			return err
		}
	}
	return stream.Send(&builderv1.ImportResponse{Response: &builderv1.ImportResponse_Result{Result: &builderv1.ImportResult{ImageId: "sha256:5d56863a0d45c730a804941f150fb79b28ab829e32ba9e86ab036cc1ccd89c7d"}}})
}

func (f *fakeServices) Load(stream grpc.BidiStreamingServer[builderv1.LoadRequest, builderv1.LoadResponse]) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	f.record(first.GetOptions())
	for {
		req, err := stream.Recv()
		if err != nil {
			break
		}
		f.received.Write(req.GetData())
	}
	for _, p := range f.progress {
		if err := stream.Send(&builderv1.LoadResponse{Response: &builderv1.LoadResponse_Progress{Progress: p}}); err != nil {
			return err
		}
	}
	return stream.Send(&builderv1.LoadResponse{Response: &builderv1.LoadResponse_Result{Result: f.loadResult}})
}

func (f *fakeServices) Save(req *builderv1.SaveRequest, stream grpc.ServerStreamingServer[builderv1.SaveResponse]) error {
	f.record(req)
	if err := f.errs[strings.Join(req.GetReferences(), ",")]; err != nil {
		return err
	}
	for i := 0; i < len(f.archive); i += 7 {
		if err := stream.Send(&builderv1.SaveResponse{Data: f.archive[i:min(i+7, len(f.archive))]}); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeServices) Pull(req *builderv1.PullRequest, stream grpc.ServerStreamingServer[builderv1.PullResponse]) error {
	f.record(req)
	if f.block != nil {
		select {
		case <-f.block:
		case <-stream.Context().Done():
			f.record("pull canceled")
			return stream.Context().Err()
		}
	}
	for _, p := range f.progress {
		if err := stream.Send(&builderv1.PullResponse{Response: &builderv1.PullResponse_Progress{Progress: p}}); err != nil {
			return err
		}
	}
	return stream.Send(&builderv1.PullResponse{Response: &builderv1.PullResponse_Result{Result: f.pull}})
}

func (f *fakeServices) Push(req *builderv1.PushRequest, stream grpc.ServerStreamingServer[builderv1.PushResponse]) error {
	f.record(req)
	for _, p := range f.progress {
		if err := stream.Send(&builderv1.PushResponse{Response: &builderv1.PushResponse_Progress{Progress: p}}); err != nil {
			return err
		}
	}
	return stream.Send(&builderv1.PushResponse{Response: &builderv1.PushResponse_Result{Result: f.push}})
}

// serve starts the fake on a loopback port and returns its address.
func (f *fakeServices) serve(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	metadatav1.RegisterImageServiceServer(srv, f)
	builderv1.RegisterBuildServiceServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// result of one CLI run.
type result struct {
	code        int
	out, errOut string
}

// run runs the CLI against addr (every service there) with stdin in.
func run(t *testing.T, addr, in string, args ...string) result {
	t.Helper()
	return runCtx(context.Background(), t, addr, in, args...)
}

func runCtx(ctx context.Context, t *testing.T, addr, in string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	all := append([]string{"--builder", addr, "--metadata", addr, "--blobstore", addr}, args...)
	c := &CLI{In: strings.NewReader(in), Out: &out, Err: &errOut, Now: func() time.Time { return testNow }}
	code := execute(ctx, c, all)
	return result{code: code, out: out.String(), errOut: errOut.String()}
}

var testNow = time.Date(2026, 11, 27, 4, 5, 50, 0, time.UTC)
