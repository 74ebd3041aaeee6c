// Package metrics defines Mayfly's Prometheus metrics and the collectors
// that read the store at scrape time.
package metrics

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mayflyhq/mayfly"
)

// Metrics holds every metric Mayfly exports.
type Metrics struct {
	Registry           *prometheus.Registry
	Requests           *prometheus.CounterVec // by decision
	RequestOutcomes    *prometheus.CounterVec // by state reached
	ApprovalWait       prometheus.Histogram
	RevocationLag      prometheus.Histogram
	RevocationFailures *prometheus.CounterVec // by target
	Revocations        *prometheus.CounterVec // by target, end_reason
	Orphans            *prometheus.CounterVec // by target
	TargetUp           *prometheus.GaugeVec   // by target
	SinkBacklog        *prometheus.GaugeVec   // by sink
	APILatency         *prometheus.HistogramVec
	// LeasesOverdue counts leases still active or revoking more than a
	// few seconds past their expiry; set by the server's overdue watch.
	LeasesOverdue prometheus.Gauge
}

// New registers every metric; store feeds the lease gauges at scrape time.
func New(store mayfly.Store) *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mayfly_requests_total",
			Help: "Access requests by policy decision (auto, approval, break_glass, deny)."}, []string{"decision"}),
		RequestOutcomes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mayfly_request_outcomes_total",
			Help: "Requests reaching a final state (approved, denied, cancelled, lapsed)."}, []string{"state"}),
		ApprovalWait: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "mayfly_approval_wait_seconds",
			Help:    "Time from request to approval, for requests that needed approvers.",
			Buckets: []float64{10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600}}),
		RevocationLag: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "mayfly_revocation_lag_seconds",
			Help:    "Time from a lease's expiry to the verified removal of its account.",
			Buckets: []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600}}),
		RevocationFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mayfly_revocation_failures_total",
			Help: "Failed revocation attempts (each is retried) by target."}, []string{"target"}),
		Revocations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mayfly_revocations_total",
			Help: "Completed revocations by target and end reason."}, []string{"target", "end_reason"}),
		Orphans: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mayfly_orphans_found_total",
			Help: "Managed accounts found on a target with no live lease."}, []string{"target"}),
		TargetUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "mayfly_target_up",
			Help: "1 when the target answered its last health check."}, []string{"target"}),
		SinkBacklog: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "mayfly_audit_sink_backlog",
			Help: "Audit events not yet delivered to a sink."}, []string{"sink"}),
		APILatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "mayfly_api_request_duration_seconds",
			Help: "API latency by route and status.", Buckets: prometheus.DefBuckets}, []string{"route", "code"}),
		LeasesOverdue: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mayfly_leases_overdue",
			Help: "Leases still active or revoking more than 5s past their expiry: their accounts may still work. Alert when above 0."}),
	}
	r.MustRegister(m.LeasesOverdue)
	r.MustRegister(m.Requests, m.RequestOutcomes, m.ApprovalWait, m.RevocationLag, m.RevocationFailures,
		m.Revocations, m.Orphans, m.TargetUp, m.SinkBacklog, m.APILatency,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&leaseCollector{store: store})
	if hs, ok := store.(auditHeadStore); ok {
		r.MustRegister(headCollector{hs})
	}
	m.RevocationFailures.WithLabelValues("")
	return m
}

// auditHeadStore is a store that counts how its transactions found the
// head of the audit chain (the PostgreSQL store; see docs/ha.md).
type auditHeadStore interface {
	AuditHeadStats() (chained, locked int64)
}

var headDesc = prometheus.NewDesc("mayfly_store_audit_head_total",
	"Store transactions that appended audit events, by how they were chained: chained (by the database as the transaction committed, in its round trip), locked (to the head the transaction locked and read first, because it read the audit trail after appending).",
	[]string{"how"}, nil)

// headCollector reads the store's counts at scrape time.
type headCollector struct{ store auditHeadStore }

func (c headCollector) Describe(ch chan<- *prometheus.Desc) { ch <- headDesc }

func (c headCollector) Collect(ch chan<- prometheus.Metric) {
	chained, locked := c.store.AuditHeadStats()
	for how, n := range map[string]int64{"chained": chained, "locked": locked} {
		ch <- prometheus.MustNewConstMetric(headDesc, prometheus.CounterValue, float64(n), how)
	}
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}

// ObserveAPI records one API call.
func (m *Metrics) ObserveAPI(route string, code int, d time.Duration) {
	m.APILatency.WithLabelValues(route, strconv.Itoa(code)).Observe(d.Seconds())
}

var (
	activeDesc = prometheus.NewDesc("mayfly_leases_active", "Leases whose account exists, by target and grant.", []string{"target", "grant"}, nil)
	stateDesc  = prometheus.NewDesc("mayfly_leases", "Leases by state.", []string{"state"}, nil)
)

// leaseCollector reads lease counts from the store at scrape time: the
// counts by state the store keeps as leases change, and the active leases
// through the state index. Neither reads the history of ended leases, so a
// scrape costs the same after a million leases as after ten.
type leaseCollector struct{ store mayfly.Store }

func (c *leaseCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- activeDesc
	ch <- stateDesc
}

func (c *leaseCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	type key struct{ target, grant string }
	active := map[key]int{}
	var byState map[mayfly.LeaseState]int
	err := c.store.View(ctx, func(tx mayfly.Tx) error {
		var err error
		if byState, err = tx.CountLeases(); err != nil {
			return err
		}
		ls, err := tx.ListLeases(mayfly.LeaseFilter{States: []mayfly.LeaseState{mayfly.LeaseActive}})
		if err != nil {
			return err
		}
		for _, l := range ls {
			active[key{l.Target, l.Grant}]++
		}
		return nil
	})
	if err != nil {
		ch <- prometheus.NewInvalidMetric(activeDesc, err)
		return
	}
	if len(active) == 0 {
		ch <- prometheus.MustNewConstMetric(activeDesc, prometheus.GaugeValue, 0, "", "")
	}
	for k, n := range active {
		ch <- prometheus.MustNewConstMetric(activeDesc, prometheus.GaugeValue, float64(n), k.target, k.grant)
	}
	for _, st := range []mayfly.LeaseState{mayfly.LeaseProvisioning, mayfly.LeaseActive, mayfly.LeaseRevoking, mayfly.LeaseRevoked, mayfly.LeaseFailed} {
		ch <- prometheus.MustNewConstMetric(stateDesc, prometheus.GaugeValue, float64(byState[st]), string(st))
	}
}
