package command

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/docker/go-units"
	"github.com/spf13/cobra"

	"github.com/strata-build/strata/client"
	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
)

type buildOptions struct {
	tags       []string
	file       string
	buildArgs  []string
	secrets    []string
	ssh        []string
	target     string
	labels     []string
	noCache    bool
	quiet      bool
	network    string
	progress   string
	contextDir string
	// RUN limits, by docker build's flags.
	memory, memorySwap, cpuShares, cpuPeriod, cpuQuota, pidsLimit int64
	ulimits                                                       ulimits
	// disk is Strata's own: Docker has no limit of what a step writes.
	disk int64
}

// memBytes is --memory: bytes, or Docker's sizes ("512m", "2g"), read with
// go-units as docker/cli's opts.MemBytes does (that package would bring in
// Docker's API client).
type memBytes struct {
	v        *int64
	infinite bool // -1 means unlimited (--memory-swap)
}

func (m memBytes) String() string {
	if *m.v == 0 {
		return ""
	}
	return fmt.Sprint(*m.v)
}

func (m memBytes) Set(s string) error {
	if m.infinite && s == "-1" {
		*m.v = -1
		return nil
	}
	n, err := units.RAMInBytes(s)
	*m.v = n
	return err
}

func (memBytes) Type() string { return "bytes" }

// ulimits is --ulimit NAME=SOFT[:HARD], repeatable, parsed by go-units as
// Docker parses it.
type ulimits []*builderv1.Ulimit

func (u *ulimits) String() string { return "" }

func (u *ulimits) Set(s string) error {
	l, err := units.ParseUlimit(s)
	if err != nil {
		return err
	}
	*u = append(*u, &builderv1.Ulimit{Name: l.Name, Soft: l.Soft, Hard: l.Hard})
	return nil
}

func (*ulimits) Type() string { return "ulimit" }

func newBuildCommand(c *CLI) *cobra.Command {
	var o buildOptions
	cmd := &cobra.Command{
		Use:   "build [OPTIONS] PATH | -",
		Short: "Build an image from a Dockerfile",
		Args:  exactArgs(1),
		Example: "  strata image build -t my-nginx -f Dockerfile-1 .\n" +
			"  strata image build --build-arg VERSION=1.2 --target runtime -t app:1.2 .\n" +
			"  strata image build --no-cache --progress=plain -t app .\n" +
			"  strata image build --secret id=npmrc,src=$HOME/.npmrc --secret id=TOKEN,env=TOKEN -t app .\n" +
			"  strata image build --ssh default -t app .\n" +
			"  strata image build --ssh deploy=$HOME/.ssh/id_ed25519 -t app .\n" +
			"  strata image build -f docker/Dockerfile -t app - < context.tar.gz",
		RunE: func(cmd *cobra.Command, args []string) error {
			o.contextDir = args[0]
			return c.runBuild(cmd, &o)
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&o.tags, "tag", "t", nil, "Name and optionally a tag in the 'name:tag' format")
	f.StringVarP(&o.file, "file", "f", "", "Name of the Dockerfile (Default is 'PATH/Dockerfile')")
	f.StringArrayVar(&o.buildArgs, "build-arg", nil, "Set build-time variables")
	f.StringArrayVar(&o.secrets, "secret", nil, "Secret to expose to the build's RUN --mount=type=secret (format: \"id=mysecret[,src=/local/secret]\" or \"id=mysecret,env=VARIABLE\")")
	f.StringArrayVar(&o.ssh, "ssh", nil, "SSH agent socket or keys to expose to the build's RUN --mount=type=ssh (format: \"default|<id>[=<socket>|<key>[,<key>]]\")")
	f.StringVar(&o.target, "target", "", "Set the target build stage to build.")
	f.StringArrayVar(&o.labels, "label", nil, "Set metadata for an image")
	f.BoolVar(&o.noCache, "no-cache", false, "Do not use cache when building the image")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "Suppress the build output and print image ID on success")
	f.StringVar(&o.network, "network", "default", "Set the networking mode for the RUN instructions during build (default, none, host)")
	f.StringVar(&o.progress, "progress", "auto", "Set type of progress output (auto, plain, quiet)")
	f.VarP(memBytes{v: &o.memory}, "memory", "m", "Memory limit of RUN steps (at most the builder's --step-memory)")
	f.Var(memBytes{v: &o.memorySwap, infinite: true}, "memory-swap", "Swap limit equal to memory plus swap: -1 to enable unlimited swap")
	f.Int64VarP(&o.cpuShares, "cpu-shares", "c", 0, "CPU shares (relative weight)")
	f.Int64Var(&o.cpuPeriod, "cpu-period", 0, "Limit the CPU CFS (Completely Fair Scheduler) period")
	f.Int64Var(&o.cpuQuota, "cpu-quota", 0, "Limit the CPU CFS (Completely Fair Scheduler) quota")
	f.Int64Var(&o.pidsLimit, "pids-limit", 0, "Limit the number of processes of RUN steps (at most the builder's --step-pids)")
	f.Var(&o.ulimits, "ulimit", "Ulimit options")
	f.Var(memBytes{v: &o.disk}, "disk", "Most bytes one RUN step may write (at most the builder's --step-disk)")
	return cmd
}

