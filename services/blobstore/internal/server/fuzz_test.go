package server

import (
	"strings"
	"testing"
	"time"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/blobstore/internal/blob"
)

// FuzzUploadToken checks the ListUploads page token, which a client sends
// back as it likes: decoding any string gives INVALID_ARGUMENT naming the
// token or an upload position that encodes back to the same position, and
// every position (any start time, any ref) survives a round trip, so a
// page never restarts or skips.
func FuzzUploadToken(f *testing.F) {
	started := time.Date(2026, 12, 7, 1, 2, 3, 456789, time.UTC)
	for _, ref := range []string{"", "upload-1", "build/42/layer", "ref/with/slashes", "ünïcode"} {
		f.Add(encodeUploadToken(blob.Upload{Ref: ref, StartedAt: started}), started.UnixNano(), ref)
	}
	for _, tok := range []string{"", "=", "MTIz", "LTE_", "not base64!", "MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkw"} {
		f.Add(tok, int64(-1), "r")
	}
	f.Fuzz(func(t *testing.T, tok string, nanos int64, ref string) {
		u, err := decodeUploadToken(tok)
		if err != nil {
			if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "page_token") {
				t.Fatalf("decodeUploadToken(%q) = %v, want INVALID_ARGUMENT about the page_token", tok, err)
			}
		} else if again, err := decodeUploadToken(encodeUploadToken(u)); err != nil || compareUploads(again, u) != 0 {
			t.Fatalf("decodeUploadToken(%q) = %q at %d, which encodes back to %q at %d (%v)", tok, u.Ref, u.StartedAt.UnixNano(), again.Ref, again.StartedAt.UnixNano(), err)
		}

		want := blob.Upload{Ref: ref, StartedAt: time.Unix(0, nanos)}
		got, err := decodeUploadToken(encodeUploadToken(want))
		if err != nil || compareUploads(got, want) != 0 {
			t.Fatalf("upload %q at %d round-trips to %q at %d (%v)", ref, nanos, got.Ref, got.StartedAt.UnixNano(), err)
		}
	})
}
