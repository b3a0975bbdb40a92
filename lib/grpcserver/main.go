package grpcserver

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"

	"github.com/strata-build/strata/lib/flagenv"
	"github.com/strata-build/strata/lib/logging"
)

// Binary describes a service binary; Main runs it. The service's main.go
// supplies its own flags and wires its dependencies in Wire.
type Binary struct {
	// Name is the binary's name, "strata-blobstore".
	Name string
	// DefaultListen is the default gRPC listen address, ":50053".
	DefaultListen string
	// Flags registers the service's own flags.
	Flags func(fs *flagenv.Set)
	// Validate checks the service's own flag values, naming the wrong ones.
	Validate func(fs *flagenv.Set) error
	// Wire builds the service's dependencies and registers its gRPC services
	// on srv. The returned function, if any, releases them after the server
	// has stopped.
	Wire func(ctx context.Context, srv *Server, log *slog.Logger) (release func(), err error)
	// ServerOptions, if any, are added to the gRPC server's own.
	ServerOptions []grpc.ServerOption
	// Drain, if set, runs on SIGTERM or SIGINT before the server stops:
	// health turns NOT_SERVING, the server goes on serving, and Drain
	// refuses new work and waits for the running work to end (up to a
	// timeout of its own). Then the server stops as without it: Wire's
	// context ends and running calls are waited for up to the shutdown
	// timeout. Drain's context ends on a second signal.
	Drain func(ctx context.Context, log *slog.Logger)
}

// Main parses args and the environment, runs the server until SIGTERM or
// SIGINT, and returns the exit code: 0 after a clean stop, 2 for bad flags
// or values, 1 for failures at run time.
func (b Binary) Main(args []string) int { return b.main(args, os.Stderr) }

func (b Binary) main(args []string, stderr io.Writer) int {
	fs := flagenv.New(b.Name)
	fs.SetOutput(stderr)
	var cfg Config
	cfg.RegisterFlags(fs, b.DefaultListen)
	if b.Flags != nil {
		b.Flags(fs)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "%s: %v\n", b.Name, err)
		return flagenv.ExitCode
	}
	err := cfg.Validate(fs)
	if b.Validate != nil {
		err = errors.Join(err, b.Validate(fs))
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", b.Name, err)
		return flagenv.ExitCode
	}
	level, _ := logging.ParseLevel(cfg.LogLevel) // Validate checked it.
	log := logging.New(stderr, level, b.Name)

	srv, err := New(cfg, log, b.ServerOptions...)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", b.Name, err)
		return flagenv.ExitCode
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if b.Drain != nil {
		signaled := ctx
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(context.Background())
		defer cancel()
		go func() {
			select {
			case <-signaled.Done():
			case <-ctx.Done():
				return
			}
			b.drain(srv, log)
			cancel()
		}()
	}

	release, err := b.Wire(ctx, srv, log)
	if err != nil {
		log.Error("starting failed", "error", err.Error())
		return 1
	}
	if release != nil {
		defer release()
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer func() { signal.Stop(hup); close(hup) }()
	go func() {
		for range hup {
			if err := srv.ReloadTokens(); err != nil {
				log.Error("SIGHUP: the token file cannot be used; the tokens read before stay", "error", err.Error())
			} else {
				log.Info("SIGHUP: token file read")
			}
		}
	}()
	if err := srv.Run(ctx); err != nil {
		log.Error("server failed", "error", err.Error())
		return 1
	}
	log.Info("stopped")
	return 0
}

// drain marks srv NOT_SERVING and runs Drain, whose context a second
// signal ends.
func (b Binary) drain(srv *Server, log *slog.Logger) {
	srv.SetDraining()
	log.Info("draining: health is NOT_SERVING, new work is refused and running work finishes; a second signal stops at once")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	again := make(chan os.Signal, 1)
	signal.Notify(again, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(again)
	go func() {
		select {
		case <-again:
			log.Warn("second signal: stopping without waiting for running work")
			cancel()
		case <-ctx.Done():
		}
	}()
	b.Drain(ctx, log)
	log.Info("drained")
}
