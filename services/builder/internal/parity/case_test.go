package parity

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// A Case is one ported test: a build context (the Dockerfile among its
// files), how to build it, and what the original test checked.
//
// A case file is a txtar archive. Its comment holds one directive a line:
//
//	fail: REGEXP             the build must fail with an error matching REGEXP
//	arg: K=V                 --build-arg K=V
//	file: PATH               -f PATH
//	target: NAME             --target NAME
//	parent: TAG DOCKERFILE   build DOCKERFILE as TAG first (FROM TAG in the case)
//	symlink: PATH TARGET     a symlink in the context
//	mode: PATH MODE          a context file's mode (octal; files 0644 and directories 0755 otherwise)
//	owner: PATH UID:GID      a context file's owner (root's otherwise)
//	bytes: PATH "BODY"       a context file of exactly BODY (Go syntax), no newline added
//	secret: ID "VALUE"       a build secret (--secret id=ID,src=FILE, FILE
//	                         holding VALUE outside the context); BuildKit
//	                         cases only: the classic builder has none
//	tar: ARCHIVE TYPE NAME MODE UID:GID [BODY|LINK]
//	                         an entry of an archive written into the context,
//	                         compressed as ARCHIVE's name says (.gz, .bz2, .xz, .xz.gz)
//	repo: DIR                BuildKit cases only: the context's DIR is also
//	                         a Git repository (one commit on main, tagged
//	                         v1) served over smart HTTP on loopback, whose
//	                         URL the build gets as --build-arg REPO
//	known: WHY               BuildKit cases only: Strata's root filesystem and
//	                         config differ from BuildKit's, for the reason
//	                         WHY; TestBuildKit logs the difference, and fails
//	                         when it has gone
//	check: file PATH "BODY"  the image holds PATH with BODY
//	check: entry PATH TEXT   PATH's entry in the file list starts with TEXT
//	check: absent PATH       the image has no PATH
//	check: config KEY JSON   the config's KEY is JSON (null for absent)
//	rebuild: same            building again gives the same image (the cache)
//	rebuild: edit PATH "BODY" same|different
//	                         after writing BODY to PATH, a rebuild gives the
//	                         same or a different image
//
// Other comment lines say where the case comes from and what it is about.
// Every other member of the archive is a context file.
type Case struct {
	Name      string
	Fail      *regexp.Regexp
	BuildArgs []string
	File      string
	Target    string
	Parents   [][2]string // tag, Dockerfile
	Files     map[string][]byte
	Modes     map[string]os.FileMode
	Owners    map[string][2]int
	Symlinks  map[string]string
	Archives  map[string][]archiveEntry
	Secrets   [][2]string // id, value
	Repo      string
	SSH       []string // the IDs of the SSH agents forwarded
	Known     string
	Checks    []string
	Rebuilds  []string
}

type archiveEntry struct {
	typ, name, body string
	mode            int64
	uid, gid        int
}

// baseName is what the cases call their base image; the suite builds
// them from baseTag, the imported busybox rootfs, under both builders.
const baseTag = "parity-busybox"

var fromBusybox = regexp.MustCompile(`(?im)^(\s*FROM\s+(?:--\S+\s+)*)busybox(:latest)?([ \t]|$)`)

func loadCases(t testing.TB) []*Case {
	t.Helper()
	return loadCasesIn(t, "testdata/cases")
}

// loadCasesIn reads the cases of a directory.
func loadCasesIn(t testing.TB, dir string) []*Case {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.txtar"))
	if err != nil {
		t.Fatal(err)
	}
	var cases []*Case
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		c, err := parseCase(strings.TrimSuffix(filepath.Base(p), ".txtar"), b)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		cases = append(cases, c)
	}
	return cases
}

