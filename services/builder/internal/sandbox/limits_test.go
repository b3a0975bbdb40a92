package sandbox

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/lib/errdefs"
)

// forkBomb forks until it cannot, each level waiting for its two children,
// so that it never ends on its own while forks succeed.
const forkBomb = `bomb() { bomb | bomb; }; bomb`

// memoryHog makes dd hold a buffer of n MiB it fills from /dev/zero.
func memoryHog(mib int) string {
	return fmt.Sprintf(`dd if=/dev/zero of=/dev/null bs=%dM count=1`, mib)
}

// assertKilled checks that a step ended with the error of a limit, naming
// the value and the flags, and that the runner then runs the next step.
func assertKilled(t *testing.T, e *env, err error, want ...string) {
	t.Helper()
	if !errdefs.IsResourceExhausted(err) {
		t.Fatalf("Run error = %v, want RESOURCE_EXHAUSTED", err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("Run error %q does not say %q", err, w)
		}
	}
	code, lines, _, err := e.run(t, Process{}, `echo next`)
	if err != nil || code != 0 || stdout(lines) != "next\n" {
		t.Errorf("the step after: Run = %d, %v, %v; want it to run", code, err, lines)
	}
}

func TestRunForkBombFailsTheStep(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name  string
		limit int64
		want  string
	}{
		{"default", 0, fmt.Sprintf("process limit %d reached", DefaultPids)},
		{"--pids-limit 64", 64, "process limit 64 reached"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t0 := time.Now()
			_, _, _, err := e.run(t, Process{Limits: Limits{Pids: tc.limit}}, forkBomb)
			assertKilled(t, e, err, tc.want, "--pids-limit", "--step-pids")
			if d := time.Since(t0); d > 30*time.Second {
				t.Errorf("the fork bomb ran %v before it was stopped", d)
			}
		})
	}
}

func TestRunMemoryHogFailsTheStep(t *testing.T) {
	// The runner's default is lowered so that the test does not need half
	// the machine's memory; the per-build limit is lower still.
	e := newEnvWith(t, Options{Memory: 256 << 20})
	for _, tc := range []struct {
		name  string
		limit int64
		hog   int
		want  string
	}{
		{"default", 0, 400, "memory limit 256MiB exceeded"},
		{"--memory 64m", 64 << 20, 100, "memory limit 64MiB exceeded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, lines, _, err := e.run(t, Process{Limits: Limits{Memory: tc.limit}}, memoryHog(tc.hog))
			t.Logf("output: %v", lines)
			assertKilled(t, e, err, tc.want, "--memory", "--step-memory")
		})
	}
	// Below the limit the same program runs.
	if code, _, _, err := e.run(t, Process{}, memoryHog(100)); err != nil || code != 0 {
		t.Errorf("100 MiB under a 256 MiB limit: Run = %d, %v", code, err)
	}
}

// The limits reach the step's own cgroup, nested under the builder's.
func TestRunCgroupLimits(t *testing.T) {
	e := newEnvWith(t, Options{Memory: 512 << 20, Pids: 300, CPUs: 1.5})
	own, err := locateCgroups()
	if err != nil {
		t.Fatal(err)
	}
	if own.v2 {
		t.Skip("this test reads cgroup v1 files; the machine has cgroup v2")
	}
	read := func(l Limits) []string {
		t.Helper()
		code, lines, _, err := e.run(t, Process{Limits: l}, `cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us /sys/fs/cgroup/cpu/cpu.shares; grep :memory: /proc/self/cgroup`)
		if err != nil || code != 0 {
			t.Fatalf("Run = %d, %v (%v)", code, err, lines)
		}
		return strings.Fields(stdout(lines))
	}
	got := read(Limits{})
	if want := []string{fmt.Sprint(512 << 20), "300", "150000", "100000", "1024"}; strings.Join(got[:5], " ") != strings.Join(want, " ") {
		t.Errorf("default limits seen in the step = %q, want %q", got[:5], want)
	}
	memCgroup, _ := strings.CutPrefix(got[5], "4:memory:")
	if !strings.Contains(got[5], ":memory:") || !strings.Contains(memCgroup, "/strata-") {
		t.Errorf("the step's memory cgroup %q is not a strata- cgroup", got[5])
	}
	got = read(Limits{Memory: 100 << 20, Pids: 50, CPUQuota: 50000, CPUPeriod: 200000, CPUShares: 512})
	if want := []string{fmt.Sprint(100 << 20), "50", "50000", "200000", "512"}; strings.Join(got[:5], " ") != strings.Join(want, " ") {
		t.Errorf("a build's limits seen in the step = %q, want %q", got[:5], want)
	}
}

