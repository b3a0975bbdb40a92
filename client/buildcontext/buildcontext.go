// Package buildcontext prepares a build context on the client: it walks the
// context directory honouring .dockerignore (with moby/patternmatcher, as
// Docker's CLI does), lists every file with its metadata and content digest,
// and later sends the contents the builder asks for. Digests come from a
// stat-keyed cache kept between builds, so an unchanged tree is not read
// again: a rebuild costs one walk of stat calls.
package buildcontext

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"syscall"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
)

// Context is a walked build context.
type Context struct {
	// Dir is the context directory.
	Dir string
	// Entries are the files, directories and symlinks that travel, in path
	// order.
	Entries []*builderv1.FileEntry
	// Size is the bytes of all regular files listed.
	Size int64

	// contents are the context's distinct contents: a file that holds
	// each, and its size.
	contents map[digest.Digest]content
}

type content struct {
	path string
	size int64
}

// Options say what to walk.
type Options struct {
	// Dir is the context directory.
	Dir string
	// Dockerfile is the Dockerfile's path relative to Dir, when it is inside
	// the context; it travels even when .dockerignore excludes it.
	Dockerfile string
	// CacheDir keeps the digest cache; none when empty.
	CacheDir string
}

// Walk walks a context directory: a rebuild's whole cost when the digest
// cache knows every file, so each entry costs one stat, relative to its
// directory, and nothing else that is not needed (no sorting of each
// directory, no path cleaning).
func Walk(opts Options) (*Context, error) {
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("unable to prepare context: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("unable to prepare context: %s is not a directory", opts.Dir)
	}
	excludes, err := readIgnore(dir)
	if err != nil {
		return nil, err
	}
	always := map[string]bool{".dockerignore": true}
	if opts.Dockerfile != "" {
		always[filepath.ToSlash(filepath.Clean(opts.Dockerfile))] = true
	}
	pm, err := patternmatcher.New(excludes)
	if err != nil {
		return nil, fmt.Errorf("invalid .dockerignore: %w", err)
	}
	w := &walker{pm: pm, always: always, cache: loadCache(opts.CacheDir, dir)}
	w.c = &Context{Dir: dir, contents: make(map[digest.Digest]content, len(w.cache.entries))}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return nil, fmt.Errorf("unable to prepare context: %w", &fs.PathError{Op: "lstat", Path: dir, Err: err})
	}
	if err := w.add(".", dir, &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		if err := w.dir("", dir); err != nil {
			return nil, err
		}
	}
	c, cache, jobs := w.c, w.cache, w.jobs

	// The Dockerfile travels even from inside an excluded directory.
	if df := filepath.ToSlash(filepath.Clean(opts.Dockerfile)); opts.Dockerfile != "" && !listed(c.Entries, df) {
		p := filepath.Join(dir, filepath.FromSlash(df))
		if info, err := os.Lstat(p); err == nil && info.Mode().IsRegular() {
			e := &builderv1.FileEntry{Path: df, Mode: unixMode(info.Mode()), Size: info.Size(), MtimeUnixNano: info.ModTime().UnixNano()}
			c.Entries = append(c.Entries, e)
			jobs = append(jobs, job{entry: e, path: p, key: statKey{Size: info.Size(), Mtime: info.ModTime().UnixNano()}})
		}
	}

	// Hash what the cache did not know, on every core.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	next := make(chan job)
	for range runtime.NumCPU() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range next {
				d, err := hashFile(j.path)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = fmt.Errorf("unable to prepare context: %w", err)
				}
				j.entry.Digest = string(d)
				c.contents[d] = content{path: j.path, size: j.entry.Size}
				cache.put(j.entry.Path, j.key, d)
				mu.Unlock()
			}
		}()
	}
	for _, j := range jobs {
		next <- j
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	sort.Slice(c.Entries, func(i, j int) bool { return c.Entries[i].Path < c.Entries[j].Path })
	if len(jobs) > 0 {
		cache.save(c.Entries)
	}
	return c, nil
}

// job is a file to hash: the cache did not know its content.
type job struct {
	entry *builderv1.FileEntry
	path  string
	key   statKey
}

// walker lists a context's entries as filepath.WalkDir would visit them,
// .dockerignore applied.
type walker struct {
	pm     *patternmatcher.PatternMatcher
	always map[string]bool
	cache  *hashCache
	c      *Context
	// jobs are the files whose digest the cache did not know.
	jobs []job
}

