package exec

import (
	"context"
	"io"

	digest "github.com/opencontainers/go-digest"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/services/builder/internal/image"
	"github.com/strata-build/strata/services/builder/internal/layer"
	"github.com/strata-build/strata/services/builder/internal/sandbox"
	"github.com/strata-build/strata/services/builder/internal/snapshot"
)

// The adapters below fit the builder's runtime packages (snapshot, layer,
// sandbox) to the small interfaces a run uses, so that it reads as steps
// and its tests can stand a fake in for runc.

// SnapshotStore mounts steps over a snapshot.Store, unpacking missing layers
// from blobs.
func SnapshotStore(s *snapshot.Store, blobs Blobs) Snapshots {
	return snapshots{s: s, blobs: blobs}
}

type snapshots struct {
	s     *snapshot.Store
	blobs Blobs
}

func (s snapshots) Mount(ctx context.Context, layers []image.Layer, mo MountOptions) (Mount, error) {
	ls := make([]snapshot.Layer, len(layers))
	for i, l := range layers {
		blob := l.Blob.Digest
		ls[i] = snapshot.Layer{DiffID: l.DiffID, Open: func(ctx context.Context) (io.ReadCloser, error) {
			return s.blobs.Open(ctx, blob)
		}}
		if src, ok := mo.Tars[l.DiffID]; ok {
			ls[i].Open = func(ctx context.Context) (io.ReadCloser, error) { return layer.Open(ctx, src), nil }
		}
	}
	var opts []snapshot.PrepareOpt
	if mo.Init {
		opts = append(opts, snapshot.WithInit())
	}
	a, err := s.s.Prepare(ctx, ls, opts...)
	if err != nil {
		return nil, err
	}
	return active{a: a, s: s.s}, nil
}

func (s snapshots) Add(ctx context.Context, layers []image.Layer, fill func(ctx context.Context, dir string) (image.Layer, error)) (image.Layer, Snapshot, error) {
	var parent digest.Digest
	for _, l := range layers {
		parent = snapshot.ChainID(parent, l.DiffID)
	}
	var l image.Layer
	ref, _, err := s.s.Add(ctx, parent, func(ctx context.Context, dir string) (digest.Digest, int64, error) {
		var err error
		l, err = fill(ctx, dir)
		return l.DiffID, l.DiffSize, err
	})
	if err != nil {
		return image.Layer{}, nil, err
	}
	return l, ref, nil
}

type active struct {
	a *snapshot.Active
	s *snapshot.Store
}

func (a active) Root() string  { return a.a.RootFS() }
func (a active) Upper() string { return a.a.UpperDir() }
func (a active) Release() error {
	return a.a.Release()
}

func (a active) Commit(ctx context.Context, l image.Layer) (Snapshot, error) {
	chain, err := a.a.Commit(ctx, l.DiffID, l.DiffSize)
	if err != nil {
		return nil, err
	}
	return a.s.Acquire(chain)
}

// LayerWriter writes layer tars as gzip layers into blobs.
func LayerWriter(blobs Blobs) Layers { return layers{blobs} }

type layers struct{ blobs Blobs }

func (l layers) DiffID(ctx context.Context, src layer.Source) (image.Layer, error) {
	u, err := layer.DiffID(ctx, src)
	if err != nil {
		return image.Layer{}, err
	}
	return image.Layer{DiffID: u.DiffID, DiffSize: u.DiffSize}, nil
}

func (l layers) Store(ctx context.Context, src layer.Source) (image.Layer, error) {
	w, err := l.blobs.Writer(ctx, layer.MediaTypeGzip)
	if err != nil {
		return image.Layer{}, err
	}
	d, err := layer.WriteDiff(ctx, w, src)
	if err != nil {
		return image.Layer{}, err
	}
	return image.Layer{Blob: d.OCI(), DiffID: d.DiffID, DiffSize: d.DiffSize}, nil
}

// RuncSandbox runs RUN steps with the sandbox package's runc runner.
func RuncSandbox(r *sandbox.Runner) Sandbox { return runner{r} }

type runner struct{ r *sandbox.Runner }

func (s runner) Admit(network builderv1.NetworkMode, res *builderv1.RunResources) error {
	return s.r.Admit(sandboxNetwork(network), sandboxLimits(res))
}

func (s runner) Run(ctx context.Context, p Process) (int, error) {
	return s.r.Run(ctx, sandbox.Process{
		RootFS: p.Root, UpperDir: p.Upper, Discard: p.Discard, Args: p.Args, Env: p.Env, User: p.User, Cwd: p.Cwd, Hostname: p.Hostname,
		Network: sandboxNetwork(p.Network), Limits: sandboxLimits(p.Resources), Mounts: p.Mounts, Secrets: p.Secrets, Agents: p.Agents,
		Output: func(stream sandbox.Stream, line []byte) {
			w := p.Stdout
			if stream == sandbox.Stderr {
				w = p.Stderr
			}
			w.Write(append(line, '\n'))
		},
	})
}

func sandboxNetwork(m builderv1.NetworkMode) sandbox.Network {
	switch m {
	case builderv1.NetworkMode_NETWORK_MODE_NONE:
		return sandbox.NetworkNone
	case builderv1.NetworkMode_NETWORK_MODE_HOST:
		return sandbox.NetworkHost
	}
	return sandbox.NetworkBridge
}

func sandboxLimits(r *builderv1.RunResources) sandbox.Limits {
	l := sandbox.Limits{
		Memory: r.GetMemory(), MemorySwap: r.GetMemorySwap(), Pids: r.GetPidsLimit(),
		CPUShares: r.GetCpuShares(), CPUPeriod: r.GetCpuPeriod(), CPUQuota: r.GetCpuQuota(),
		Disk: r.GetDisk(),
	}
	for _, u := range r.GetUlimits() {
		l.Ulimits = append(l.Ulimits, sandbox.Ulimit{Name: u.GetName(), Soft: u.GetSoft(), Hard: u.GetHard()})
	}
	return l
}