func (c *CLI) runBuild(cmd *cobra.Command, o *buildOptions) error {
	opts := client.BuildOptions{Tags: o.tags, Target: o.target, NoCache: o.noCache, BuildArgs: map[string]string{}, Labels: map[string]string{},
		Resources: &client.RunResources{Memory: o.memory, MemorySwap: o.memorySwap, CpuShares: o.cpuShares, CpuPeriod: o.cpuPeriod,
			CpuQuota: o.cpuQuota, PidsLimit: o.pidsLimit, Ulimits: o.ulimits, Disk: o.disk}}
	switch o.network {
	case "", "default", "bridge":
	case "none":
		opts.Network = client.NetworkNone
	case "host":
		opts.Network = client.NetworkHost
	default:
		return fmt.Errorf("invalid --network %q: want default, none or host", o.network)
	}
	for _, a := range o.buildArgs {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			if v, set := os.LookupEnv(k); set {
				opts.BuildArgs[k] = v
			}
			opts.BuildArgNames = append(opts.BuildArgNames, k)
			continue
		}
		opts.BuildArgs[k] = v
	}
	for _, l := range o.labels {
		k, v, _ := strings.Cut(l, "=")
		opts.Labels[k] = v
	}
	for _, spec := range o.secrets {
		id, v, err := client.ReadSecret(spec)
		if err != nil {
			return fmt.Errorf("invalid --secret: %w", err)
		}
		if opts.Secrets == nil {
			opts.Secrets = map[string][]byte{}
		}
		opts.Secrets[id] = v
	}
	for _, spec := range o.ssh {
		id, a, err := client.LoadSSHAgent(spec)
		if err != nil {
			return fmt.Errorf("invalid --ssh: %w", err)
		}
		if opts.SSH == nil {
			opts.SSH = map[string]client.SSHAgent{}
		}
		opts.SSH[id] = a
	}
	var p printer
	switch o.progress {
	case "quiet":
		o.quiet = true
	case "plain":
		opts.EventOrder = client.EventsLive
	case "auto", "tty":
	default:
		return fmt.Errorf("invalid --progress %q: want auto, plain or quiet", o.progress)
	}
	switch {
	case o.quiet:
		p = &quietPrinter{out: c.Out}
	case o.progress == "plain":
		p = newPlainPrinter(c.Out, time.Now)
	case o.progress == "tty" || o.progress == "auto" && c.outIsTerminal():
		p = newLivePrinter(c.Out)
	default:
		p = &classicPrinter{out: c.Out}
	}

	if o.contextDir == "-" {
		return c.runStdinBuild(cmd, opts, o.file, p)
	}
	if o.file == "-" {
		b, err := io.ReadAll(io.LimitReader(c.In, 1<<20+1))
		if err != nil {
			return fmt.Errorf("reading the Dockerfile from stdin: %w", err)
		}
		opts.DockerfileContent = b
	} else if o.file != "" {
		// As with Docker, -f is relative to the current directory.
		abs, err := filepath.Abs(o.file)
		if err != nil {
			return err
		}
		opts.Dockerfile = abs
	}
	opts.OnEvent, opts.OnContext = p.event, p.context

	cl, err := c.client(cmd.Context())
	if err != nil {
		return err
	}
	result, err := cl.Build(cmd.Context(), o.contextDir, opts)
	if err != nil {
		p.fail(err)
		return err
	}
	p.result(result)
	return nil
}

