package plan

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/services/builder/internal/buildctx"
	"github.com/strata-build/strata/services/builder/internal/cache"
)

// The cache key of a step, and the source hashes Docker writes in COPY and
// ADD history.

// stepKey returns the step's cache key and the size of the container config
// it covers. network is the build's RUN network when not the bridge.
func stepKey(parent digest.Digest, s *Step, network string) (digest.Digest, int64) {
	cc := s.ContainerConfig.Clone()
	cc.Image, cc.Hostname = "", ""
	b, _ := json.Marshal(cc)
	var sources digest.Digest
	if cp := s.Copy; cp != nil {
		sources = cp.sourcesKey()
	}
	return cache.Step{
		Parent:   parent,
		Config:   b,
		Author:   s.Author,
		Args:     s.Args,
		Sources:  sources,
		Platform: "linux/amd64",
		Network:  runNetwork(s, network),
		Mounts:   runMounts(s),
	}.Key(), int64(len(b))
}

// linkKey is the key of a COPY or ADD --link step's layer, made in an
// empty root and put over the layers below, as BuildKit merges it
// (llb.Merge of the base and a copy onto llb.Scratch): like BuildKit's key
// of that copy, it covers what is copied and how — the instruction, the
// sources' content, mode and owner (or the --from stage's key or image),
// the absolute destination (the working directory of a relative one), and
// --chown, --exclude and --parents (sourcesKey) — plus the destination as
// written, which the step's history row holds, so a record found under
// the key always has this step's row; and nothing of the
// parent, so a change to an earlier step leaves it as it was. It is of a
// kind of its own ("link"), never equal to a step key, and it leaves the
// step's own key, which the step's chain records use, unchanged.
func linkKey(s *Step) digest.Digest {
	return cache.New("link").String(s.Cmd.Name()).String(string(s.Copy.sourcesKey())).String(s.Copy.DestText).String("linux/amd64").Digest()
}

// runMounts is what of a RUN step's mounts its key names: each mount's
// spec, never a secret's value nor a cache mount's content.
func runMounts(s *Step) []string {
	if s.Kind != KindRun || s.Run == nil {
		return nil
	}
	var out []string
	for _, m := range s.Run.Secrets {
		out = append(out, m.Spec())
	}
	for _, m := range s.Run.SSH {
		out = append(out, m.Spec())
	}
	for _, m := range s.Mounts {
		out = append(out, m.spec())
	}
	return out
}

// runNetwork is what of the build's network a step's key names: a RUN
// step's when not the bridge (its RUN --network, else the build's), nothing
// for other steps (they run nothing).
func runNetwork(s *Step, network string) string {
	if s.Kind != KindRun {
		return ""
	}
	if s.Run.Network != "" {
		return s.Run.Network
	}
	return network
}

// CopyComment is the history text of a COPY or ADD: Docker writes
// "COPY <hash> in <dest> ", with the destination as written and
// "--chown=…" glued before the hash.
func CopyComment(name string, cp *Copy) string {
	chown := ""
	if cp.Chown != "" {
		chown = "--chown=" + cp.Chown
	}
	return fmt.Sprintf("%s %s%s in %s ", name, chown, cp.Hash, cp.DestText)
}

// sourcesKey is the part of a COPY's key its sources make: the content,
// mode and owner of every file from the context, or the source stage's key
// (or image ID) and the paths for --from.
func (cp *Copy) sourcesKey() digest.Digest {
	h := cache.New("copy")
	switch {
	case cp.FromStage != nil:
		h.String("stage").String(string(cp.FromStage.LastKey())).Strings(cp.Paths)
	case cp.FromImage != nil:
		h.String("image").String(string(cp.FromImage.ID())).Strings(cp.Paths)
	}
	for _, f := range cp.Sources {
		if f.Commit != "" {
			// The commit, as BuildKit keys a Git source: a branch that
			// moved is a miss even to the same files.
			h.String("git").String(f.Commit)
		}
	}
	h.String(string(cp.filesDigest()))
	h.String(cp.Chown)
	if len(cp.Exclude) > 0 {
		h.String("exclude").Strings(cp.Exclude)
	}
	if cp.Parents {
		h.String("parents")
		for _, f := range cp.Sources {
			if f.Entry != nil {
				h.String(f.Entry.Path).String(f.Include)
			}
		}
	}
	if cp.Chmod != nil {
		h.Int(int64(*cp.Chmod))
	}
	if cp.Link {
		h.String("link")
	}
	if cp.ChmodSymbolic != "" {
		h.String("chmod").String(cp.ChmodSymbolic)
	}
	h.String(cp.Dest)
	return h.Digest()
}

// filesDigest is the digest of every source file (cache.Sources). When
// all come from the build context, it is computed once per context: a
// rebuild of a context of thousands of files keys its COPY steps without
// hashing them again.
func (cp *Copy) filesDigest() digest.Digest {
	files := func() digest.Digest {
		var files []cache.File
		for _, f := range cp.Sources {
			switch {
			case f.Entry != nil:
				files = append(files, cp.contextFiles(f)...)
			default:
				files = append(files, cache.File{Path: f.Name, Mode: 0o644, Digest: digest.FromBytes(f.Data)})
			}
		}
		return cache.Sources(files)
	}
	if len(cp.Sources) == 0 {
		return files()
	}
	keys := make([]string, 0, len(cp.Sources))
	for _, f := range cp.Sources {
		key, ok := cp.contextKey(f)
		if !ok {
			return files()
		}
		keys = append(keys, key)
	}
	return cp.context.Memo("sources\x00"+strings.Join(keys, "\x01"), func() any { return files() }).(digest.Digest)
}