func TestRunLimitsAboveTheMaximumAreRefused(t *testing.T) {
	e := newEnvWith(t, Options{Memory: 1 << 30, Pids: 100, CPUs: 2, StepDisk: 1 << 30})
	for _, tc := range []struct {
		l    Limits
		want []string
	}{
		{Limits{Memory: 2 << 30}, []string{"--memory 2GiB", "maximum of 1GiB", "--step-memory"}},
		{Limits{Memory: 1 << 20}, []string{"--memory 1MiB", "minimum of 6 MiB"}},
		{Limits{MemorySwap: -1}, []string{"--memory-swap -1 (unlimited)", "--step-memory"}},
		{Limits{Memory: 512 << 20, MemorySwap: 256 << 20}, []string{"--memory-swap 256MiB is below --memory 512MiB"}},
		{Limits{Pids: 101}, []string{"--pids-limit 101", "maximum of 100", "--step-pids"}},
		{Limits{Pids: -1}, []string{"--pids-limit -1", "--step-pids"}},
		{Limits{CPUQuota: 300000}, []string{"--cpu-quota 300000", "3.00 CPUs", "maximum of 2", "--step-cpus"}},
		{Limits{CPUPeriod: 10000, CPUQuota: 30000}, []string{"--cpu-quota 30000 per --cpu-period 10000"}},
		{Limits{CPUShares: 1}, []string{"--cpu-shares 1"}},
		{Limits{Disk: 2 << 30}, []string{"--disk 2GiB", "maximum of 1GiB", "--step-disk"}},
		{Limits{Ulimits: []Ulimit{{Name: "nofile", Soft: 10, Hard: 1 << 40}}}, []string{"--ulimit nofile", "above this builder's own"}},
		{Limits{Ulimits: []Ulimit{{Name: "bogus", Soft: 1, Hard: 1}}}, []string{"--ulimit bogus"}},
	} {
		err := e.runner.Admit(NetworkBridge, tc.l)
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("Admit(%+v) = %v, want INVALID_ARGUMENT", tc.l, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Admit(%+v) = %q, want it to say %q", tc.l, err, w)
			}
		}
		if _, _, _, runErr := e.run(t, Process{Limits: tc.l}, `true`); !errdefs.IsInvalidArgument(runErr) {
			t.Errorf("Run with %+v = %v, want INVALID_ARGUMENT", tc.l, runErr)
		}
	}
	if err := e.runner.Admit(NetworkBridge, Limits{Memory: 1 << 30, Pids: 100, CPUQuota: 200000, MemorySwap: 2 << 30, Disk: 1 << 30}); err != nil {
		t.Errorf("Admit at the maxima = %v, want nil", err)
	}
}

func TestRunOpenFileLimit(t *testing.T) {
	e := newEnv(t)
	var own unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &own); err != nil {
		t.Fatal(err)
	}
	want := min(uint64(1<<20), own.Max)
	check := func(l Limits, want string) {
		t.Helper()
		code, lines, _, err := e.run(t, Process{Limits: l}, `echo $(ulimit -n) $(ulimit -Hn)`)
		if err != nil || code != 0 {
			t.Fatalf("Run = %d, %v", code, err)
		}
		if got := strings.TrimSpace(stdout(lines)); got != want {
			t.Errorf("RLIMIT_NOFILE with %+v = %q, want %q", l.Ulimits, got, want)
		}
	}
	check(Limits{}, fmt.Sprintf("%d %d", want, want))
	check(Limits{Ulimits: []Ulimit{{Name: "nofile", Soft: 1024, Hard: 2048}}}, "1024 2048")
}

// What `docker run --rm busybox grep -E 'Cap|Seccomp|NoNewPrivs' /proc/self/status`
// prints with Docker's defaults: the 14 capabilities of moby's
// oci/caps/defaults.go (a80425fb), none inheritable or ambient, the seccomp
// filter on.
func TestRunSeesDockersCapabilitiesAndSeccomp(t *testing.T) {
	e := newEnv(t)
	for _, user := range []string{"", "nobody"} {
		code, lines, _, err := e.run(t, Process{User: user}, `grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|Seccomp|NoNewPrivs):' /proc/self/status`)
		if err != nil || code != 0 {
			t.Fatalf("Run = %d, %v", code, err)
		}
		got := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(stdout(lines)), "\n") {
			k, v, _ := strings.Cut(l, ":")
			got[k] = strings.TrimSpace(v)
		}
		want := map[string]string{
			"CapInh": "0000000000000000", "CapPrm": "00000000a80425fb", "CapEff": "00000000a80425fb",
			"CapBnd": "00000000a80425fb", "CapAmb": "0000000000000000", "Seccomp": "2", "NoNewPrivs": "0",
		}
		if user != "" {
			// A non-root user keeps the bounding set only, as in Docker.
			want["CapPrm"], want["CapEff"] = "0000000000000000", "0000000000000000"
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("USER %q: %s = %q, want %q (Docker's default)", user, k, got[k], v)
			}
		}
	}
}

func TestDefaultMemoryLeavesHalf(t *testing.T) {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		t.Fatal(err)
	}
	total := int64(si.Totalram) * int64(si.Unit)
	if got := DefaultMemory(); got <= 0 || got > total/2 {
		t.Errorf("DefaultMemory() = %d, want at most half of %d", got, total)
	}
	t.Logf("DefaultMemory() = %d MiB of %d MiB", DefaultMemory()>>20, total>>20)
}
