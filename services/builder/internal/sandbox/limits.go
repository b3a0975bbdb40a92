package sandbox

import (
	"math"
	"strings"

	units "github.com/docker/go-units"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/lib/errdefs"
)

// Limits bound what one RUN step may use, with the names of `docker build`'s
// flags. A zero field means the runner's default.
type Limits struct {
	// Memory is the most bytes of memory (--memory).
	Memory int64
	// MemorySwap is memory plus swap (--memory-swap); twice Memory when 0,
	// as in Docker. Where the kernel does not account swap it is ignored.
	MemorySwap int64
	// CPUShares is the relative CPU weight (--cpu-shares); the kernel's
	// default (1024) when 0.
	CPUShares int64
	// CPUQuota and CPUPeriod are the microseconds of CPU time the step may
	// use per period (--cpu-quota, --cpu-period); the runner's --step-cpus
	// when 0.
	CPUQuota  int64
	CPUPeriod int64
	// Pids is the most processes and threads at once (--pids-limit).
	Pids int64
	// Ulimits are resource limits of the step's processes (--ulimit), by
	// Docker's names (nofile, nproc, core, ...).
	Ulimits []Ulimit
	// Disk is the most bytes the step may write to its upper directory
	// (Strata's --disk); see Process.UpperDir.
	Disk int64
}

// Ulimit is one --ulimit NAME=SOFT[:HARD].
type Ulimit struct {
	Name       string
	Soft, Hard int64
}

// The defaults a runner gives steps when Options leaves them zero.
const (
	// DefaultPids leaves room for parallel compilers and threaded
	// toolchains (a JVM build runs hundreds of threads) and stops a fork
	// bomb long before it hurts the host.
	DefaultPids = 4096
	// defaultCPUPeriod is the kernel's and Docker's CFS period.
	defaultCPUPeriod = 100000
	// minMemory is Docker's smallest --memory.
	minMemory = 6 << 20
	// dockerNofile is the open-file limit of a step: what Docker's classic
	// builder gives a RUN container. Such a container inherits dockerd's
	// limits, and docker.service of Docker 20.10 (the builder Strata
	// mirrors) sets LimitNOFILE=infinity, which systemd turns into
	// fs.nr_open, 1048576 by default: 1048576 soft and hard. (Moby 25 moved
	// to systemd's 1024:524288 and BuildKit's OCI worker to 1024:1048576;
	// images built here behave as under the classic builder.) A builder
	// whose own hard limit is lower gives that instead: raising it needs
	// CAP_SYS_RESOURCE, which a builder in a container may lack.
	dockerNofile = 1 << 20
)

// DefaultMemory is the default most memory of a step: half of what the
// builder may use (its cgroup's limit, or the machine's memory), which
// leaves a compiler or linker of a large program gigabytes to work with on
// any machine that runs builds, and the builder and another build the other
// half.
func DefaultMemory() int64 {
	var si unix.Sysinfo_t
	total := int64(8 << 30)
	if unix.Sysinfo(&si) == nil {
		total = int64(si.Totalram) * int64(si.Unit)
	}
	if limit := ownMemoryLimit(); limit > 0 && limit < total {
		total = limit
	}
	return total / 2
}

// maxima are the most a build may ask for: the runner's options.
type maxima struct {
	memory int64
	pids   int64
	cpus   float64
	disk   int64
}

// resolve fills the zero fields of l with the defaults (the maxima) and
// refuses a value above a maximum, naming the build's flag, the builder's
// flag and the maximum.
func (m maxima) resolve(l Limits) (Limits, error) {
	switch {
	case l.Memory == 0:
		l.Memory = m.memory
	case l.Memory < minMemory:
		return l, errdefs.InvalidArgument("--memory %s is below the minimum of 6 MiB", units.BytesSize(float64(l.Memory)))
	case l.Memory > m.memory:
		return l, errdefs.InvalidArgument("--memory %s is above this builder's maximum of %s (builder flag --step-memory)",
			units.BytesSize(float64(l.Memory)), units.BytesSize(float64(m.memory)))
	}
	switch {
	case l.MemorySwap == 0:
		l.MemorySwap = 2 * l.Memory
	case l.MemorySwap < 0 || l.MemorySwap > 2*m.memory:
		return l, errdefs.InvalidArgument("--memory-swap %s is above this builder's maximum of %s (twice builder flag --step-memory)",
			swapString(l.MemorySwap), units.BytesSize(float64(2*m.memory)))
	case l.MemorySwap < l.Memory:
		return l, errdefs.InvalidArgument("--memory-swap %s is below --memory %s: it is memory plus swap",
			units.BytesSize(float64(l.MemorySwap)), units.BytesSize(float64(l.Memory)))
	}
	switch {
	case l.Pids == 0:
		l.Pids = m.pids
	case l.Pids < 0 || l.Pids > m.pids:
		return l, errdefs.InvalidArgument("--pids-limit %d is above this builder's maximum of %d (builder flag --step-pids)", l.Pids, m.pids)
	}
	switch {
	case l.Disk == 0:
		l.Disk = m.disk
	case l.Disk < 0 || l.Disk > m.disk:
		return l, errdefs.InvalidArgument("--disk %s is above this builder's maximum of %s (builder flag --step-disk)",
			units.BytesSize(float64(l.Disk)), units.BytesSize(float64(m.disk)))
	}
	if l.CPUShares != 0 && (l.CPUShares < 2 || l.CPUShares > 262144) {
		return l, errdefs.InvalidArgument("--cpu-shares %d: want 2 to 262144", l.CPUShares)
	}
	if l.CPUPeriod == 0 {
		l.CPUPeriod = defaultCPUPeriod
	} else if l.CPUPeriod < 1000 || l.CPUPeriod > 1000000 {
		return l, errdefs.InvalidArgument("--cpu-period %d: want 1000 to 1000000 microseconds", l.CPUPeriod)
	}
	maxQuota := int64(math.Round(m.cpus * float64(l.CPUPeriod)))
	switch {
	case l.CPUQuota == 0:
		l.CPUQuota = maxQuota
	case l.CPUQuota < 1000:
		return l, errdefs.InvalidArgument("--cpu-quota %d: want at least 1000 microseconds", l.CPUQuota)
	case l.CPUQuota > maxQuota:
		return l, errdefs.InvalidArgument("--cpu-quota %d per --cpu-period %d is %.2f CPUs, above this builder's maximum of %g (builder flag --step-cpus)",
			l.CPUQuota, l.CPUPeriod, float64(l.CPUQuota)/float64(l.CPUPeriod), m.cpus)
	}
	for _, u := range l.Ulimits {
		if err := checkUlimit(u); err != nil {
			return l, err
		}
	}
	return l, nil
}

