package server

import (
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"

	"github.com/strata-build/strata/lib/errdefs"
)

// Metrics are the blob service's own Prometheus collectors.
type Metrics struct {
	bytesIn, bytesOut                prometheus.Counter
	uploadDuration, downloadDuration prometheus.Histogram
	backendErrors                    *prometheus.CounterVec
}

// NewMetrics creates the collectors and registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	buckets := prometheus.ExponentialBuckets(0.005, 4, 10) // 5 ms to about 22 min
	m := &Metrics{
		bytesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_blob_received_bytes_total", Help: "Blob bytes received by Write.",
		}),
		bytesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_blob_sent_bytes_total", Help: "Blob bytes sent by Read.",
		}),
		uploadDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "strata_blob_upload_duration_seconds", Help: "Time from the first message of a Write to its commit.", Buckets: buckets,
		}),
		downloadDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "strata_blob_download_duration_seconds", Help: "Time to stream a Read to its end.", Buckets: buckets,
		}),
		backendErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_blob_backend_errors_total", Help: "Failures of the storage backend (unavailable, internal, unknown, deadline exceeded, data loss), by operation and gRPC code; answers about the caller's input are not counted.",
		}, []string{"op", "code"}),
	}
	reg.MustRegister(m.bytesIn, m.bytesOut, m.uploadDuration, m.downloadDuration, m.backendErrors)
	return m
}

// backendError counts err when it is the storage's failure, not an answer
// about the caller's input (not found, a digest mismatch, a finished
// upload, a limit) or the caller going away.
func (m *Metrics) backendError(op string, err error) {
	switch code := errdefs.Code(err); code {
	case codes.Unavailable, codes.Internal, codes.Unknown, codes.DeadlineExceeded, codes.DataLoss:
		m.backendErrors.WithLabelValues(op, code.String()).Inc()
	}
}
