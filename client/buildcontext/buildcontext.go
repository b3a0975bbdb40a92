// Package buildcontext prepares a build context on the client: it walks the
// context directory honouring .dockerignore (with moby/patternmatcher, as
// Docker's CLI does), lists every file with its metadata and content digest,
// and later sends the contents the builder asks for. Digests come from a
// stat-keyed cache kept between builds, so an unchanged tree is not read
// again: a rebuild costs one walk of stat calls.
package buildcontext

import (
	"crypto/sha256"
	"encoding/gob"
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

	paths map[digest.Digest]string
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

// Walk walks a context directory.
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
	cache := loadCache(opts.CacheDir, dir)

	c := &Context{Dir: dir, paths: map[digest.Digest]string{}}
	type job struct {
		entry *builderv1.FileEntry
		path  string
		key   statKey
	}
	var jobs []job
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("unable to prepare context: %w", err)
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if rel != "." && !always[rel] {
			skip, err := pm.MatchesOrParentMatches(rel)
			if err != nil {
				return err
			}
			if skip {
				if d.IsDir() && !pm.Exclusions() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("unable to prepare context: %w", err)
		}
		st, _ := info.Sys().(*syscall.Stat_t)
		e := &builderv1.FileEntry{Path: rel, Mode: unixMode(info.Mode()), MtimeUnixNano: info.ModTime().UnixNano()}
		if st != nil {
			e.Uid, e.Gid = st.Uid, st.Gid
		}
		switch {
		case info.Mode().IsRegular():
			e.Size = info.Size()
			c.Size += e.Size
			k := statKey{Size: info.Size(), Mtime: info.ModTime().UnixNano()}
			if st != nil {
				k.Ino, k.Ctime = st.Ino, st.Ctim.Nano()
			}
			if d, ok := cache.get(rel, k); ok {
				e.Digest = string(d)
				c.paths[d] = p
			} else {
				jobs = append(jobs, job{entry: e, path: p, key: k})
			}
		case info.Mode()&fs.ModeSymlink != 0:
			if e.LinkTarget, err = os.Readlink(p); err != nil {
				return fmt.Errorf("unable to prepare context: %w", err)
			}
		case info.IsDir():
		default:
			return nil // sockets, fifos and devices do not travel, as with Docker
		}
		c.Entries = append(c.Entries, e)
		return nil
	})
	if err != nil {
		return nil, err
	}

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
				c.paths[d] = j.path
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
	if len(jobs) > 0 {
		cache.save()
	}
	sort.Slice(c.Entries, func(i, j int) bool { return c.Entries[i].Path < c.Entries[j].Path })
	return c, nil
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
	sizes := c.sizes()
	var n int64
	seen := map[string]bool{}
	for _, d := range digests {
		if !seen[d] {
			seen[d] = true
			n += sizes[d]
		}
	}
	return n
}

// UniqueBytes returns the bytes of the context's contents, each once.
func (c *Context) UniqueBytes() int64 {
	var n int64
	for _, size := range c.sizes() {
		n += size
	}
	return n
}

func (c *Context) sizes() map[string]int64 {
	sizes := map[string]int64{}
	for _, e := range c.Entries {
		if e.GetDigest() != "" {
			sizes[e.GetDigest()] = e.GetSize()
		}
	}
	return sizes
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
		p, ok := c.paths[d]
		if !ok {
			return total, fmt.Errorf("the builder asked for content %s, which the context does not hold", s)
		}
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

// hashCache maps context paths to digests, keyed by stat data.
type hashCache struct {
	file    string
	entries map[string]cachedDigest
	used    map[string]bool
}

func loadCache(cacheDir, contextDir string) *hashCache {
	c := &hashCache{entries: map[string]cachedDigest{}, used: map[string]bool{}}
	if cacheDir == "" {
		return c
	}
	sum := sha256.Sum256([]byte(contextDir))
	c.file = filepath.Join(cacheDir, hex.EncodeToString(sum[:16])+".gob")
	f, err := os.Open(c.file)
	if err != nil {
		return c
	}
	defer f.Close()
	if gob.NewDecoder(f).Decode(&c.entries) != nil {
		c.entries = map[string]cachedDigest{}
	}
	return c
}

func (c *hashCache) get(p string, k statKey) (digest.Digest, bool) {
	e, ok := c.entries[p]
	if !ok || e.Key != k {
		return "", false
	}
	c.used[p] = true
	return e.Digest, true
}

func (c *hashCache) put(p string, k statKey, d digest.Digest) {
	c.entries[p] = cachedDigest{Key: k, Digest: d}
	c.used[p] = true
}

// save writes the cache, without the paths this walk did not see, through
// a temporary file so a crash never leaves a torn cache.
func (c *hashCache) save() {
	if c.file == "" {
		return
	}
	for p := range c.entries {
		if !c.used[p] {
			delete(c.entries, p)
		}
	}
	if err := os.MkdirAll(filepath.Dir(c.file), 0o700); err != nil {
		return
	}
	tmp, err := os.CreateTemp(filepath.Dir(c.file), ".tmp-")
	if err != nil {
		return
	}
	if err := gob.NewEncoder(tmp).Encode(c.entries); err != nil {
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
