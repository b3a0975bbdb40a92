package sandbox

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	cgroups "github.com/containerd/cgroups/v3"
	"github.com/moby/sys/mountinfo"

	"github.com/strata-build/strata/lib/errdefs"
)

// stepCgroups places every step in a cgroup of its own under the builder's
// and reads, before runc deletes it, why the kernel stopped it. runc makes
// the cgroup and applies the spec's limits; the runner only says where.
type stepCgroups struct {
	v2 bool
	// own is the builder's cgroup on cgroup v2, the parent of steps'.
	own string
	// memDir and pidsDir are the host directories holding the steps'
	// cgroups of the memory and pids controllers (one directory on v2).
	memDir, pidsDir string
}

// delegatedLeaf is where the builder moves itself on cgroup v2 so that its
// cgroup may hand controllers to the steps'.
const delegatedLeaf = "strata-builder"

// newStepCgroups finds where steps' cgroups go and, on cgroup v2, makes
// the builder's cgroup able to limit them.
func newStepCgroups() (*stepCgroups, error) {
	c, err := locateCgroups()
	if err != nil {
		return nil, err
	}
	if c.v2 {
		if err := delegate(c.memDir); err != nil {
			return nil, errdefs.FailedPrecondition("cgroup v2: cannot give RUN steps memory, pids and cpu limits under %s: %v", c.memDir, err)
		}
	}
	return c, nil
}

// locateCgroups finds the builder's own cgroups, changing nothing.
func locateCgroups() (*stepCgroups, error) {
	legacy, unified, err := cgroups.ParseCgroupFileUnified("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("reading the builder's cgroup: %w", err)
	}
	if cgroups.Mode() == cgroups.Unified {
		own := unified
		if path.Base(own) == delegatedLeaf {
			own = path.Dir(own)
		}
		dir := filepath.Join("/sys/fs/cgroup", own)
		return &stepCgroups{v2: true, own: own, memDir: dir, pidsDir: dir}, nil
	}
	// cgroup v1: runc nests a relative cgroups path under the builder's
	// own cgroup of each controller; these are the two it reads.
	mounts, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup"))
	if err != nil {
		return nil, err
	}
	dirOf := func(controller string) (string, error) {
		for _, m := range mounts {
			if slices.Contains(strings.Split(m.VFSOptions, ","), controller) {
				rel, err := filepath.Rel(m.Root, legacy[controller])
				if err != nil || strings.HasPrefix(rel, "..") {
					return "", errdefs.FailedPrecondition("the builder's %s cgroup %s is outside the mounted hierarchy %s", controller, legacy[controller], m.Mountpoint)
				}
				return filepath.Join(m.Mountpoint, rel), nil
			}
		}
		return "", errdefs.FailedPrecondition("no %s cgroup controller is mounted: RUN steps cannot be limited", controller)
	}
	c := &stepCgroups{}
	if c.memDir, err = dirOf("memory"); err != nil {
		return nil, err
	}
	if c.pidsDir, err = dirOf("pids"); err != nil {
		return nil, err
	}
	return c, nil
}

// delegate lets the steps' cgroups under dir have memory, pids and cpu
// limits. cgroup v2 lets a cgroup give controllers to its children only
// while it holds no process itself, so the processes in dir (the builder)
// move to a leaf of their own first, as the entrypoints of Docker-in-Docker
// and BuildKit's image do.
func delegate(dir string) error {
	want := []string{"memory", "pids", "cpu"}
	have, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(want, func(c string) bool { return !slices.Contains(strings.Fields(string(have)), c) }) {
		return nil
	}
	procs, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return err
	}
	if pids := strings.Fields(string(procs)); len(pids) > 0 {
		leaf := filepath.Join(dir, delegatedLeaf)
		if err := os.Mkdir(leaf, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		for _, pid := range pids {
			if err := os.WriteFile(filepath.Join(leaf, "cgroup.procs"), []byte(pid), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("moving process %s to %s: %w", pid, leaf, err)
			}
		}
	}
	return os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+memory +pids +cpu"), 0)
}

// specPath is the spec's cgroupsPath of step id.
func (c *stepCgroups) specPath(id string) string {
	if c.v2 {
		return path.Join(c.own, "strata-"+id)
	}
	return "strata-" + id
}

// swapAccounted reports whether the kernel limits swap (memory+swap) so
// that the spec may set it.
func (c *stepCgroups) swapAccounted() bool {
	name := "memory.memsw.limit_in_bytes"
	if c.v2 {
		name = "memory.swap.max"
	}
	_, err := os.Stat(filepath.Join(c.memDir, name))
	return err == nil
}

// events reads the OOM kills and the refused forks of step id's cgroup.
func (c *stepCgroups) events(id string) (oomKills, pidsMax int64) {
	memFile, memKey := "memory.oom_control", "oom_kill"
	if c.v2 {
		memFile = "memory.events"
	}
	leaf := "strata-" + id
	return flatValue(filepath.Join(c.memDir, leaf, memFile), memKey), flatValue(filepath.Join(c.pidsDir, leaf, "pids.events"), "max")
}

// procs lists the processes in step id's cgroup.
func (c *stepCgroups) procs(id string) []int {
	b, err := os.ReadFile(filepath.Join(c.pidsDir, "strata-"+id, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// flatValue reads key's value from a cgroup file of "key value" lines; 0
// when the file or the key is missing.
func flatValue(file, key string) int64 {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), " "); ok && k == key {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

// ownMemoryLimit is the memory limit of the builder's cgroup and its
// ancestors; 0 when there is none or it cannot be read.
func ownMemoryLimit() int64 {
	c, err := locateCgroups()
	if err != nil {
		return 0
	}
	if !c.v2 {
		// The kernel sums the ancestors' limits up for v1.
		return flatValue(filepath.Join(c.memDir, "memory.stat"), "hierarchical_memory_limit")
	}
	var limit int64
	for dir := c.memDir; strings.HasPrefix(dir, "/sys/fs/cgroup/"); dir = filepath.Dir(dir) {
		b, err := os.ReadFile(filepath.Join(dir, "memory.max"))
		if err != nil {
			continue
		}
		if n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && (limit == 0 || n < limit) {
			limit = n
		}
	}
	return limit
}