// contextKey is the key under which a source's files are kept with the
// build context, when it is a source of the context.
func (cp *Copy) contextKey(f Source) (string, bool) {
	if f.Entry == nil || f.Checkout != nil || cp.context == nil || isURL(f.Src) {
		return "", false
	}
	return fmt.Sprintf("files\x00%q\x00%q\x00%t\x00%q\x00%q", f.Src, f.Entry.Path, f.Unpack, cp.Exclude, f.Include), true
}

// contextFiles lists what a context source contributes, relative to it.
func (cp *Copy) contextFiles(f Source) []cache.File {
	if f.Checkout != nil {
		key := fmt.Sprintf("files\x00%q", cp.Exclude)
		return f.Checkout.Memo(key, func() any { return cp.walkFiles(f) }).([]cache.File)
	}
	key, ok := cp.contextKey(f)
	if !ok {
		return cp.walkFiles(f)
	}
	return cp.context.Memo(key, func() any { return cp.walkFiles(f) }).([]cache.File)
}

func (cp *Copy) walkFiles(f Source) []cache.File {
	var out []cache.File
	add := func(rel string, e *buildctx.Entry) {
		out = append(out, cache.File{Path: f.Src + "\x00" + rel, Mode: e.Mode, UID: e.UID, GID: e.GID, Digest: e.Digest, LinkTarget: e.LinkTarget})
	}
	if !f.Entry.Mode.IsDir() {
		add("", f.Entry)
		if f.Unpack {
			out = append(out, cache.File{Path: "\x00unpack"})
		}
		return out
	}
	root := f.Entry.Path
	for _, e := range cp.walkSource(f) {
		add(strings.TrimPrefix(strings.TrimPrefix(e.Path, root), "/"), e)
	}
	return out
}

// walkSource lists a directory source and everything under it that
// --exclude keeps, in walk order.
func (cp *Copy) walkSource(f Source) []*buildctx.Entry {
	var all []*buildctx.Entry
	if f.Checkout != nil {
		_ = f.Checkout.Walk(f.Entry.Path, func(e *buildctx.Entry) error { all = append(all, e); return nil })
	} else {
		_ = cp.ctxWalk(f.Entry, func(e *buildctx.Entry) { all = append(all, e) })
	}
	return Filter(cp.Excluder, f.Include, all, func(e *buildctx.Entry) (string, bool) {
		return relPath(f.Entry.Path, e.Path), e.Mode.IsDir()
	})
}

// relPath is the context path p relative to the context directory root.
func relPath(root, p string) string {
	if root == "." {
		return p
	}
	return strings.TrimPrefix(strings.TrimPrefix(p, root), "/")
}

// ctxWalk is set by the planner to walk the build context.
func (cp *Copy) ctxWalk(e *buildctx.Entry, fn func(*buildctx.Entry)) error {
	if cp.walk == nil {
		return nil
	}
	return cp.walk(e.Path, fn)
}

// keyHash is the source hash the plan writes in a COPY or ADD step's
// container Cmd, and so in its cache key, in the shape Docker's history has
// ("file:<hex>", "dir:<hex>", "multi:<hex>"), over every file's name, mode,
// owner, link target and content digest. It stands in for the hash Docker
// writes, which covers the file contents as tar streams them and so needs
// them at hand: the step writes that one (copier.SourceHash) when it runs.
func (cp *Copy) keyHash() string {
	var hashes []string
	for _, f := range cp.Sources {
		switch {
		case f.Entry == nil:
			hashes = append(hashes, "file:"+digest.FromBytes(f.Data).Encoded())
		case f.Entry.Mode.IsDir():
			hash := func() any {
				var subs []string
				for _, e := range cp.walkSource(f) {
					if e != f.Entry {
						subs = append(subs, fileHash(e))
					}
				}
				slices.Sort(subs)
				return "dir:" + digest.FromString(strings.Join(subs, ",")).Encoded()
			}
			if tree := f.Tree(cp.context); tree != nil {
				hashes = append(hashes, tree.Memo(fmt.Sprintf("dirhash\x00%s\x00%q\x00%s", f.Entry.Path, cp.Exclude, f.Include), hash).(string))
			} else {
				hashes = append(hashes, hash().(string))
			}
		default:
			hashes = append(hashes, "file:"+fileHash(f.Entry))
		}
	}
	if len(hashes) == 1 {
		return hashes[0]
	}
	return "multi:" + digest.FromString(strings.Join(hashes, ",")).Encoded()
}

// fileHash is a file's part of keyHash: its name, mode, owner, link target
// and content digest.
func fileHash(e *buildctx.Entry) string {
	return cache.New("file").String(e.Path).Int(int64(e.Mode)).Int(int64(e.UID)).Int(int64(e.GID)).
		String(e.LinkTarget).String(string(e.Digest)).Digest().Encoded()
}
