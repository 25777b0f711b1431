package main

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/metrics"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/metricnames"
)

// heldAudit stands for an audit writer whose queue is full: it holds each
// event it is given until release is closed, and says so on entered.
type heldAudit struct{ entered, release chan struct{} }

func (a *heldAudit) ObserveAssociation(dicomnet.Event) {
	a.entered <- struct{}{}
	<-a.release
}

type seen struct{ n *int }

func (s seen) ObserveAssociation(dicomnet.Event) { *s.n++ }

// TestAuditOrderQueuesTheRecordBeforeTheMetricsSeeIt: the end of an
// association reaches the metrics only once the audit writer has queued its
// record, so dicom_ingest_associations_active at 0 is never read while a
// record of a released or aborted association is still outside the queue
// (dicom_ingest_audit_queue_length). The metrics went first and dropped the
// gauge while the writer still held the event. What goes ahead of the
// writer (scale-in protection) sees the event while the writer holds it.
func TestAuditOrderQueuesTheRecordBeforeTheMetricsSeeIt(t *testing.T) {
	for _, end := range []dicomnet.EventType{dicomnet.EventReleased, dicomnet.EventAborted} {
		t.Run(end.String(), func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m, err := metrics.New(reg)
			if err != nil {
				t.Fatal(err)
			}
			audit := &heldAudit{entered: make(chan struct{}), release: make(chan struct{})}
			var aheadSaw, behindSaw int
			l := auditOrder(observerList{seen{&aheadSaw}}, audit, m, observerList{seen{&behindSaw}})
			info := &dicomnet.AssociationInfo{}
			go func() { <-audit.entered; close(audit.release) }()
			l.ObserveAssociation(dicomnet.Event{Type: dicomnet.EventAccepted, Association: info})
			if got := activeAssociations(t, reg); got != 1 {
				t.Fatalf("associations active after the accept: %v, want 1", got)
			}

			audit.release = make(chan struct{})
			done := make(chan struct{})
			go func() { l.ObserveAssociation(dicomnet.Event{Type: end, Association: info}); close(done) }()
			<-audit.entered // the writer holds the end of the association
			if got := activeAssociations(t, reg); got != 1 {
				t.Errorf("associations active while the audit writer holds the %v: %v, want 1 (the metrics saw it first)", end, got)
			}
			if aheadSaw != 2 || behindSaw != 1 {
				t.Errorf("while the writer holds the event: ahead saw %d events, behind %d; want 2 and 1", aheadSaw, behindSaw)
			}
			close(audit.release)
			<-done
			if got := activeAssociations(t, reg); got != 0 {
				t.Errorf("associations active once the record is queued: %v, want 0", got)
			}
			if behindSaw != 2 {
				t.Errorf("behind saw %d events, want 2", behindSaw)
			}
		})
	}
}

func activeAssociations(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == metricnames.AssociationsActive {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no %s", metricnames.AssociationsActive)
	return 0
}
