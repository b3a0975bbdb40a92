package sandbox

import (
	"fmt"
	"path"
	"strings"

	"github.com/containerd/containerd/v2/contrib/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/strata-build/strata/services/builder/internal/rootfs"
)

// defaultPath is the PATH a process gets when the image sets none, as in
// Docker.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// defaultCapabilities are Docker's default capabilities (moby
// oci/caps/defaults.go).
var defaultCapabilities = []string{
	"CAP_CHOWN",
	"CAP_DAC_OVERRIDE",
	"CAP_FSETID",
	"CAP_FOWNER",
	"CAP_MKNOD",
	"CAP_NET_RAW",
	"CAP_SETGID",
	"CAP_SETUID",
	"CAP_SETFCAP",
	"CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT",
	"CAP_KILL",
	"CAP_AUDIT_WRITE",
}

// Docker's masked and read-only paths (moby oci/defaults.go).
var (
	maskedPaths = []string{
		"/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
		"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
		"/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
	}
	readonlyPaths = []string{
		"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
	}
)

// stepSpec is what the runner decided for one run.
type stepSpec struct {
	id, hostname, bundle string
	// netns is the network namespace to join (NetworkBridge).
	netns       string
	cgroupsPath string
	resources   *specs.LinuxResources
	rlimits     []specs.POSIXRlimit
}

// stepOOMScoreAdj makes the kernel's OOM killer, when the builder's cgroup
// or the machine runs out of memory (several steps each within their
// limits), pick a step's process before the builder (0 unless its operator
// says otherwise). A step cannot lower it: that needs CAP_SYS_RESOURCE.
const stepOOMScoreAdj = 500

// runtimeSpec is the OCI runtime spec of one RUN: the namespaces, mounts,
// capabilities, seccomp profile and limits of Docker's default container,
// with no host path mounted but the three files the runner generated for
// the run (/etc/resolv.conf, /etc/hosts, /etc/hostname).
func runtimeSpec(p Process, u rootfs.User, st stepSpec) *specs.Spec {
	env := processEnv(p.Env, st.hostname, u.Home)
	namespaces := []specs.LinuxNamespace{
		{Type: specs.PIDNamespace},
		{Type: specs.IPCNamespace},
		{Type: specs.UTSNamespace},
		{Type: specs.MountNamespace},
	}
	switch p.Network {
	case NetworkNone:
		// A namespace of its own: runc brings up loopback and nothing else.
		namespaces = append(namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace})
	case NetworkBridge:
		namespaces = append(namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: st.netns})
	}
	oomScoreAdj := stepOOMScoreAdj
	s := &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			User: specs.User{UID: u.UID, GID: u.GID, AdditionalGids: u.Sgids},
			Args: p.Args,
			Env:  env,
			Cwd:  p.Cwd,
			Capabilities: &specs.LinuxCapabilities{
				Bounding:  defaultCapabilities,
				Effective: defaultCapabilities,
				Permitted: defaultCapabilities,
			},
			Rlimits:     st.rlimits,
			OOMScoreAdj: &oomScoreAdj,
		},
		Root:     &specs.Root{Path: p.RootFS},
		Hostname: st.hostname,
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"ro", "nosuid", "noexec", "nodev"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/etc/resolv.conf", Type: "bind", Source: path.Join(st.bundle, "resolv.conf"), Options: []string{"rbind", "rprivate"}},
			{Destination: "/etc/hostname", Type: "bind", Source: path.Join(st.bundle, "hostname"), Options: []string{"rbind", "rprivate"}},
			{Destination: "/etc/hosts", Type: "bind", Source: path.Join(st.bundle, "hosts"), Options: []string{"rbind", "rprivate"}},
		},
		Linux: &specs.Linux{
			Namespaces:    namespaces,
			CgroupsPath:   st.cgroupsPath,
			Resources:     st.resources,
			MaskedPaths:   maskedPaths,
			ReadonlyPaths: readonlyPaths,
		},
	}
	s.Mounts = append(s.Mounts, p.Mounts...)
	s.Linux.Seccomp = seccomp.DefaultProfile(s)
	return s
}

// processEnv is the environment Docker gives a container's process: a
// default PATH when the image has none, HOSTNAME, the image's (and step's)
// variables, and HOME from the user's passwd entry when not set.
func processEnv(env []string, hostname, home string) []string {
	out := make([]string, 0, len(env)+3)
	if !hasVar(env, "PATH") {
		out = append(out, defaultPath)
	}
	out = append(out, "HOSTNAME="+hostname)
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if k == "HOSTNAME" {
			out[indexVar(out, "HOSTNAME")] = kv
			continue
		}
		out = append(out, kv)
	}
	if !hasVar(out, "HOME") {
		if home == "" {
			home = "/"
		}
		out = append(out, "HOME="+home)
	}
	return out
}

func hasVar(env []string, name string) bool { return indexVar(env, name) >= 0 }

func indexVar(env []string, name string) int {
	for i, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k == name {
			return i
		}
	}
	return -1
}

// hostsFile is the /etc/hosts of a run, as Docker writes it for a container
// whose hostname is hostname.
func hostsFile(hostname string) []byte {
	return fmt.Appendf(nil, "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"+
		"fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"+
		"127.0.1.1\t%s\n", hostname)
}
