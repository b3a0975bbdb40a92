package grpcclient

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	_ "google.golang.org/grpc/health" // client-side health checking, which balancedConfig turns on
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// A target names one service, in one of three forms:
//
//   - "host:port": that address (every IP the name resolves to, the first
//     that answers taking every call). The name is looked up again on each
//     connection attempt (gRPC's passthrough resolver, Go's own lookup), so
//     a service whose name stopped resolving while it was down (a stopped
//     compose container) is reached as soon as it is back, not after gRPC's
//     DNS resolver has backed off for up to two minutes.
//   - "dns:///host:port" (or "dns://RESOLVER/host:port"): every IP the
//     name resolves to, each a replica, re-resolved when a connection
//     breaks; a compose service scaled to several containers or a
//     Kubernetes headless Service.
//   - "host:port,host:port,…": these replicas (such as the ports a scaled
//     compose service publishes on one host).
//
// Calls to the replicas of the last two go round robin, to those whose
// gRPC health (grpc.health.v1, the server's overall status) is SERVING:
// gRPC's round_robin policy with client-side health checking, so no proxy
// stands between client and replicas, and a replica whose database or
// storage is down (NOT_SERVING), draining or dead gets no calls while
// another serves. A single address keeps pick_first without health
// checks, so that a lone service's own error (say, that S3 cannot be
// reached) reaches the caller instead of "no healthy replica".

// balancedConfig is the service config of targets with replicas.
const balancedConfig = `{"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}}`

// listScheme is the resolver scheme of a comma-separated list of replicas.
const listScheme = "strata-replicas"

// ValidateTarget checks a target, naming what is wrong.
func ValidateTarget(target string) error {
	switch {
	case target == "":
		return errors.New("an address is required")
	case strings.HasPrefix(target, "dns:"):
		rest := strings.TrimPrefix(target, "dns:")
		if !strings.HasPrefix(rest, "//") {
			return checkHostPort(rest)
		}
		rest = strings.TrimPrefix(rest, "//")
		i := strings.IndexByte(rest, '/')
		if i < 0 {
			return fmt.Errorf("%q: want dns:///host:port or dns://resolver/host:port", target)
		}
		return checkHostPort(rest[i+1:])
	case strings.HasPrefix(target, "unix:"), strings.HasPrefix(target, "unix-abstract:"), strings.HasPrefix(target, "passthrough:"):
		return nil
	}
	for _, a := range strings.Split(target, ",") {
		if err := checkHostPort(a); err != nil {
			return err
		}
	}
	return nil
}

func checkHostPort(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port: %v", err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q of %q is not a number from 0 to 65535", port, addr)
	}
	return nil
}

// balance returns the target to dial and the options that balance calls
// over its replicas, if it has them.
func balance(target string) (string, []grpc.DialOption) {
	switch {
	case strings.HasPrefix(target, "dns:"):
		return target, []grpc.DialOption{grpc.WithDefaultServiceConfig(balancedConfig)}
	case strings.Contains(target, ":///"), strings.HasPrefix(target, "unix:"), strings.HasPrefix(target, "unix-abstract:"):
		return target, nil
	case !strings.Contains(target, ","):
		return "passthrough:///" + target, nil
	}
	var state resolver.State
	for _, a := range strings.Split(target, ",") {
		host, _, _ := net.SplitHostPort(a)
		// Each replica's certificate is checked for its own host name.
		state.Addresses = append(state.Addresses, resolver.Address{Addr: a, ServerName: host})
	}
	r := manual.NewBuilderWithScheme(listScheme)
	r.InitialState(state)
	return listScheme + ":///" + state.Addresses[0].Addr, []grpc.DialOption{grpc.WithResolvers(r), grpc.WithDefaultServiceConfig(balancedConfig)}
}

// Hosts returns the hosts a target names ("metadata" for
// dns:///metadata:50052; each of a list): what a builder keeps RUN steps
// from reaching.
func Hosts(target string) []string {
	var out []string
	for _, a := range strings.Split(target, ",") {
		a = strings.TrimPrefix(strings.TrimPrefix(a, "dns:///"), "passthrough:///")
		if strings.HasPrefix(a, "dns://") {
			a = a[strings.LastIndexByte(a, '/')+1:]
		}
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			host = a
		}
		out = append(out, host)
	}
	return out
}
