package server

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/buildgw/buildgw/api"
	"github.com/buildgw/buildgw/jobs"
)

// Metrics are the gateway's Prometheus metrics, on a registry of their
// own (no global state).
type Metrics struct {
	reg          *prometheus.Registry
	accepted     *prometheus.CounterVec
	finished     *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	contextBytes prometheus.Counter
	uploadBytes  prometheus.Counter
	pushDuration *prometheus.HistogramVec
	authFailures prometheus.Counter
}

var (
	_ jobs.Observer     = (*Metrics)(nil)
	_ jobs.PushObserver = (*Metrics)(nil)
)

// NewMetrics returns the metrics; register the Manager's gauges with
// Watch once it exists.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "buildgw_builds_accepted_total", Help: "Builds accepted, by runner.",
		}, []string{"runner"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "buildgw_builds_finished_total", Help: "Builds that reached a final state, by runner and status.",
		}, []string{"runner", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "buildgw_build_duration_seconds",
			Help:    "Time from start to final state of builds that ran, by runner and status.",
			Buckets: prometheus.ExponentialBuckets(0.25, 2, 14), // 0.25s to ~34min
		}, []string{"runner", "status"}),
		contextBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "buildgw_context_bytes_total", Help: "Bytes of build context accepted (after decompression).",
		}),
		uploadBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "buildgw_upload_bytes_total", Help: "Bytes of submission request bodies read, accepted or not.",
		}),
		pushDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "buildgw_push_duration_seconds",
			Help:    "Time to push one destination, retries included, by registry and outcome.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 14), // 50ms to ~7min
		}, []string{"registry", "outcome"}),
		authFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "buildgw_auth_failures_total", Help: "Requests refused for missing or invalid credentials.",
		}),
	}
	m.reg.MustRegister(m.accepted, m.finished, m.duration, m.contextBytes, m.uploadBytes, m.pushDuration, m.authFailures,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Watch exports mgr's queue depth and running builds.
func (m *Metrics) Watch(mgr *jobs.Manager) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "buildgw_queue_depth", Help: "Builds waiting to run."},
			func() float64 { q, _ := mgr.Stats(); return float64(q) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "buildgw_builds_running", Help: "Builds running now."},
			func() float64 { _, r := mgr.Stats(); return float64(r) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "buildgw_workspaces_total", Help: "Workspaces made, in memory (the tmpfs) or on disk.",
			ConstLabels: prometheus.Labels{"place": "memory"}},
			func() float64 { n, _ := mgr.Workspaces(); return float64(n) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "buildgw_workspaces_total", Help: "Workspaces made, in memory (the tmpfs) or on disk.",
			ConstLabels: prometheus.Labels{"place": "disk"}},
			func() float64 { _, n := mgr.Workspaces(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "buildgw_workspace_memory_bytes", Help: "Size of the workspaces' tmpfs (0: workspaces on disk)."},
			func() float64 { n, _ := mgr.WorkspaceMemory(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "buildgw_workspace_memory_free_bytes", Help: "Free bytes of the workspaces' tmpfs; under a quarter free, new workspaces go to disk."},
			func() float64 { _, n := mgr.WorkspaceMemory(); return float64(n) }),
	)
}

// Accepted implements jobs.Observer.
func (m *Metrics) Accepted(j *jobs.Job, contextBytes int64) {
	m.accepted.WithLabelValues(j.Spec.Runner).Inc()
	m.contextBytes.Add(float64(contextBytes))
}

// Finished implements jobs.Observer.
func (m *Metrics) Finished(_ *jobs.Job, b api.Build) {
	m.finished.WithLabelValues(b.Runner, string(b.Status)).Inc()
	if b.StartedAt != nil && b.FinishedAt != nil {
		m.duration.WithLabelValues(b.Runner, string(b.Status)).Observe(b.FinishedAt.Sub(*b.StartedAt).Seconds())
	}
}

// Pushed implements jobs.PushObserver.
func (m *Metrics) Pushed(_ *jobs.Job, registry string, d time.Duration, err error) {
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	m.pushDuration.WithLabelValues(registry, outcome).Observe(d.Seconds())
}

func (m *Metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}