// printer shows a build's progress.
type printer interface {
	// context tells, before it is sent, how many bytes of file contents
	// travel to the builder, out of the context's distinct contents
	// (unique) and all its files (total).
	context(sending, unique, total int64)
	event(ev *builderv1.BuildEvent)
	// fail ends the display of a build that failed with err.
	fail(err error)
	result(r *builderv1.BuildResult)
}

func shortID(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// classicPrinter prints what Docker's classic builder prints.
type classicPrinter struct {
	out     io.Writer
	cached  bool
	cid     string
	inStep  bool
	outputs bool
}

func (p *classicPrinter) context(sending, unique, total int64) {
	fmt.Fprintf(p.out, "%s\n\n", sendingLine(sending, unique, total))
}

const sendingPrefix = "Sending build context to Strata builder  "

// sendingLine is Docker's "Sending build context to Docker daemon  2.048kB"
// for Strata, where only the contents the builder does not hold travel, each
// once: the figure is what is sent, and the context's size follows when the
// builder holds some of it.
func sendingLine(sending, unique, total int64) string {
	line := sendingPrefix + units.HumanSize(float64(sending))
	switch {
	case sending >= unique:
	case sending == 0:
		line += fmt.Sprintf(" (of %s; the builder has all of it)", units.HumanSize(float64(total)))
	default:
		line += fmt.Sprintf(" (of %s; the builder has the rest)", units.HumanSize(float64(total)))
	}
	return line
}

func (p *classicPrinter) event(ev *builderv1.BuildEvent) {
	switch e := ev.GetEvent().(type) {
	case *builderv1.BuildEvent_Started:
		s := e.Started
		fmt.Fprintf(p.out, "Step %d/%d : %s\n", ev.GetStep(), s.GetTotalSteps(), s.GetInstruction())
		p.cached, p.cid = false, s.GetContainerId()
	case *builderv1.BuildEvent_Cached:
		p.cached = true
		fmt.Fprintln(p.out, " ---> Using cache")
	case *builderv1.BuildEvent_Output:
		if p.cid != "" && !p.outputs {
			p.outputs = true
		}
		p.running()
		p.out.Write(e.Output.GetData())
	case *builderv1.BuildEvent_Done:
		if !p.cached && p.cid != "" {
			p.running()
			fmt.Fprintf(p.out, "Removing intermediate container %s\n", shortID(p.cid))
		}
		fmt.Fprintf(p.out, " ---> %s\n", shortID(e.Done.GetImageId()))
		p.cid, p.inStep, p.outputs = "", false, false
	case *builderv1.BuildEvent_Warning:
		fmt.Fprintln(p.out, e.Warning.GetMessage())
	case *builderv1.BuildEvent_Queued:
		fmt.Fprintln(p.out, queuedLine(e.Queued.GetAhead()))
	}
}

// queuedLine says a build waits for a slot of the builder.
func queuedLine(ahead int32) string {
	return fmt.Sprintf("Waiting for a build slot on the builder: %d build(s) ahead", ahead)
}

// running prints " ---> Running in" once per step that runs a container.
func (p *classicPrinter) running() {
	if p.cid != "" && !p.inStep {
		p.inStep = true
		fmt.Fprintf(p.out, " ---> Running in %s\n", shortID(p.cid))
	}
}

func (p *classicPrinter) fail(error) {}

func (p *classicPrinter) result(r *builderv1.BuildResult) {
	fmt.Fprintf(p.out, "Successfully built %s\n", shortID(r.GetImageId()))
	for _, t := range r.GetTags() {
		fmt.Fprintf(p.out, "Successfully tagged %s\n", t)
	}
}

// quietPrinter prints the image ID only.
type quietPrinter struct{ out io.Writer }

func (p *quietPrinter) context(int64, int64, int64)     {}
func (p *quietPrinter) event(*builderv1.BuildEvent)     {}
func (p *quietPrinter) fail(error)                      {}
func (p *quietPrinter) result(r *builderv1.BuildResult) { fmt.Fprintln(p.outw(), r.GetImageId()) }
func (p *quietPrinter) outw() io.Writer {
	if p.out == nil {
		return os.Stdout
	}
	return p.out
}

// livePrinter shows a compact view on a terminal: one line per finished
// step with its time, the running step's line with a live timer, and RUN
// output as it comes.
type livePrinter struct {
	out   io.Writer
	mu    sync.Mutex
	start time.Time
	stop  chan struct{}

	step   int32
	total  int32
	text   string
	stepAt time.Time
	cached bool
	drawn  bool
}

func newLivePrinter(out io.Writer) *livePrinter {
	p := &livePrinter{out: out, start: time.Now(), stop: make(chan struct{})}
	go p.tick()
	return p
}

func (p *livePrinter) tick() {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.mu.Lock()
			p.redraw()
			p.mu.Unlock()
		}
	}
}

