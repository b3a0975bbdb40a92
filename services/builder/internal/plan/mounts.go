package plan

import (
	"context"
	"fmt"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/buildctx"
	"github.com/strata-build/strata/services/builder/internal/cache"
	"github.com/strata-build/strata/services/builder/internal/dockerfile"
	"github.com/strata-build/strata/services/builder/internal/image"
)

// Mount is a RUN --mount resolved: the options as the dockerfile package
// checked them (absolute target, a cache's id and sharing filled in) and
// what from= names.
type Mount struct {
	*instructions.Mount
	// At most one of these is set for a bind mount: the stage or image
	// whose root filesystem it mounts from; neither is the build context,
	// whose Source entry is ContextEntry. A cache mount's from= seeds its
	// directory when it is created.
	FromStage    *Stage
	FromImage    *image.Image
	ContextEntry *buildctx.Entry

	context *buildctx.Context
}

// CacheMode is a cache mount's directory mode (0755 unless mode= says).
func (m *Mount) CacheMode() uint32 {
	if m.Mode != nil {
		return uint32(*m.Mode)
	}
	return 0o755
}

// CacheOwner is a cache mount's directory owner (0:0 unless uid= and gid=
// say).
func (m *Mount) CacheOwner() (uid, gid int) {
	if m.UID != nil {
		uid = int(*m.UID)
	}
	if m.GID != nil {
		gid = int(*m.GID)
	}
	return uid, gid
}

// mounts resolves a RUN step's mounts of stage.
func (p *planner) mounts(ctx context.Context, c *instructions.RunCommand, ms []*instructions.Mount, stage int) ([]*Mount, error) {
	var out []*Mount
	for _, m := range ms {
		pm := &Mount{Mount: m}
		opt := fmt.Sprintf("RUN --mount=type=%s", m.Type)
		switch {
		case m.From != "":
			if j, ok, err := p.df.StageIndex(m.From, stage); err != nil {
				return nil, dockerfile.Errorf(c, "%s,from=%s: %v", opt, m.From, err)
			} else if ok {
				pm.FromStage = p.byIndex[j]
			} else {
				img, err := p.resolve(ctx, m.From)
				if err != nil {
					return nil, errdefs.New(errdefs.KindOf(err), "Dockerfile:%d: %s,from=%s: no stage of that name, and the image: %w", dockerfile.Line(c), opt, m.From, err)
				}
				pm.FromImage = img
			}
		case m.Type == instructions.MountTypeBind:
			bctx := p.in.Context
			if bctx == nil {
				return nil, dockerfile.Errorf(c, "%s: the build has no context", opt)
			}
			e, err := bctx.Resolve(m.Source)
			if err != nil {
				return nil, errdefs.New(errdefs.KindOf(err), "Dockerfile:%d: %s,source=%s: %w", dockerfile.Line(c), opt, m.Source, err)
			}
			pm.ContextEntry, pm.context = e, bctx
		}
		out = append(out, pm)
	}
	return out, nil
}

// spec is what of a cache, tmpfs or bind mount a RUN step's key names:
// every option (type, target, source, read-only, a cache's id, sharing,
// mode and owner, a tmpfs's size) and what the mount shows: the from=
// stage's key, the image's ID, or the content of the context's files under
// a bind mount's source. A cache mount's content is never part of it, as
// in BuildKit.
func (m *Mount) spec() string {
	h := cache.New("run-mount").String(string(m.Type)).String(m.Target).String(m.Source).String(fmt.Sprint(m.ReadOnly))
	switch m.Type {
	case instructions.MountTypeCache:
		uid, gid := m.CacheOwner()
		h.String(m.CacheID).String(string(m.CacheSharing)).Int(int64(m.CacheMode())).Int(int64(uid)).Int(int64(gid))
	case instructions.MountTypeTmpfs:
		h.Int(m.SizeLimit)
	}
	switch {
	case m.FromStage != nil:
		h.String("stage").String(string(m.FromStage.LastKey()))
	case m.FromImage != nil:
		h.String("image").String(string(m.FromImage.ID()))
	case m.ContextEntry != nil:
		h.String("context").String(string(m.contextKey()))
	default:
		h.String("")
	}
	return string(m.Type) + "," + string(h.Digest())
}

// contextKey is the content of what a bind mount of the context shows:
// every file's path under the source, mode, owner and content.
func (m *Mount) contextKey() digest.Digest {
	e := m.ContextEntry
	walk := func() any {
		var files []cache.File
		_ = m.context.Walk(e.Path, func(f *buildctx.Entry) error {
			files = append(files, cache.File{Path: f.Path, Mode: f.Mode, UID: f.UID, GID: f.GID, Digest: f.Digest, LinkTarget: f.LinkTarget})
			return nil
		})
		return cache.Sources(files)
	}
	return m.context.Memo("mountkey\x00"+e.Path, walk).(digest.Digest)
}