func swapString(v int64) string {
	if v < 0 {
		return "-1 (unlimited)"
	}
	return units.BytesSize(float64(v))
}

// checkUlimit refuses unknown names and limits above the builder's own hard
// limit, which runc could only set with a privilege the build should not
// borrow.
func checkUlimit(u Ulimit) error {
	rl, err := (&units.Ulimit{Name: u.Name, Soft: u.Soft, Hard: u.Hard}).GetRlimit()
	if err != nil {
		return errdefs.InvalidArgument("--ulimit %s: %v", u.Name, err)
	}
	if u.Soft < 0 || u.Hard < 0 || u.Soft > u.Hard {
		return errdefs.InvalidArgument("--ulimit %s=%d:%d: want 0 <= soft <= hard", u.Name, u.Soft, u.Hard)
	}
	var own unix.Rlimit
	if err := unix.Getrlimit(rl.Type, &own); err == nil && own.Max != unix.RLIM_INFINITY && uint64(u.Hard) > own.Max {
		return errdefs.InvalidArgument("--ulimit %s=%d:%d: the hard limit is above this builder's own (%d)", u.Name, u.Soft, u.Hard, own.Max)
	}
	return nil
}

// rlimits are the step's POSIX resource limits: Docker's open-file limit,
// then the build's --ulimit values, which replace a default of the same
// name.
func rlimits(us []Ulimit) []specs.POSIXRlimit {
	nofile := uint64(dockerNofile)
	var own unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &own) == nil && own.Max < nofile {
		nofile = own.Max
	}
	out := []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: nofile, Hard: nofile}}
	for _, u := range us {
		typ := "RLIMIT_" + strings.ToUpper(u.Name)
		if typ == "RLIMIT_NOFILE" {
			out = out[1:]
		}
		out = append(out, specs.POSIXRlimit{Type: typ, Soft: uint64(u.Soft), Hard: uint64(u.Hard)})
	}
	return out
}

// resources is the spec's cgroup limits for l (resolved).
func (l Limits) resources(swapAccounted bool) *specs.LinuxResources {
	mem := &specs.LinuxMemory{Limit: &l.Memory}
	if swapAccounted {
		mem.Swap = &l.MemorySwap
	}
	period := uint64(l.CPUPeriod)
	cpu := &specs.LinuxCPU{Quota: &l.CPUQuota, Period: &period}
	if l.CPUShares != 0 {
		shares := uint64(l.CPUShares)
		cpu.Shares = &shares
	}
	return &specs.LinuxResources{
		// Deny every device but those runc always allows
		// (null, zero, full, random, urandom, tty, ptmx, pts).
		Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
		Memory:  mem,
		CPU:     cpu,
		Pids:    &specs.LinuxPids{Limit: &l.Pids},
	}
}

// memoryExceeded is the error of a step the kernel's OOM killer struck.
func memoryExceeded(l Limits) error {
	return errdefs.ResourceExhausted("RUN step killed: memory limit %s exceeded (build flag --memory, builder flag --step-memory)",
		units.BytesSize(float64(l.Memory))).WithReason("RUN_MEMORY_LIMIT")
}

// pidsExceeded is the error of a step stopped at its process limit.
func pidsExceeded(l Limits) error {
	return errdefs.ResourceExhausted("RUN step killed: process limit %d reached (build flag --pids-limit, builder flag --step-pids)",
		l.Pids).WithReason("RUN_PIDS_LIMIT")
}
