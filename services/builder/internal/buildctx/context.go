package buildctx

import (
	"io/fs"
	"path"
	"sort"
	"strings"
	"sync"

	"github.com/moby/patternmatcher"
	"github.com/opencontainers/go-digest"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/errdefs"
)

// MaxEntries bounds the file list of one context.
const MaxEntries = 1 << 20

// Entry is one file, directory or symlink of a context.
type Entry struct {
	// Path is the clean path relative to the context root, "/"-separated;
	// "." is the root.
	Path string
	// Mode is the file mode in Go's form (type bits and permissions,
	// setuid/setgid/sticky).
	Mode fs.FileMode
	// UID and GID are the owner on the client.
	UID, GID uint32
	// Size is a regular file's size.
	Size int64
	// Digest is a regular file's content digest.
	Digest digest.Digest
	// LinkTarget is a symlink's target.
	LinkTarget string
	// ModTimeNano is the modification time, kept in layers; never part of a
	// cache key.
	ModTimeNano int64
	// Implied marks a directory the context holds only because an entry
	// below it is there: .dockerignore excludes it, or the list did not
	// name it. Docker's context tar has no header of its own for it.
	Implied bool
}

// Context is the tree of one build's context.
type Context struct {
	entries  map[string]*Entry
	children map[string][]string
	sizes    map[digest.Digest]int64 // the declared size of each content
	removed  map[string]*Entry       // what Ignore took out though keep named it
	memo     sync.Map
}

// New builds a context from the client's file list. Names that are
// absolute, contain "..", empty or "." elements, or NUL bytes are refused:
// a context cannot name a path outside itself. Directories the list implies
// but does not hold are added (mode 0755).
func New(list []*builderv1.FileEntry) (*Context, error) {
	if len(list) > MaxEntries {
		return nil, errdefs.ResourceExhausted("context has %d entries; the limit is %d", len(list), MaxEntries)
	}
	c := &Context{entries: map[string]*Entry{}, sizes: map[digest.Digest]int64{}}
	c.entries["."] = &Entry{Path: ".", Mode: fs.ModeDir | 0o755}
	for _, fe := range list {
		if err := checkName(fe.GetPath()); err != nil {
			return nil, err
		}
		e := &Entry{
			Path: fe.GetPath(), Mode: goMode(fe.GetMode()), UID: fe.GetUid(), GID: fe.GetGid(),
			Size: fe.GetSize(), LinkTarget: fe.GetLinkTarget(), ModTimeNano: fe.GetMtimeUnixNano(),
		}
		switch {
		case e.Mode.IsRegular():
			e.Digest = digest.Digest(fe.GetDigest())
			if err := ValidDigest(e.Digest); err != nil {
				return nil, errdefs.InvalidArgument("context file %q: %v", e.Path, err)
			}
			if e.Size < 0 {
				return nil, errdefs.InvalidArgument("context file %q has a negative size", e.Path)
			}
			if size, ok := c.sizes[e.Digest]; ok && size != e.Size {
				return nil, errdefs.InvalidArgument("context file %q declares %d bytes, another file of the same digest %d", e.Path, e.Size, size)
			}
			c.sizes[e.Digest] = e.Size
		case e.Mode.IsDir():
		case e.Mode&fs.ModeSymlink != 0:
			if e.LinkTarget == "" || strings.ContainsRune(e.LinkTarget, 0) {
				return nil, errdefs.InvalidArgument("context symlink %q has no valid target", e.Path)
			}
		default:
			return nil, errdefs.InvalidArgument("context entry %q is neither a file, a directory nor a symlink", e.Path)
		}
		if e.Path == "." {
			if !e.Mode.IsDir() {
				return nil, errdefs.InvalidArgument("context root must be a directory")
			}
			c.entries["."] = e
			continue
		}
		if _, dup := c.entries[e.Path]; dup {
			return nil, errdefs.InvalidArgument("context lists %q twice", e.Path)
		}
		c.entries[e.Path] = e
	}
	if err := c.index(); err != nil {
		return nil, err
	}
	return c, nil
}

