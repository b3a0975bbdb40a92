package build

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/buildctx"
	"github.com/strata-build/strata/services/builder/internal/egress"
	"github.com/strata-build/strata/services/builder/internal/plan"
)

// MaxDownload bounds one ADD download.
const MaxDownload = 1 << 30

// DefaultDownloadTimeout bounds one ADD download, start to end, when the
// builder sets no other bound.
const DefaultDownloadTimeout = 10 * time.Minute

// urlClient returns an HTTP client that checks every address it connects
// to (redirects included) against the policy, after DNS resolution.
func urlClient(p egress.Policy) *http.Client {
	tr := p.Transport()
	tr.TLSHandshakeTimeout, tr.ResponseHeaderTimeout = 30*time.Second, 60*time.Second
	return &http.Client{Transport: tr, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if len(via) >= 10 {
			return fmt.Errorf("stopped after 10 redirects")
		}
		return nil
	}}
}

// downloads are the builder's ADD downloads, for the planner and for the
// steps that fetch theirs when they run (ADD --checksum).
type downloads struct{ b *Builder }

func (d downloads) Download(ctx context.Context, url string, checksum digest.Digest) (*buildctx.Entry, error) {
	return d.b.fetchURL(ctx, url, checksum)
}

func (d downloads) Clone(ctx context.Context, g plan.GitSource) (*buildctx.Context, string, error) {
	return d.b.cloneGit(ctx, g)
}

// fetchURL downloads an ADD source into the context store. The file gets
// the URL's last path element as its name and mode 0600, as Docker gives
// it; its mtime is the Last-Modified time when the server sends one. With
// a checksum (ADD --checksum), content of another digest is refused as
// BuildKit refuses it, and not stored.
func (b *Builder) fetchURL(ctx context.Context, raw string, checksum digest.Digest) (*buildctx.Entry, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errdefs.InvalidArgument("invalid URL: %v", err)
	}
	timeout := b.DownloadTimeout
	if timeout <= 0 {
		timeout = DefaultDownloadTimeout
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// tooLong says so when the download outlived its bound (and not the
	// build its context).
	tooLong := func(err error) error {
		if ctx.Err() == nil && errors.Is(dctx.Err(), context.DeadlineExceeded) {
			return errdefs.New(errdefs.ErrDeadlineExceeded, "downloading %s took longer than the builder allows (%v, --download-timeout)", raw, timeout).
				WithReason("DOWNLOAD_TIMEOUT")
		}
		return err
	}
	req, err := http.NewRequestWithContext(dctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, errdefs.InvalidArgument("invalid URL: %v", err)
	}
	resp, err := urlClient(b.URLPolicy).Do(req)
	if err != nil {
		var e *errdefs.Error
		if errors.As(err, &e) {
			return nil, e
		}
		return nil, tooLong(errdefs.Unavailable("downloading: %v", err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, errdefs.New(errdefs.ErrFailedPrecondition, "downloading: the server answered %s", resp.Status)
	}
	tmp, err := b.Contexts.NewTempFile()
	if err != nil {
		return nil, err
	}
	defer tmp.Close()
	var w io.Writer = tmp
	var sum hash.Hash
	if checksum != "" {
		sum = checksum.Algorithm().Hash()
		w = io.MultiWriter(tmp, sum)
	}
	n, err := io.Copy(w, io.LimitReader(resp.Body, MaxDownload+1))
	if err != nil {
		return nil, tooLong(errdefs.Unavailable("downloading: %v", err))
	}
	if n > MaxDownload {
		return nil, errdefs.ResourceExhausted("download is larger than %d bytes", MaxDownload)
	}
	if sum != nil {
		if got := digest.NewDigest(checksum.Algorithm(), sum); got != checksum {
			return nil, errdefs.New(errdefs.ErrFailedPrecondition, "digest mismatch for %s: %s (expected: %s)", redactURL(u.String()), got, checksum).WithReason("CHECKSUM_MISMATCH")
		}
	}
	d, err := tmp.Commit()
	if err != nil {
		return nil, err
	}
	name := plan.URLFileName(raw)
	mtime := time.Now()
	if lm, err := http.ParseTime(resp.Header.Get("Last-Modified")); err == nil {
		mtime = lm
	}
	return &buildctx.Entry{Path: name, Mode: 0o600, Size: n, Digest: d, ModTimeNano: mtime.UnixNano()}, nil
}
