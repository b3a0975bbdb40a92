package build

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"syscall"
	"time"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/buildctx"
)

// MaxDownload bounds one ADD download.
const MaxDownload = 1 << 30

// URLPolicy decides which addresses ADD may download from.
type URLPolicy struct {
	// AllowPrivate lets ADD reach loopback, link-local and private
	// addresses; off by default, so a Dockerfile cannot make the builder
	// read its cloud metadata endpoint or services on its own network.
	AllowPrivate bool
}

func (p URLPolicy) allowed(a netip.Addr) bool {
	a = a.Unmap()
	if p.AllowPrivate {
		return true
	}
	return !(a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsPrivate() ||
		a.IsUnspecified() || a.IsMulticast() || a.IsInterfaceLocalMulticast())
}

// client returns an HTTP client that checks every address it connects to
// (redirects included) against the policy, after DNS resolution.
func (p URLPolicy) client() *http.Client {
	d := &net.Dialer{
		Timeout: 30 * time.Second,
		Control: func(network, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return errdefs.New(errdefs.ErrPermissionDenied, "ADD may not connect to %s", address)
			}
			if !p.allowed(ap.Addr()) {
				return errdefs.New(errdefs.ErrPermissionDenied, "ADD may not download from %s: loopback, link-local and private addresses are refused", ap.Addr())
			}
			return nil
		},
	}
	tr := &http.Transport{DialContext: d.DialContext, Proxy: nil, TLSHandshakeTimeout: 30 * time.Second, ResponseHeaderTimeout: 60 * time.Second}
	return &http.Client{Transport: tr, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if len(via) >= 10 {
			return fmt.Errorf("stopped after 10 redirects")
		}
		return nil
	}}
}

// fetchURL downloads an ADD source into the context store. The file gets
// the URL's last path element as its name and mode 0600, as Docker gives
// it; its mtime is the Last-Modified time when the server sends one.
func (b *Builder) fetchURL(ctx context.Context, raw string) (copyFile, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return copyFile{}, errdefs.InvalidArgument("invalid URL: %v", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return copyFile{}, errdefs.InvalidArgument("invalid URL: %v", err)
	}
	resp, err := b.URLPolicy.client().Do(req)
	if err != nil {
		var e *errdefs.Error
		if errors.As(err, &e) {
			return copyFile{}, e
		}
		return copyFile{}, errdefs.Unavailable("downloading: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return copyFile{}, errdefs.New(errdefs.ErrFailedPrecondition, "downloading: the server answered %s", resp.Status)
	}
	tmp, err := b.Contexts.NewTempFile()
	if err != nil {
		return copyFile{}, err
	}
	defer tmp.Close()
	n, err := io.Copy(tmp, io.LimitReader(resp.Body, MaxDownload+1))
	if err != nil {
		return copyFile{}, errdefs.Unavailable("downloading: %v", err)
	}
	if n > MaxDownload {
		return copyFile{}, errdefs.ResourceExhausted("download is larger than %d bytes", MaxDownload)
	}
	d, err := tmp.Commit()
	if err != nil {
		return copyFile{}, err
	}
	name := path.Base(u.Path)
	if name == "/" || name == "." || name == "" {
		name = "__unnamed__"
	}
	mtime := time.Now()
	if lm, err := http.ParseTime(resp.Header.Get("Last-Modified")); err == nil {
		mtime = lm
	}
	e := &buildctx.Entry{Path: name, Mode: 0o600, Size: n, Digest: d, ModTimeNano: mtime.UnixNano()}
	return copyFile{src: raw, entry: e, name: name}, nil
}