// index adds the directories that the entries imply but the list does not
// hold (mode 0755, as extracting a tar creates them) and lists the
// children of every directory.
func (c *Context) index() error {
	paths := make([]string, 0, len(c.entries))
	for p := range c.entries {
		paths = append(paths, p)
	}
	for _, p := range paths {
		for p != "." {
			parent := path.Dir(p)
			if _, ok := c.entries[parent]; !ok {
				c.entries[parent] = &Entry{Path: parent, Mode: fs.ModeDir | 0o755, Implied: true}
			} else if !c.entries[parent].Mode.IsDir() {
				return errdefs.InvalidArgument("context entry %q is inside %q, which is not a directory", p, parent)
			}
			p = parent
		}
	}
	c.children = map[string][]string{}
	for p := range c.entries {
		if p != "." {
			c.children[path.Dir(p)] = append(c.children[path.Dir(p)], p)
		}
	}
	for _, kids := range c.children {
		sort.Strings(kids)
	}
	return nil
}

func checkName(p string) error {
	if p == "." {
		return nil
	}
	if p == "" || strings.HasPrefix(p, "/") || strings.ContainsRune(p, 0) {
		return errdefs.InvalidArgument("context path %q is not a relative path", shortString(p))
	}
	for _, el := range strings.Split(p, "/") {
		if el == "" || el == "." || el == ".." {
			return errdefs.InvalidArgument("context path %q has a %q element: a context cannot name paths outside itself", shortString(p), el)
		}
	}
	return nil
}

