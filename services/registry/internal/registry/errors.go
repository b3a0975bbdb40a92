package registry

import (
	"encoding/json"
	"errors"
	"net/http"

	"google.golang.org/grpc/codes"

	"github.com/strata-build/strata/lib/errdefs"
)

// apiError is one error of the distribution spec's JSON error format.
type apiError struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func newError(status int, code, message string) *apiError {
	return &apiError{Status: status, Code: code, Message: message}
}

// The spec's error codes this registry answers with.
const (
	codeBlobUnknown         = "BLOB_UNKNOWN"
	codeBlobUploadInvalid   = "BLOB_UPLOAD_INVALID"
	codeBlobUploadUnknown   = "BLOB_UPLOAD_UNKNOWN"
	codeDigestInvalid       = "DIGEST_INVALID"
	codeManifestBlobUnknown = "MANIFEST_BLOB_UNKNOWN"
	codeManifestInvalid     = "MANIFEST_INVALID"
	codeManifestUnknown     = "MANIFEST_UNKNOWN"
	codeNameInvalid         = "NAME_INVALID"
	codeNameUnknown         = "NAME_UNKNOWN"
	codeSizeInvalid         = "SIZE_INVALID"
	codeUnauthorized        = "UNAUTHORIZED"
	codeDenied              = "DENIED"
	codeUnsupported         = "UNSUPPORTED"
	codeTooManyRequests     = "TOOMANYREQUESTS"
	codeRangeInvalid        = "RANGE_INVALID" // not in the spec's table; sent with 416
	codeUnavailable         = "UNAVAILABLE"   // likewise, with 503
)

// toAPIError maps an error of the services (lib/errdefs kinds and reasons)
// to the spec's status and code; notFound is the code of a NOT_FOUND whose
// reason does not say.
func toAPIError(err error, notFound string) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	var e *errdefs.Error
	reason := ""
	if errors.As(err, &e) {
		reason = e.Reason()
	}
	msg := err.Error()
	switch reason {
	case "DIGEST_INVALID", "DIGEST_MISMATCH", "INVALID_DIGEST":
		return newError(http.StatusBadRequest, codeDigestInvalid, msg)
	case "MANIFEST_INVALID", "INVALID_IMAGE", "TAG_INVALID":
		return newError(http.StatusBadRequest, codeManifestInvalid, msg)
	case "NAME_INVALID":
		return newError(http.StatusBadRequest, codeNameInvalid, msg)
	case "BLOBS_MISSING", "MANIFESTS_MISSING":
		return newError(http.StatusBadRequest, codeManifestBlobUnknown, msg)
	case "MANIFEST_UNKNOWN", "TAG_NOT_FOUND":
		return newError(http.StatusNotFound, codeManifestUnknown, msg)
	case "NAME_UNKNOWN":
		return newError(http.StatusNotFound, codeNameUnknown, msg)
	case "BLOB_UNKNOWN", "BLOB_NOT_FOUND":
		return newError(http.StatusNotFound, codeBlobUnknown, msg)
	case "UPLOAD_NOT_FOUND":
		return newError(http.StatusNotFound, codeBlobUploadUnknown, msg)
	case "OFFSET_MISMATCH", "INVALID_RANGE":
		return newError(http.StatusRequestedRangeNotSatisfiable, codeBlobUploadInvalid, msg)
	case "SIZE_MISMATCH":
		return newError(http.StatusBadRequest, codeSizeInvalid, msg)
	}
	switch errdefs.Code(err) {
	case codes.NotFound:
		return newError(http.StatusNotFound, notFound, msg)
	case codes.InvalidArgument:
		return newError(http.StatusBadRequest, codeBlobUploadInvalid, msg)
	case codes.ResourceExhausted:
		return newError(http.StatusRequestEntityTooLarge, codeSizeInvalid, msg)
	case codes.FailedPrecondition:
		return newError(http.StatusConflict, codeBlobUploadInvalid, msg)
	case codes.Unauthenticated:
		return newError(http.StatusUnauthorized, codeUnauthorized, msg)
	case codes.PermissionDenied:
		return newError(http.StatusForbidden, codeDenied, msg)
	case codes.Unavailable, codes.Aborted, codes.DeadlineExceeded:
		return newError(http.StatusServiceUnavailable, codeUnavailable, msg)
	case codes.Canceled:
		return newError(499, codeUnavailable, msg)
	}
	return newError(http.StatusInternalServerError, "UNKNOWN", msg)
}

// writeError answers with the spec's JSON error body.
func writeError(w http.ResponseWriter, e *apiError) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Del("Content-Length")
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(struct {
		Errors []*apiError `json:"errors"`
	}{[]*apiError{e}})
}