// dir lists the entries of the directory at path (rel in the context, ""
// for its root) and walks its subdirectories.
func (w *walker) dir(rel, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("unable to prepare context: %w", err)
	}
	defer f.Close()
	ents, err := f.ReadDir(-1)
	if err != nil {
		return fmt.Errorf("unable to prepare context: %w", err)
	}
	fd := int(f.Fd())
	for _, d := range ents {
		name := d.Name()
		r := name
		if rel != "" {
			r = rel + "/" + name
		}
		descend := d.IsDir()
		if !w.always[r] {
			skip, err := w.pm.MatchesOrParentMatches(r)
			if err != nil {
				return err
			}
			if skip {
				if descend && w.pm.Exclusions() {
					// A pattern may bring back something below it.
					if err := w.dir(r, path+"/"+name); err != nil {
						return err
					}
				}
				continue
			}
		}
		var st unix.Stat_t
		if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("unable to prepare context: %w", &fs.PathError{Op: "lstat", Path: path + "/" + name, Err: err})
		}
		if err := w.add(r, path+"/"+name, &st); err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			if err := w.dir(r, path+"/"+name); err != nil {
				return err
			}
		}
	}
	return nil
}

// add lists the entry rel, at path, with its content's digest when the
// cache knows it and as a job to hash otherwise. Sockets, fifos and
// devices do not travel, as with Docker.
func (w *walker) add(rel, path string, st *unix.Stat_t) error {
	e := &builderv1.FileEntry{Path: rel, Mode: st.Mode & (unix.S_IFMT | 0o7777), MtimeUnixNano: st.Mtim.Nano(), Uid: st.Uid, Gid: st.Gid}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		e.Size = st.Size
		w.c.Size += e.Size
		k := statKey{Size: st.Size, Mtime: st.Mtim.Nano(), Ino: st.Ino, Ctime: st.Ctim.Nano()}
		if d, ok := w.cache.get(rel, k); ok {
			e.Digest = string(d)
			w.c.contents[d] = content{path: path, size: e.Size}
		} else {
			w.jobs = append(w.jobs, job{entry: e, path: path, key: k})
		}
	case unix.S_IFLNK:
		target, err := os.Readlink(path)
		if err != nil {
			return fmt.Errorf("unable to prepare context: %w", err)
		}
		e.LinkTarget = target
	case unix.S_IFDIR:
	default:
		return nil
	}
	w.c.Entries = append(w.c.Entries, e)
	return nil
}

func listed(entries []*builderv1.FileEntry, p string) bool {
	for _, e := range entries {
		if e.Path == p {
			return true
		}
	}
	return false
}

// Bytes returns the bytes Send sends for digests, each content once.
func (c *Context) Bytes(digests []string) int64 {
	var n int64
	seen := map[string]bool{}
	for _, d := range digests {
		if !seen[d] {
			seen[d] = true
			n += c.contents[digest.Digest(d)].size
		}
	}
	return n
}

// UniqueBytes returns the bytes of the context's contents, each once.
func (c *Context) UniqueBytes() int64 {
	var n int64
	for _, f := range c.contents {
		n += f.size
	}
	return n
}

// ChunkSize is the size of the FileData messages Send writes.
const ChunkSize = 1 << 20

// Send sends the contents of the digests the builder asked for, each file
// read once, in chunks. It returns the bytes sent. A file changed since the
// walk fails the build rather than sending content that does not match its
// digest.
func (c *Context) Send(digests []string, send func(*builderv1.FileData) error) (int64, error) {
	var total int64
	buf := make([]byte, ChunkSize)
	for _, s := range digests {
		d := digest.Digest(s)
		held, ok := c.contents[d]
		if !ok {
			return total, fmt.Errorf("the builder asked for content %s, which the context does not hold", s)
		}
		p := held.path
		f, err := os.Open(p)
		if err != nil {
			return total, err
		}
		h := sha256.New()
		var off int64
		for {
			n, err := io.ReadFull(f, buf)
			if n > 0 || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				h.Write(buf[:n])
				eof := err != nil
				if eof && digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)) != d {
					f.Close()
					return total, fmt.Errorf("%s changed while the build was starting; run the build again", p)
				}
				if err := send(&builderv1.FileData{Digest: s, Offset: off, Data: buf[:n], Eof: eof}); err != nil {
					f.Close()
					return total, err
				}
				off += int64(n)
				total += int64(n)
				if eof {
					break
				}
				continue
			}
			f.Close()
			return total, err
		}
		f.Close()
	}
	return total, nil
}

func readIgnore(dir string) ([]string, error) {
	f, err := os.Open(filepath.Join(dir, ".dockerignore"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("reading .dockerignore: %w", err)
	}
	return patterns, nil
}

func hashFile(p string) (digest.Digest, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)), nil
}

func unixMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	switch {
	case m.IsDir():
		u |= syscall.S_IFDIR
	case m&fs.ModeSymlink != 0:
		u |= syscall.S_IFLNK
	default:
		u |= syscall.S_IFREG
	}
	if m&fs.ModeSetuid != 0 {
		u |= syscall.S_ISUID
	}
	if m&fs.ModeSetgid != 0 {
		u |= syscall.S_ISGID
	}
	if m&fs.ModeSticky != 0 {
		u |= syscall.S_ISVTX
	}
	return u
}

