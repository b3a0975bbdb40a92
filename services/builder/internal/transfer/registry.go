package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/reference"
)

// Auth holds registry credentials; the zero value is anonymous.
type Auth struct {
	Username, Password, IdentityToken, RegistryToken string
}

func (a Auth) authenticator() authn.Authenticator {
	if a == (Auth{}) {
		return authn.Anonymous
	}
	return authn.FromConfig(authn.AuthConfig{
		Username:      a.Username,
		Password:      a.Password,
		IdentityToken: a.IdentityToken,
		RegistryToken: a.RegistryToken,
	})
}

// registryRef turns a Docker reference into go-containerregistry's, with
// plain HTTP when asked (go-containerregistry already uses it for localhost
// and loopback registries).
func registryRef(ref reference.Reference, insecure bool) (name.Reference, error) {
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	r, err := name.ParseReference(ref.String(), opts...)
	if err != nil {
		return nil, errdefs.InvalidArgument("invalid reference %q: %v", ref.Familiar(), err)
	}
	return r, nil
}

// retries is how often a registry request, or a whole blob transfer, is
// tried again after a transient failure.
const retries = 4

func (s *Service) remoteOptions(ctx context.Context, auth Auth) []remote.Option {
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuth(auth.authenticator()),
		remote.WithTransport(s.transport),
		remote.WithRetryBackoff(remote.Backoff{Duration: s.retryBackoff, Factor: 2, Jitter: 0.1, Steps: retries}),
		remote.WithUserAgent("strata"),
	}
}

// registryError classifies an error of a registry call, naming what was
// being done (what) and the registry.
func registryError(err error, what string) error {
	if err == nil {
		return nil
	}
	if IsClassified(err) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var te *transport.Error
	if errors.As(err, &te) {
		msg := strings.TrimSpace(te.Error())
		switch {
		case te.StatusCode == http.StatusUnauthorized:
			return errdefs.Unauthenticated("%s: the registry refused the credentials (401): %s", what, msg).WithReason("REGISTRY_UNAUTHORIZED")
		case te.StatusCode == http.StatusForbidden:
			return errdefs.New(errdefs.ErrPermissionDenied, "%s: the registry denied access (403): %s", what, msg).WithReason("REGISTRY_DENIED")
		case te.StatusCode == http.StatusNotFound:
			return errdefs.NotFound("%s: not found in the registry (404): %s", what, msg).WithReason("REGISTRY_NOT_FOUND")
		case te.StatusCode == http.StatusTooManyRequests || te.StatusCode >= 500:
			return errdefs.Unavailable("%s: the registry failed (%d) after %d tries: %s", what, te.StatusCode, retries, msg).WithReason("REGISTRY_UNAVAILABLE")
		default:
			for _, d := range te.Errors {
				if d.Code == transport.UnauthorizedErrorCode || d.Code == transport.DeniedErrorCode {
					return errdefs.Unauthenticated("%s: %s", what, msg)
				}
				if d.Code == transport.ManifestUnknownErrorCode || d.Code == transport.NameUnknownErrorCode || d.Code == transport.BlobUnknownErrorCode {
					return errdefs.NotFound("%s: %s", what, msg)
				}
			}
			return errdefs.InvalidArgument("%s: the registry answered %d: %s", what, te.StatusCode, msg)
		}
	}
	var netErr net.Error
	var opErr *net.OpError
	if errors.As(err, &netErr) || errors.As(err, &opErr) {
		return errdefs.Unavailable("%s: cannot reach the registry: %v", what, err).WithReason("REGISTRY_UNREACHABLE")
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return errdefs.Unavailable("%s: the connection to the registry broke: %v", what, err).WithReason("REGISTRY_UNREACHABLE")
	}
	return fmt.Errorf("%s: %w", what, err)
}

// transient reports whether a blob transfer that failed with err is worth
// trying again.
func transient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	return errors.Is(err, errdefs.ErrUnavailable)
}

// withRetries runs op up to retries times while it fails transiently,
// reporting each retry.
func (s *Service) withRetries(ctx context.Context, progress Progress, id string, op func() error) error {
	wait := s.retryBackoff
	var err error
	for try := 1; ; try++ {
		err = op()
		if !transient(err) || try >= retries {
			return err
		}
		progress.Send(Update{ID: id, Action: ActionRetrying, Message: fmt.Sprintf("retrying in %v (try %d of %d): %v", wait, try+1, retries, err)})
		s.log.WarnContext(ctx, "retrying blob transfer", "blob", id, "try", try+1, "error", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait *= 2
	}
}

// blobFetcher GETs blobs of one repository through go-containerregistry's
// authenticated transport. Strata reads the bytes itself rather than through
// remote.Layer, whose reader hashes them once more: every byte is already
// hashed on its way into the blob store, which refuses a blob that does not
// match its digest, so a second hash only costs a core on a pull.
type blobFetcher struct {
	client *http.Client
	repo   name.Repository
}

func (s *Service) newBlobFetcher(ctx context.Context, repo name.Repository, auth Auth) (*blobFetcher, error) {
	t, err := transport.NewWithContext(ctx, repo.Registry, auth.authenticator(), s.transport, []string{repo.Scope(transport.PullScope)})
	if err != nil {
		return nil, err
	}
	return &blobFetcher{client: &http.Client{Transport: t}, repo: repo}, nil
}

// open starts reading a blob; the caller checks size and digest.
func (f *blobFetcher) open(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
	u := url.URL{
		Scheme: f.repo.Scheme(),
		Host:   f.repo.RegistryStr(),
		Path:   fmt.Sprintf("/v2/%s/blobs/%s", f.repo.RepositoryStr(), d),
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, err
	}
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		resp.Body.Close()
		return nil, err
	}
	return resp.Body, nil
}