func parseCase(name string, data []byte) (*Case, error) {
	c := &Case{Name: name, Files: map[string][]byte{}, Modes: map[string]os.FileMode{}, Owners: map[string][2]int{},
		Symlinks: map[string]string{}, Archives: map[string][]archiveEntry{}}
	comment, files := splitTxtar(data)
	for _, line := range strings.Split(comment, "\n") {
		key, val, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		f := fields(val)
		switch key {
		case "fail":
			re, err := regexp.Compile(val)
			if err != nil {
				return nil, err
			}
			c.Fail = re
		case "arg":
			c.BuildArgs = append(c.BuildArgs, val)
		case "file":
			c.File = val
		case "target":
			c.Target = val
		case "parent":
			if len(f) != 2 {
				return nil, fmt.Errorf("parent: want TAG DOCKERFILE, got %q", val)
			}
			c.Parents = append(c.Parents, [2]string{f[0], f[1]})
		case "symlink":
			if len(f) != 2 {
				return nil, fmt.Errorf("symlink: want PATH TARGET, got %q", val)
			}
			c.Symlinks[f[0]] = f[1]
		case "mode":
			m, err := strconv.ParseUint(f[1], 8, 32)
			if err != nil {
				return nil, err
			}
			c.Modes[f[0]] = os.FileMode(m)
		case "owner":
			var uid, gid int
			if _, err := fmt.Sscanf(f[1], "%d:%d", &uid, &gid); err != nil {
				return nil, fmt.Errorf("owner %q: %v", val, err)
			}
			c.Owners[f[0]] = [2]int{uid, gid}
		case "bytes":
			if len(f) != 2 {
				return nil, fmt.Errorf("bytes: want PATH \"BODY\", got %q", val)
			}
			c.Files[f[0]] = []byte(f[1])
		case "tar":
			if len(f) < 5 {
				return nil, fmt.Errorf("tar: want ARCHIVE TYPE NAME MODE UID:GID [BODY], got %q", val)
			}
			e := archiveEntry{typ: f[1], name: f[2]}
			m, err := strconv.ParseInt(f[3], 8, 64)
			if err != nil {
				return nil, err
			}
			e.mode = m
			if _, err := fmt.Sscanf(f[4], "%d:%d", &e.uid, &e.gid); err != nil {
				return nil, fmt.Errorf("tar: owner %q: %v", f[4], err)
			}
			if len(f) > 5 {
				e.body = f[5]
			}
			c.Archives[f[0]] = append(c.Archives[f[0]], e)
		case "secret":
			if len(f) != 2 {
				return nil, fmt.Errorf("secret: want ID \"VALUE\", got %q", val)
			}
			c.Secrets = append(c.Secrets, [2]string{f[0], f[1]})
		case "repo":
			c.Repo = val
		case "ssh":
			c.SSH = append(c.SSH, f...)
		case "known":
			c.Known = val
		case "check":
			c.Checks = append(c.Checks, val)
		case "rebuild":
			c.Rebuilds = append(c.Rebuilds, val)
		}
	}
	for _, f := range files {
		if _, ok := c.Files[f.name]; ok {
			return nil, fmt.Errorf("%s twice", f.name)
		}
		c.Files[f.name] = f.data
	}
	df := c.File
	if df == "" {
		df = "Dockerfile"
	}
	_, lower := c.Files["dockerfile"]
	if _, ok := c.Files[df]; !ok && !lower && c.Fail == nil {
		return nil, fmt.Errorf("no %s", df)
	}
	return c, nil
}

// fields splits on blanks but keeps "quoted strings" (Go syntax) whole.
func fields(s string) []string {
	var out []string
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimSpace(s) {
		if s[0] == '"' {
			if q, err := strconv.QuotedPrefix(s); err == nil {
				u, _ := strconv.Unquote(q)
				out = append(out, u)
				s = s[len(q):]
				continue
			}
		}
		i := strings.IndexAny(s, " \t")
		if i < 0 {
			i = len(s)
		}
		out = append(out, s[:i])
		s = s[i:]
	}
	return out
}

type txtarFile struct {
	name string
	data []byte
}

// splitTxtar reads the txtar format: a comment, then "-- NAME --" lines
// each starting a file.
func splitTxtar(data []byte) (string, []txtarFile) {
	var comment strings.Builder
	var files []txtarFile
	cur := -1
	for _, line := range strings.SplitAfter(string(data), "\n") {
		trimmed := strings.TrimRight(line, "\n")
		if strings.HasPrefix(trimmed, "-- ") && strings.HasSuffix(trimmed, " --") && len(trimmed) > 6 {
			files = append(files, txtarFile{name: strings.TrimSpace(trimmed[3 : len(trimmed)-3])})
			cur = len(files) - 1
			continue
		}
		if cur < 0 {
			comment.WriteString(line)
		} else {
			files[cur].data = append(files[cur].data, line...)
		}
	}
	return comment.String(), files
}