func (p *livePrinter) clear() {
	if p.drawn {
		fmt.Fprint(p.out, "\r\x1b[K")
		p.drawn = false
	}
}

func (p *livePrinter) redraw() {
	if p.step == 0 {
		return
	}
	p.clear()
	fmt.Fprintf(p.out, "\x1b[1m => [%d/%d] %s\x1b[0m %s", p.step, p.total, shorten(p.text, 70), secs(time.Since(p.stepAt)))
	p.drawn = true
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1fs", d.Seconds()) }

func shorten(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > n {
		return s[:n-1] + "…"
	}
	return s
}

func (p *livePrinter) context(sending, unique, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintln(p.out, sendingLine(sending, unique, total))
}

func (p *livePrinter) event(ev *builderv1.BuildEvent) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch e := ev.GetEvent().(type) {
	case *builderv1.BuildEvent_Started:
		p.step, p.total, p.text, p.stepAt, p.cached = ev.GetStep(), e.Started.GetTotalSteps(), e.Started.GetInstruction(), time.Now(), false
		p.redraw()
	case *builderv1.BuildEvent_Cached:
		p.cached = true
	case *builderv1.BuildEvent_Output:
		p.clear()
		data := strings.TrimRight(string(e.Output.GetData()), "\n")
		color := "\x1b[2m"
		if e.Output.GetStream() == builderv1.OutputStream_OUTPUT_STREAM_STDERR {
			color = "\x1b[31m"
		}
		fmt.Fprintf(p.out, "%s    %s\x1b[0m\n", color, data)
		p.redraw()
	case *builderv1.BuildEvent_Done:
		if p.step != ev.GetStep() {
			return
		}
		p.clear()
		label := ""
		if p.cached {
			label = "CACHED "
		}
		fmt.Fprintf(p.out, " => %s[%d/%d] %s %s\n", label, p.step, p.total, shorten(p.text, 70), secs(e.Done.GetDuration().AsDuration()))
		p.step = 0
	case *builderv1.BuildEvent_Warning:
		p.clear()
		fmt.Fprintf(p.out, "\x1b[33m%s\x1b[0m\n", e.Warning.GetMessage())
		p.redraw()
	case *builderv1.BuildEvent_Queued:
		p.clear()
		fmt.Fprintln(p.out, queuedLine(e.Queued.GetAhead()))
		p.redraw()
	}
}

func (p *livePrinter) fail(error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	close(p.stop)
	p.clear()
	if p.step != 0 {
		fmt.Fprintf(p.out, " => ERROR [%d/%d] %s %s\n", p.step, p.total, shorten(p.text, 70), secs(time.Since(p.stepAt)))
	}
}

func (p *livePrinter) result(r *builderv1.BuildResult) {
	p.mu.Lock()
	defer p.mu.Unlock()
	close(p.stop)
	p.clear()
	fmt.Fprintf(p.out, " => built %s in %s\n", shortID(r.GetImageId()), secs(time.Since(p.start)))
	for _, t := range r.GetTags() {
		fmt.Fprintf(p.out, " => naming to %s\n", t)
	}
}