// goMode converts Unix mode bits (S_IFMT and permissions) to fs.FileMode.
func goMode(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	switch m & 0o170000 {
	case 0o040000:
		mode |= fs.ModeDir
	case 0o120000:
		mode |= fs.ModeSymlink
	case 0o100000:
	default:
		mode |= fs.ModeIrregular
	}
	if m&0o4000 != 0 {
		mode |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

// UnixMode converts an fs.FileMode to Unix mode bits.
func UnixMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	switch {
	case m.IsDir():
		u |= 0o040000
	case m&fs.ModeSymlink != 0:
		u |= 0o120000
	default:
		u |= 0o100000
	}
	if m&fs.ModeSetuid != 0 {
		u |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		u |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		u |= 0o1000
	}
	return u
}

// Lookup returns the entry at a clean relative path.
func (c *Context) Lookup(p string) (*Entry, bool) {
	e, ok := c.entries[p]
	return e, ok
}

// Size returns the size the file list declares for the content d.
func (c *Context) Size(d digest.Digest) (int64, bool) {
	size, ok := c.sizes[d]
	return size, ok
}

// Digests returns the content digests of every regular file, each once.
func (c *Context) Digests() []digest.Digest {
	return c.Memo("digests", func() any { return c.digests() }).([]digest.Digest)
}

func (c *Context) digests() []digest.Digest {
	seen := map[digest.Digest]bool{}
	var out []digest.Digest
	for _, e := range c.entries {
		if e.Digest != "" && !seen[e.Digest] {
			seen[e.Digest] = true
			out = append(out, e.Digest)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Walk calls fn for p and, when p is a directory, everything under it, in
// path order. Symlinks are not followed.
func (c *Context) Walk(p string, fn func(e *Entry) error) error {
	e, ok := c.entries[p]
	if !ok {
		return errdefs.NotFound("%s: not found in the build context", p)
	}
	if err := fn(e); err != nil {
		return err
	}
	for _, k := range c.children[p] {
		if err := c.Walk(k, fn); err != nil {
			return err
		}
	}
	return nil
}

// maxLinks bounds symlink resolution, as the kernel's ELOOP does.
const maxLinks = 40

// Resolve resolves a source path of COPY or ADD in the context: it cleans
// it as if the context were "/", and follows symlinks, each resolved inside
// the context (an absolute target is taken from the context root), so the
// result never leaves the context. A path that goes above the context root
// before any symlink ("../x") is refused, as Docker refuses it.
func (c *Context) Resolve(src string) (*Entry, error) {
	if outside(src) {
		return nil, errdefs.InvalidArgument("%q is outside the build context", src)
	}
	rest := strings.Split(strings.TrimPrefix(path.Clean("/"+src), "/"), "/")
	cur := "."
	links := 0
	for len(rest) > 0 {
		el := rest[0]
		rest = rest[1:]
		switch el {
		case "", ".":
			continue
		case "..":
			cur = path.Dir(cur)
			continue
		}
		next := path.Join(cur, el)
		e, ok := c.entries[next]
		if !ok {
			return nil, errdefs.NotFound("%q: %s not found in the build context", src, next)
		}
		if e.Mode&fs.ModeSymlink != 0 {
			if links++; links > maxLinks {
				return nil, errdefs.InvalidArgument("%q: too many levels of symbolic links", src)
			}
			target := e.LinkTarget
			if path.IsAbs(target) {
				cur = "."
			}
			rest = append(strings.Split(target, "/"), rest...)
			continue
		}
		if len(rest) > 0 && !e.Mode.IsDir() {
			return nil, errdefs.NotFound("%q: %s is not a directory", src, next)
		}
		cur = next
	}
	return c.entries[cur], nil
}

// outside reports whether a relative source path climbs above the root.
func outside(src string) bool {
	if path.IsAbs(src) {
		src = strings.TrimLeft(src, "/")
	}
	depth := 0
	for _, el := range strings.Split(src, "/") {
		switch el {
		case "", ".":
		case "..":
			if depth--; depth < 0 {
				return true
			}
		default:
			depth++
		}
	}
	return false
}

// Match returns the clean paths of the context that a wildcard source
// matches (path.Match on every path but the root, as Docker walks the
// context), sorted.
func (c *Context) Match(pattern string) ([]string, error) {
	pattern = strings.TrimPrefix(path.Clean("/"+pattern), "/")
	if _, err := path.Match(pattern, ""); err != nil {
		return nil, errdefs.InvalidArgument("COPY source pattern %q: %v", pattern, err)
	}
	var out []string
	for p := range c.entries {
		if ok, _ := path.Match(pattern, p); ok && p != "." {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out, nil
}

// Ignore removes the entries that .dockerignore patterns exclude. The
// client applies the patterns already; applying them again here means a
// client that sends excluded files anyway cannot get them into an image.
// The paths in keep (the Dockerfile and .dockerignore) travel always, so
// that the builder can read them, and the directories above them stay; but
// when the patterns name them they leave the context too (Removed still
// finds them), as Docker's daemon removes them once it has read them: COPY
// . leaves them out, and editing them misses no cache. An excluded
// directory that still holds an entry ("dir" and "!dir/keep") stays as
// Docker's context tar implies it: mode 0755.
func (c *Context) Ignore(patterns []string, keep ...string) error {
	if len(patterns) == 0 {
		return nil
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		return errdefs.InvalidArgument(".dockerignore: %v", err)
	}
	kept := map[string]bool{}
	for _, k := range keep {
		kept[k] = true
	}
	for p := range c.entries {
		if p == "." {
			continue
		}
		if skip, err := pm.MatchesOrParentMatches(p); err == nil && skip && (kept[p] || !c.keepsSomething(p, kept)) {
			if kept[p] {
				if c.removed == nil {
					c.removed = map[string]*Entry{}
				}
				c.removed[p] = c.entries[p]
			}
			delete(c.entries, p)
		} else if err == nil && skip {
			c.entries[p] = &Entry{Path: p, Mode: fs.ModeDir | 0o755, Implied: true}
		}
	}
	c.memo.Clear()
	return c.index()
}

// Removed returns the entry at p that Ignore took out of the context
// though its caller kept it to read (an ignored Dockerfile).
func (c *Context) Removed(p string) (*Entry, bool) {
	e, ok := c.removed[path.Clean(p)]
	return e, ok
}

// keepsSomething reports whether a directory holds a path that must stay.
func (c *Context) keepsSomething(dir string, kept map[string]bool) bool {
	for k := range kept {
		if strings.HasPrefix(k, dir+"/") {
			return true
		}
	}
	return false
}

// Memo returns the value compute gives for key, computing it once per
// context: a builder keeps recent contexts, and what builds derive from a
// context (source digests of a COPY) holds as long as it does.
func (c *Context) Memo(key string, compute func() any) any {
	if v, ok := c.memo.Load(key); ok {
		return v
	}
	v := compute()
	c.memo.Store(key, v)
	return v
}
