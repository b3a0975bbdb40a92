package grpcserver

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/strata-build/strata/lib/auth"
	"github.com/strata-build/strata/lib/flagenv"
	"github.com/strata-build/strata/lib/grpcclient"
	"github.com/strata-build/strata/lib/logging"
)

// Config is the configuration every Strata server shares.
type Config struct {
	// Listen is the gRPC listen address, "host:port".
	Listen string
	// MetricsAddr is the address of the Prometheus /metrics endpoint; empty
	// turns it off.
	MetricsAddr string
	// TLSCert and TLSKey turn on TLS.
	TLSCert, TLSKey string
	// TLSClientCA turns on mutual TLS: clients need a certificate it signed.
	TLSClientCA string
	// AuthToken (with every role), or the tokens in AuthTokenFile (see
	// auth.ParseTokens, read again when the file changes or on SIGHUP),
	// turn on bearer-token auth.
	AuthToken, AuthTokenFile string
	// Insecure lets a server listen off loopback without TLS and a way to
	// identify callers (tokens or client certificates).
	Insecure bool
	// MaxRecvMsgSize and MaxSendMsgSize bound message sizes in bytes.
	MaxRecvMsgSize, MaxSendMsgSize int
	// KeepaliveMinTime is the shortest keepalive ping interval clients may use.
	KeepaliveMinTime time.Duration
	// ShutdownTimeout bounds a graceful stop; calls still running after it
	// are cut off.
	ShutdownTimeout time.Duration
	// LogLevel is debug, info, warn or error.
	LogLevel string
	// Pprof serves Go's profiles (net/http/pprof) at /debug/pprof/ on the
	// metrics listener, which must be set.
	Pprof bool
}

// RegisterFlags registers the shared server flags on fs, listening on
// defaultListen unless told otherwise.
func (c *Config) RegisterFlags(fs *flagenv.Set, defaultListen string) {
	fs.StringVar(&c.Listen, "listen", defaultListen, "gRPC listen address, host:port")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", "", "Prometheus metrics listen address, host:port (off when empty)")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "server certificate (PEM); turns on TLS together with --tls-key")
	fs.StringVar(&c.TLSKey, "tls-key", "", "server private key (PEM)")
	fs.StringVar(&c.TLSClientCA, "tls-client-ca", "", "CA bundle (PEM) that client certificates must chain to; turns on mutual TLS")
	fs.StringVar(&c.AuthToken, "auth-token", "", "bearer token that calls must carry (auth off when empty and no token file)")
	fs.StringVar(&c.AuthTokenFile, "auth-token-file", "", "file of accepted bearer tokens, a line each: ROLE TOKEN [NAME] (a lone TOKEN has every role); read again on change or SIGHUP")
	fs.BoolVar(&c.Insecure, "insecure", false, "serve off loopback without TLS, tokens or client certificates (anyone who reaches the port may do anything)")
	fs.IntVar(&c.MaxRecvMsgSize, "max-recv-msg-size", 16<<20, "largest message the server accepts, in bytes")
	fs.IntVar(&c.MaxSendMsgSize, "max-send-msg-size", 16<<20, "largest message the server sends, in bytes")
	fs.DurationVar(&c.KeepaliveMinTime, "keepalive-min-time", 10*time.Second, "shortest keepalive ping interval allowed to clients")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "how long a graceful stop waits for running calls")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.BoolVar(&c.Pprof, "pprof", false, "serve Go's CPU, heap and goroutine profiles at /debug/pprof/ on --metrics-addr")
}

// Validate checks the values, naming the flag and the value that is wrong.
func (c *Config) Validate(fs *flagenv.Set) error {
	var errs []error
	if err := validateAddr(c.Listen, false); err != nil {
		errs = append(errs, fs.Invalid("listen", err))
	}
	if err := validateAddr(c.MetricsAddr, true); err != nil {
		errs = append(errs, fs.Invalid("metrics-addr", err))
	}
	if c.Pprof && c.MetricsAddr == "" {
		errs = append(errs, errors.New("--pprof needs --metrics-addr: profiles are served on the metrics listener"))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, fmt.Errorf("--tls-cert %q and --tls-key %q must be given together", c.TLSCert, c.TLSKey))
	}
	if c.TLSClientCA != "" && c.TLSCert == "" {
		errs = append(errs, errors.New("--tls-client-ca needs --tls-cert and --tls-key"))
	}
	for _, name := range []string{"tls-cert", "tls-key", "tls-client-ca", "auth-token-file"} {
		errs = append(errs, fs.ReadableFile(name))
	}
	if err := c.exposed(); err != nil {
		errs = append(errs, err)
	}
	if c.MaxRecvMsgSize < 1<<20 {
		errs = append(errs, fs.Invalid("max-recv-msg-size", errors.New("must be at least 1048576")))
	}
	if c.MaxSendMsgSize < 1<<20 {
		errs = append(errs, fs.Invalid("max-send-msg-size", errors.New("must be at least 1048576")))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, fs.Invalid("shutdown-timeout", errors.New("must be positive")))
	}
	if _, err := logging.ParseLevel(c.LogLevel); err != nil {
		errs = append(errs, fs.Invalid("log-level", err))
	}
	return errors.Join(errs...)
}

// exposed refuses a server that anyone on its network could call, or whose
// tokens would cross the network in clear text: off loopback, a server
// needs TLS and a way to tell callers apart (tokens or client
// certificates), unless --insecure says otherwise.
func (c *Config) exposed() error {
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil || c.Insecure || auth.IsLoopback(host) {
		return nil
	}
	var missing []string
	if c.TLSCert == "" {
		missing = append(missing, "TLS (--tls-cert, --tls-key)")
	}
	if c.AuthToken == "" && c.AuthTokenFile == "" && c.TLSClientCA == "" {
		missing = append(missing, "tokens (--auth-token-file) or client certificates (--tls-client-ca)")
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("--listen %q is not a loopback address and the server has no %s: anyone who reaches it could call every RPC; set them, listen on 127.0.0.1, or pass --insecure",
		c.Listen, strings.Join(missing, " and no "))
}

// ValidateAddr checks the address flags of services that call other
// services: a target lib/grpcclient dials ("host:port", "dns:///host:port"
// or a comma-separated list of replicas).
func ValidateAddr(addr string) error { return grpcclient.ValidateTarget(addr) }

func validateAddr(addr string, optional bool) error {
	if addr == "" {
		if optional {
			return nil
		}
		return errors.New("an address is required")
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port: %v", err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}
