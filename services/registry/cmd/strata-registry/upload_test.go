package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/strata-build/strata/lib/blobclient"
	"github.com/strata-build/strata/lib/grpcclient"
	"github.com/strata-build/strata/lib/harness"
)

// client speaks the distribution API to one registry.
type client struct {
	t    *testing.T
	base string
}

func (c client) do(method, path string, body io.Reader, header map[string]string) *http.Response {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	if b, ok := body.(*bytes.Reader); ok {
		req.ContentLength = int64(b.Len())
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	c.t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func (c client) want(resp *http.Response, status int) []byte {
	c.t.Helper()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		c.t.Fatalf("%s %s = %s, want %d: %s", resp.Request.Method, resp.Request.URL.Path, resp.Status, status, b)
	}
	return b
}

// pushBlob uploads a blob with POST then PUT.
func (c client) pushBlob(repo string, b []byte) digest.Digest {
	c.t.Helper()
	d := digest.FromBytes(b)
	loc := c.do(http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil, nil).Header.Get("Location")
	c.want(c.do(http.MethodPut, loc+"?digest="+d.String(), bytes.NewReader(b), nil), http.StatusCreated)
	return d
}

func registryStack(t *testing.T) (client, *harness.Stack) {
	stack := harness.StartStack(t, harness.StackOptions{NoBuilder: true, Registry: true})
	return client{t: t, base: "http://" + stack.RegistryAddr}, stack
}

// failingReader gives n bytes of b, then fails, as a client whose
// connection breaks.
type failingReader struct {
	b []byte
	n int
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n == 0 {
		return 0, errors.New("connection lost")
	}
	k := copy(p, f.b[:min(len(f.b), f.n, len(p))])
	f.b, f.n = f.b[k:], f.n-k
	return k, nil
}

func TestInterruptedChunkedUploadResumes(t *testing.T) {
	c, _ := registryStack(t)
	blob := bytes.Repeat([]byte("0123456789abcdef"), 200_000) // 3.2 MB
	d := digest.FromBytes(blob)
	resp := c.do(http.MethodPost, "/v2/resume/me/blobs/uploads/", nil, nil)
	c.want(resp, http.StatusAccepted)
	loc := resp.Header.Get("Location")

	first := blob[:1_000_000]
	resp = c.do(http.MethodPatch, loc, bytes.NewReader(first), map[string]string{"Content-Range": fmt.Sprintf("0-%d", len(first)-1)})
	c.want(resp, http.StatusAccepted)
	if got := resp.Header.Get("Range"); got != fmt.Sprintf("0-%d", len(first)-1) {
		t.Fatalf("Range after the first chunk = %q", got)
	}
	// The second chunk's connection breaks half way.
	req, _ := http.NewRequest(http.MethodPatch, c.base+loc, &failingReader{b: blob[len(first):], n: 700_000})
	req.ContentLength = int64(len(blob) - len(first))
	req.Header.Set("Content-Range", fmt.Sprintf("%d-%d", len(first), len(blob)-1))
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("a PATCH whose body broke = %s, want a failed request", resp.Status)
	}
	// The registry says how far it got, and the upload goes on from there.
	var offset int
	harness.WaitFor(t, "the upload's status", 10*time.Second, func(context.Context) error {
		resp := c.do(http.MethodGet, loc, nil, nil)
		if resp.StatusCode != http.StatusNoContent {
			return fmt.Errorf("GET %s = %s", loc, resp.Status)
		}
		if _, err := fmt.Sscanf(resp.Header.Get("Range"), "0-%d", &offset); err != nil {
			return err
		}
		offset++
		if offset < len(first) {
			return fmt.Errorf("the upload holds %d bytes, less than the first chunk", offset)
		}
		return nil
	})
	resp = c.do(http.MethodPatch, loc, bytes.NewReader(blob[offset:]), map[string]string{"Content-Range": fmt.Sprintf("%d-%d", offset, len(blob)-1)})
	c.want(resp, http.StatusAccepted)
	c.want(c.do(http.MethodPut, resp.Header.Get("Location")+"?digest="+d.String(), nil, nil), http.StatusCreated)
	if got := c.want(c.do(http.MethodGet, "/v2/resume/me/blobs/"+d.String(), nil, nil), http.StatusOK); !bytes.Equal(got, blob) {
		t.Fatalf("the resumed blob reads back as %d other bytes", len(got))
	}
	t.Logf("resumed at %d of %d bytes", offset, len(blob))
}

func TestManifestWithMissingBlobRefused(t *testing.T) {
	c, _ := registryStack(t)
	config := c.pushBlob("team/app", []byte("{}"))
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeEmptyJSON, Digest: config, Size: 2},
		Layers: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromString("never pushed"), Size: 12}}}
	m.SchemaVersion = 2
	b, _ := json.Marshal(m)
	resp := c.do(http.MethodPut, "/v2/team/app/manifests/v1", bytes.NewReader(b), map[string]string{"Content-Type": ocispec.MediaTypeImageManifest})
	body := c.want(resp, http.StatusBadRequest)
	if !strings.Contains(string(body), `"MANIFEST_BLOB_UNKNOWN"`) || !strings.Contains(string(body), digest.FromString("never pushed").String()) {
		t.Errorf("the refusal = %s, want MANIFEST_BLOB_UNKNOWN naming the missing layer", body)
	}
	c.want(c.do(http.MethodGet, "/v2/team/app/manifests/v1", nil, nil), http.StatusNotFound)
}

