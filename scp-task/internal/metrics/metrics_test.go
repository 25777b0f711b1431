package metrics

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/metricnames"
)

func TestObserver(t *testing.T) {
	reg := prometheus.NewRegistry()
	o, err := New(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range []dicomnet.Event{
		{Type: dicomnet.EventAccepted}, {Type: dicomnet.EventAccepted},
		{Type: dicomnet.EventRejected, Reject: dicomnet.RejectTooManyAssociations},
		{Type: dicomnet.EventRejected, Reject: &dicomnet.RejectError{Result: 2, Source: 2, Reason: 1}},
		{Type: dicomnet.EventStored, Bytes: 1000, Duration: time.Millisecond},
		{Type: dicomnet.EventStoreFailed, Status: 0xA900},
		{Type: dicomnet.EventAborted},
		{Type: dicomnet.EventHandshakeFailed},
		{Type: dicomnet.EventShed, Err: dicomnet.ErrShedTotal},
		{Type: dicomnet.EventShed, Err: dicomnet.ErrShedPerAddr},
		{Type: dicomnet.EventShed, Err: fmt.Errorf("charge: %w", dicomnet.ErrShedMemory)},
	} {
		o.ObserveAssociation(ev)
	}
	checks := []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"active", o.active, 1},
		{"accepted", o.associations.WithLabelValues("accepted"), 2},
		{"too many", o.rejected.WithLabelValues("too_many_associations"), 1},
		{"other reject", o.rejected.WithLabelValues("result2_source2_reason1"), 1},
		{"bytes", o.bytes, 1000},
		{"objects", o.objects, 1},
		{"failures", o.failures.WithLabelValues("A900"), 1},
		{"aborted", o.aborted, 1},
		{"TLS handshake failures", o.tlsFailures, 1},
		{"shed for the total", o.shed.WithLabelValues("total"), 1},
		{"shed per address", o.shed.WithLabelValues("per_address"), 1},
		{"shed for memory", o.shed.WithLabelValues("memory"), 1},
	}
	for _, c := range checks {
		if got := testutil.ToFloat64(c.c); got != c.want {
			t.Errorf("%s = %v, want %v", c.name, got, c.want)
		}
	}
	if _, err := New(reg); err == nil {
		t.Error("registering twice must fail, not panic")
	}
}

// TestPublishedNames: the metrics the CloudWatch agent publishes and the
// stack alarms on are registered under metricnames' names, the ones
// infra/stack selects.
func TestPublishedNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	o, err := New(reg)
	if err != nil {
		t.Fatal(err)
	}
	// Vectors appear once they have a child.
	o.rejected.WithLabelValues("test")
	o.failures.WithLabelValues("test")
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if err := metricnames.CheckRegistered(mfs, metricnames.AssociationsActive, metricnames.AssociationsRejected, metricnames.StoreFailures,
		metricnames.ObjectsStored, metricnames.TLSHandshakeFailures); err != nil {
		t.Error(err)
	}
}
