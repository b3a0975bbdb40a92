package server

import (
	"github.com/prometheus/client_golang/prometheus"

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
			Name: "strata_blob_backend_errors_total", Help: "Errors the storage backend returned, by operation and gRPC code.",
		}, []string{"op", "code"}),
	}
	reg.MustRegister(m.bytesIn, m.bytesOut, m.uploadDuration, m.downloadDuration, m.backendErrors)
	return m
}

func (m *Metrics) backendError(op string, err error) {
	m.backendErrors.WithLabelValues(op, errdefs.Code(err).String()).Inc()
}