// writeContext writes the case's build context into dir, with the base
// image's name put where the original tests wrote busybox.
func (c *Case) writeContext(t testing.TB, dir string) {
	t.Helper()
	names := make([]string, 0, len(c.Files))
	for n := range c.Files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		body := c.contextFile(n, c.Files[n])
		p := filepath.Join(dir, n)
		if strings.HasSuffix(n, "/") {
			mkdir(t, p)
			continue
		}
		mkdir(t, filepath.Dir(p))
		if err := os.WriteFile(p, body, 0o644); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, 0o644)
	}
	for n, target := range c.Symlinks {
		p := filepath.Join(dir, n)
		mkdir(t, filepath.Dir(p))
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	for n, entries := range c.Archives {
		if err := os.WriteFile(filepath.Join(dir, n), archive(t, n, entries), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for n, o := range c.Owners {
		if err := os.Lchown(filepath.Join(dir, n), o[0], o[1]); err != nil {
			t.Fatal(err)
		}
	}
	for n, m := range c.Modes {
		if err := os.Chmod(filepath.Join(dir, n), m); err != nil {
			t.Fatal(err)
		}
	}
}

// secretFlags writes the case's secrets into files of a directory of
// their own, outside the build context, and returns the --secret values
// that give them to a build (strata build and buildctl take the same).
func (c *Case) secretFlags(t testing.TB) []string {
	t.Helper()
	if len(c.Secrets) == 0 {
		return nil
	}
	dir := t.TempDir()
	var out []string
	for i, s := range c.Secrets {
		p := filepath.Join(dir, strconv.Itoa(i))
		if err := os.WriteFile(p, []byte(s[1]), 0o600); err != nil {
			t.Fatal(err)
		}
		out = append(out, "id="+s[0]+",src="+p)
	}
	return out
}

// sshFlags are the --ssh flags of the case's agents, as buildctl and
// strata take them: ID=KEY_FILE, a fresh ed25519 key each.
func (c *Case) sshFlags(t testing.TB) []string {
	t.Helper()
	dir := t.TempDir()
	var out []string
	for i, id := range c.SSH {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		block, err := ssh.MarshalPrivateKey(priv, "")
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, strconv.Itoa(i))
		if err := os.WriteFile(p, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
		out = append(out, id+"="+p)
	}
	return out
}

// contextFile is what the context holds as name: body, with the base
// image's name put where the original tests wrote busybox when name is
// a Dockerfile of the case.
func (c *Case) contextFile(name string, body []byte) []byte {
	if isDockerfile(c, name) {
		return fromBusybox.ReplaceAll(body, []byte("${1}"+baseTag+"$3"))
	}
	return body
}

func isDockerfile(c *Case, name string) bool {
	if name == "Dockerfile" || name == "dockerfile" || name == c.File {
		return true
	}
	for _, p := range c.Parents {
		if p[1] == name {
			return true
		}
	}
	return false
}

func mkdir(t testing.TB, p string) {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(p, 0o755)
}

func archive(t testing.TB, name string, entries []archiveEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, Uid: e.uid, Gid: e.gid, Format: tar.FormatGNU}
		switch e.typ {
		case "file":
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.body))
		case "dir":
			h.Typeflag = tar.TypeDir
		case "symlink":
			h.Typeflag, h.Linkname = tar.TypeSymlink, e.body
		case "hardlink":
			h.Typeflag, h.Linkname = tar.TypeLink, e.body
		default:
			t.Fatalf("archive %s: entry type %q", name, e.typ)
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	compress := func(tool string, in []byte) []byte {
		if tool == "gzip" {
			var out bytes.Buffer
			zw := gzip.NewWriter(&out)
			zw.Write(in)
			zw.Close()
			return out.Bytes()
		}
		cmd := exec.Command(tool, "-c")
		cmd.Stdin = bytes.NewReader(in)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: %v", tool, err)
		}
		return out
	}
	switch {
	case strings.HasSuffix(name, ".xz.gz"):
		return compress("gzip", compress("xz", b))
	case strings.HasSuffix(name, ".gz"):
		return compress("gzip", b)
	case strings.HasSuffix(name, ".bz2"):
		return compress("bzip2", b)
	case strings.HasSuffix(name, ".xz"):
		return compress("xz", b)
	}
	return b
}