// statKey is what must not change for a cached digest to hold: size,
// modification and change times and the inode (a file replaced by rename
// gets a new one).
type statKey struct {
	Size  int64
	Mtime int64
	Ctime int64
	Ino   uint64
}

type cachedDigest struct {
	Key    statKey
	Digest digest.Digest
}

// hashCache maps context paths to digests, keyed by stat data. get may be
// called from several goroutines at once; put and save from one, after.
type hashCache struct {
	file    string
	entries map[string]cachedDigest
}

func loadCache(cacheDir, contextDir string) *hashCache {
	c := &hashCache{entries: map[string]cachedDigest{}}
	if cacheDir == "" {
		return c
	}
	sum := sha256.Sum256([]byte(contextDir))
	c.file = filepath.Join(cacheDir, hex.EncodeToString(sum[:16])+cacheSuffix)
	b, err := os.ReadFile(c.file)
	if err != nil {
		return c
	}
	if entries, ok := decodeCache(b); ok {
		c.entries = entries
	}
	return c
}

// The cache file: cacheMagic, the number of entries, then each entry's
// path, size, mtime, ctime, inode and digest, as varints and
// length-prefixed strings. Read on every build, so read in one pass
// without reflection (gob took more than the stats of a large context).
const (
	cacheSuffix = ".digests"
	cacheMagic  = "strata context digests 1\n"
)

func encodeCache(entries map[string]cachedDigest) []byte {
	b := binary.AppendUvarint([]byte(cacheMagic), uint64(len(entries)))
	for p, e := range entries {
		b = binary.AppendUvarint(b, uint64(len(p)))
		b = append(b, p...)
		b = binary.AppendVarint(b, e.Key.Size)
		b = binary.AppendVarint(b, e.Key.Mtime)
		b = binary.AppendVarint(b, e.Key.Ctime)
		b = binary.AppendUvarint(b, e.Key.Ino)
		b = binary.AppendUvarint(b, uint64(len(e.Digest)))
		b = append(b, e.Digest...)
	}
	return b
}

// decodeCache reads a cache file; ok is false for one that is not whole
// (the cache then starts empty).
func decodeCache(b []byte) (entries map[string]cachedDigest, ok bool) {
	rest, found := bytes.CutPrefix(b, []byte(cacheMagic))
	if !found {
		return nil, false
	}
	uvarint := func() uint64 {
		v, n := binary.Uvarint(rest)
		if n <= 0 {
			ok = false
			return 0
		}
		rest = rest[n:]
		return v
	}
	varint := func() int64 {
		v, n := binary.Varint(rest)
		if n <= 0 {
			ok = false
			return 0
		}
		rest = rest[n:]
		return v
	}
	str := func() string {
		n := uvarint()
		if !ok || n > uint64(len(rest)) {
			ok = false
			return ""
		}
		s := string(rest[:n])
		rest = rest[n:]
		return s
	}
	ok = true
	count := uvarint()
	if !ok || count > uint64(len(rest)) {
		return nil, false
	}
	entries = make(map[string]cachedDigest, count)
	for range count {
		p := str()
		e := cachedDigest{Key: statKey{Size: varint(), Mtime: varint(), Ctime: varint(), Ino: uvarint()}, Digest: digest.Digest(str())}
		if !ok {
			return nil, false
		}
		entries[p] = e
	}
	return entries, len(rest) == 0
}

func (c *hashCache) get(p string, k statKey) (digest.Digest, bool) {
	e, ok := c.entries[p]
	if !ok || e.Key != k {
		return "", false
	}
	return e.Digest, true
}

func (c *hashCache) put(p string, k statKey, d digest.Digest) {
	c.entries[p] = cachedDigest{Key: k, Digest: d}
}

// save writes the cache of the files listed (the paths this walk did not
// see are dropped) through a temporary file, so a crash never leaves a
// torn cache.
func (c *hashCache) save(listed []*builderv1.FileEntry) {
	if c.file == "" {
		return
	}
	kept := make(map[string]cachedDigest, len(listed))
	for _, e := range listed {
		if d, ok := c.entries[e.GetPath()]; ok {
			kept[e.GetPath()] = d
		}
	}
	c.entries = kept
	if err := os.MkdirAll(filepath.Dir(c.file), 0o700); err != nil {
		return
	}
	tmp, err := os.CreateTemp(filepath.Dir(c.file), ".tmp-")
	if err != nil {
		return
	}
	if _, err := tmp.Write(encodeCache(c.entries)); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return
	}
	tmp.Close()
	if os.Rename(tmp.Name(), c.file) != nil {
		os.Remove(tmp.Name())
	}
}

// ListDigest is the digest of the file list as BuildOptions.context_digest
// defines it: the entries, sorted by path, marshalled deterministically as
// one ContextEntries message.
func (c *Context) ListDigest() string {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(&builderv1.ContextEntries{Entries: c.Entries})
	if err != nil {
		return ""
	}
	return string(digest.FromBytes(b))
}