func TestConcurrentPushesStoreEachBlobOnce(t *testing.T) {
	c, stack := registryStack(t)
	layers := [][]byte{bytes.Repeat([]byte("layer one "), 300_000), bytes.Repeat([]byte("layer two "), 200_000)}
	var wg sync.WaitGroup
	for _, repo := range []string{"team/one", "team/two"} {
		for _, l := range layers {
			wg.Go(func() { c.pushBlob(repo, l) })
		}
	}
	wg.Wait()
	conn, err := grpcclient.Dial(stack.BlobstoreAddr, stack.Client, blobclient.DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	list, _, err := blobclient.New(conn).List(context.Background(), 100, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != len(layers) {
		t.Errorf("the blob store holds %d blobs after two repositories pushed the same %d: %+v", len(list), len(layers), list)
	}
	for _, repo := range []string{"team/one", "team/two"} {
		for _, l := range layers {
			c.want(c.do(http.MethodHead, "/v2/"+repo+"/blobs/"+digest.FromBytes(l).String(), nil, nil), http.StatusOK)
		}
	}
	// Deleting the blob from one repository leaves it to the other.
	d := digest.FromBytes(layers[0]).String()
	c.want(c.do(http.MethodDelete, "/v2/team/one/blobs/"+d, nil, nil), http.StatusAccepted)
	c.want(c.do(http.MethodHead, "/v2/team/one/blobs/"+d, nil, nil), http.StatusNotFound)
	c.want(c.do(http.MethodHead, "/v2/team/two/blobs/"+d, nil, nil), http.StatusOK)
}

// TestUploadsOnS3 pushes blobs through the registry onto the S3 blob store:
// streamed in one PATCH, and in chunks of any size, whose bytes the blob
// store keeps between requests however they fall on its parts.
func TestUploadsOnS3(t *testing.T) {
	stack := harness.StartStack(t, harness.StackOptions{S3: true, NoBuilder: true, Registry: true})
	c := client{t: t, base: "http://" + stack.RegistryAddr}
	blob := make([]byte, 20<<20+12345)
	for i := range blob {
		blob[i] = byte(i * 7 / 3)
	}
	d := digest.FromBytes(blob)
	for _, chunk := range []int{len(blob), 3<<20 + 17} {
		loc := c.do(http.MethodPost, "/v2/s3/app/blobs/uploads/", nil, nil).Header.Get("Location")
		for off := 0; off < len(blob); off += chunk {
			end := min(off+chunk, len(blob))
			resp := c.do(http.MethodPatch, loc, bytes.NewReader(blob[off:end]), map[string]string{"Content-Range": fmt.Sprintf("%d-%d", off, end-1)})
			c.want(resp, http.StatusAccepted)
			if got := resp.Header.Get("Range"); got != fmt.Sprintf("0-%d", end-1) {
				t.Fatalf("chunks of %d: Range after %d bytes = %q", chunk, end, got)
			}
			loc = resp.Header.Get("Location")
		}
		c.want(c.do(http.MethodPut, loc+"?digest="+d.String(), nil, nil), http.StatusCreated)
		if got := c.want(c.do(http.MethodGet, "/v2/s3/app/blobs/"+d.String(), nil, nil), http.StatusOK); !bytes.Equal(got, blob) {
			t.Fatalf("chunks of %d: the blob reads back as %d other bytes", chunk, len(got))
		}
		c.want(c.do(http.MethodDelete, "/v2/s3/app/blobs/"+d.String(), nil, nil), http.StatusAccepted)
	}
}

// TestDamagedBlobRefusedByClient: the registry serves a whole blob without
// the blob store's digest check (docs/security.md), since the client checks
// every blob it pulls: a blob damaged in storage is refused there, by
// crane as by any OCI client, naming the digest.
func TestDamagedBlobRefusedByClient(t *testing.T) {
	c, stack := registryStack(t)
	b := make([]byte, 3<<20+5)
	for i := range b {
		b[i] = byte(i * 7)
	}
	d := c.pushBlob("team/app", b)
	f, err := os.OpenFile(filepath.Join(stack.Dir, "blobs", "blobs", "sha256", d.Encoded()), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{b[2<<20] ^ 0xff}, 2<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()

	got := c.want(c.do(http.MethodGet, "/v2/team/app/blobs/"+d.String(), nil, nil), http.StatusOK)
	if len(got) != len(b) || digest.FromBytes(got) == d {
		t.Fatalf("GET of the damaged blob gave %d bytes hashing to %s; want its %d stored bytes, which are not %s", len(got), digest.FromBytes(got), len(b), d)
	}
	cmd := exec.Command(harness.Tool(t, "crane"), "blob", "--insecure", stack.RegistryAddr+"/team/app@"+d.String())
	cmd.Stdout = io.Discard
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil || !strings.Contains(stderr.String(), d.Encoded()) {
		t.Errorf("crane blob of the damaged blob = %v, %q; want a failure naming %s", err, stderr.String(), d)
	}
}
