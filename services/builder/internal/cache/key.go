// Package cache computes the build cache keys of Dockerfile steps. A key is
// a digest over everything a step's result depends on — the parent step's
// key, the step's instruction as expanded and the config it runs with, the
// build arguments in scope and, for COPY and ADD, the content, mode and
// owner of every source file — and never over modification times, so the
// same inputs give the same key on every builder replica. Records mapping
// keys to images live in the metadata service.
package cache

import (
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"io/fs"

	"github.com/opencontainers/go-digest"
)

// version changes when the key derivation does, so that records written by
// an older builder are never mistaken for current ones.
const version = "strata-build-cache/v1"

// Hasher accumulates the inputs of one key. Every field is written with its
// length, so no two different input sequences hash the same.
//
// The fields go through a buffer: a COPY of a large context adds several
// small fields for each of thousands of files, and hashing each on its own
// cost more than the hashing.
type Hasher struct {
	h   hash.Hash
	buf []byte
}

// hasherBuffer is how many bytes a Hasher gathers before it hashes them.
const hasherBuffer = 16 << 10

// New starts a key of the given kind ("from", "step", "copy-source", …).
func New(kind string) *Hasher {
	h := &Hasher{h: sha256.New(), buf: make([]byte, 0, hasherBuffer)}
	h.String(version)
	h.String(kind)
	return h
}

// String adds a string.
func (h *Hasher) String(s string) *Hasher {
	h.Int(int64(len(s)))
	if len(h.buf)+len(s) > cap(h.buf) {
		h.flush()
		if len(s) > cap(h.buf) {
			h.h.Write([]byte(s))
			return h
		}
	}
	h.buf = append(h.buf, s...)
	return h
}

func (h *Hasher) flush() {
	h.h.Write(h.buf)
	h.buf = h.buf[:0]
}

// Strings adds a list of strings, with its length.
func (h *Hasher) Strings(ss []string) *Hasher {
	h.Int(int64(len(ss)))
	for _, s := range ss {
		h.String(s)
	}
	return h
}

// Int adds an integer.
func (h *Hasher) Int(v int64) *Hasher {
	if len(h.buf)+8 > cap(h.buf) {
		h.flush()
	}
	h.buf = binary.BigEndian.AppendUint64(h.buf, uint64(v))
	return h
}

// Digest returns the key.
func (h *Hasher) Digest() digest.Digest {
	h.flush()
	return digest.NewDigestFromBytes(digest.SHA256, h.h.Sum(nil))
}

// FromImage is the key of a stage's FROM: the base image's ID (its config
// digest, which covers its layers), or "scratch".
func FromImage(imageID string) digest.Digest {
	return New("from").String(imageID).Digest()
}

// Step is the inputs of one step's key.
type Step struct {
	// Parent is the key of the step before it (or of the FROM).
	Parent digest.Digest
	// Config is the container config the step records, serialized (it
	// holds the expanded instruction as its Cmd, the environment, the
	// working directory, the user, …), with the parent image left out.
	Config []byte
	// Author is the MAINTAINER in effect.
	Author string
	// Args are the build arguments in scope, "NAME=value", sorted.
	Args []string
	// Sources is the digest of a COPY or ADD step's sources (see Sources),
	// empty for other steps.
	Sources digest.Digest
	// Platform is the OS/architecture the step runs for.
	Platform string
	// Network names the network a RUN step runs on when it is not the
	// default bridge ("none", "host"): a step that could not reach the
	// network, or reached the host's, does not stand for one that ran on
	// the bridge. Empty for the bridge and for other steps, whose keys
	// stay what they were before it was added.
	Network string
	// Mounts are a RUN step's --mount specs, in order (every option, never
	// a secret's value): the same command with another secret or target
	// is another step. Empty for steps without mounts, whose keys stay
	// what they were before it was added.
	Mounts []string
}

// Key returns the step's cache key.
func (s Step) Key() digest.Digest {
	h := New("step").
		String(string(s.Parent)).
		String(string(s.Config)).
		String(s.Author).
		Strings(s.Args).
		String(string(s.Sources)).
		String(s.Platform)
	if s.Network != "" {
		h.String("network").String(s.Network)
	}
	if len(s.Mounts) > 0 {
		h.String("mounts").Strings(s.Mounts)
	}
	return h.Digest()
}

// File is one source file of a COPY or ADD as it will land in the image.
type File struct {
	// Path is the destination path.
	Path string
	// Mode is the mode it gets (type and permissions).
	Mode fs.FileMode
	// UID and GID are the owner it gets.
	UID, GID uint32
	// Digest is a regular file's content digest.
	Digest digest.Digest
	// LinkTarget is a symlink's target.
	LinkTarget string
}

// Sources returns the digest of a COPY or ADD's sources: every file's
// destination, mode, owner and content. Modification times are left out on
// purpose: touching a file without changing it keeps the cache.
func Sources(files []File) digest.Digest {
	h := New("sources").Int(int64(len(files)))
	for _, f := range files {
		h.String(f.Path).Int(int64(f.Mode)).Int(int64(f.UID)).Int(int64(f.GID)).String(string(f.Digest)).String(f.LinkTarget)
	}
	return h.Digest()
}
