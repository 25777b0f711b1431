package metrics

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/ingest"
	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
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
		{Type: dicomnet.EventStoreFailed}, // cut short: no response
		{Type: dicomnet.EventAborted},
		{Type: dicomnet.EventHandshakeFailed, Err: &tls.CertificateVerificationError{Err: x509.CertificateInvalidError{Reason: x509.Expired}}},
		{Type: dicomnet.EventHandshakeFailed, Err: fmt.Errorf("%w after 30s (ARTIM): %w", dicomnet.ErrHandshakeTimeout, context.DeadlineExceeded)},
		{Type: dicomnet.EventHandshakeFailed, Err: fmt.Errorf("%w after 30s (ARTIM): %w", dicomnet.ErrHandshakeTimeout, context.DeadlineExceeded)},
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
		{"other reject", o.rejected.WithLabelValues(metricnames.RejectUnknown), 1},
		{"bytes", o.bytes, 1000},
		{"objects", o.objects, 1},
		{"failures", o.failures.WithLabelValues("A900"), 1},
		{"failures without a response", o.failures.WithLabelValues(metricnames.StatusNone), 1},
		{"aborted", o.aborted, 1},
		{"TLS handshake failures, expired", o.tlsFailures.WithLabelValues("expired"), 1},
		{"TLS handshake failures, timeout", o.tlsFailures.WithLabelValues("timeout"), 2},
		{"TLS handshake failures, other", o.tlsFailures.WithLabelValues("other"), 1},
		{"TLS handshake failures, unknown CA", o.tlsFailures.WithLabelValues("unknown_ca"), 0},
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
// infra/stack selects, and a labelled one's known series are there at 0
// from the start, before anything happened: the agent's baseline of a
// series is the first sample it sees, so a series created by its first
// increment (a first shed connection, a first rejection for a reason)
// never published it.
func TestPublishedNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	o, err := New(reg)
	if err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if err := metricnames.CheckRegistered(mfs, metricnames.AssociationsActive, metricnames.AssociationsRejected, metricnames.StoreFailures,
		metricnames.ObjectsStored, metricnames.TLSHandshakeFailures, metricnames.ConnectionsShed); err != nil {
		t.Error(err)
	}
	for name, vec := range map[string]*prometheus.CounterVec{
		metricnames.AssociationsRejected: o.rejected, metricnames.StoreFailures: o.failures, metricnames.ConnectionsShed: o.shed,
		metricnames.TLSHandshakeFailures: o.tlsFailures, "dicom_ingest_associations_total": o.associations,
	} {
		want := metricnames.Known[name].Values
		if name == "dicom_ingest_associations_total" {
			want = []string{"accepted", "rejected"}
		}
		if n := testutil.CollectAndCount(vec); n != len(want) {
			t.Errorf("%s: %d series at start, want %d (%v)", name, n, len(want), want)
		}
		for _, v := range want {
			if got := testutil.ToFloat64(vec.WithLabelValues(v)); got != 0 {
				t.Errorf("%s{%s} = %v at start, want 0", name, v, got)
			}
		}
	}
}

// TestLabelValuesBounded: the labels published as CloudWatch dimensions
// (metricnames.Dimensions) take only the values metricnames lists: each
// value is a CloudWatch metric of its own. Every rejection the SCP sends
// (dicomnet's) and every failure status a C-STORE is answered with has
// its listed name; a C-STORE cut short counted as "0000", success. Any
// other rejection is "unknown", the listed value kept at 0 from the start
// for it: it was named by its codes (result1_source3_reason1), a value
// the agent had not seen, whose first increase it never published, and a
// CloudWatch metric more per such value; "unknown" stood for none but a
// rejection without codes, which dicomnet never reports, always 0.
func TestLabelValuesBounded(t *testing.T) {
	for _, tt := range []struct {
		r    *dicomnet.RejectError
		want string
	}{
		{dicomnet.RejectNoReason, "no_reason_given"},
		{dicomnet.RejectApplicationContext, "application_context_not_supported"},
		{dicomnet.RejectCallingAENotRecognized, "calling_ae_not_recognized"},
		{dicomnet.RejectCalledAENotRecognized, "called_ae_not_recognized"},
		{dicomnet.RejectProtocolVersion, "protocol_version_not_supported"},
		{dicomnet.RejectTemporaryCongestion, "temporary_congestion"},
		{dicomnet.RejectTooManyAssociations, "too_many_associations"},
		{&dicomnet.RejectError{Result: 1, Source: 3, Reason: 1}, "unknown"},
		{&dicomnet.RejectError{Result: 2, Source: 1, Reason: 7}, "unknown"},
		{nil, "unknown"},
	} {
		l := RejectLabel(tt.r)
		if l != tt.want {
			t.Errorf("RejectLabel(%v) = %q, want %q", tt.r, l, tt.want)
		}
		if !slices.Contains(metricnames.RejectReasons, l) {
			t.Errorf("RejectLabel(%v) = %q, not one of metricnames.RejectReasons", tt.r, l)
		}
	}
	for _, st := range []uint16{0, dimse.StatusProcessingFailure, dimse.StatusSOPClassNotSupported, dimse.StatusOutOfResources,
		dimse.StatusDataSetDoesNotMatchSOPClass, ingest.StatusUnreadable, ingest.StatusTruncated, ingest.StatusOverLimit} {
		if l := StatusLabel(st); !slices.Contains(metricnames.FailureStatuses, l) {
			t.Errorf("StatusLabel(%04X) = %q, not one of metricnames.FailureStatuses", st, l)
		}
		// The label and the audit record read status 0 by one rule: not answered.
		if l, none := StatusLabel(st), associationaudit.NotAnswered(associationaudit.StoreStatus(st)); (l == metricnames.StatusNone) != none ||
			(!none && l != associationaudit.StoreStatus(st)) {
			t.Errorf("StatusLabel(%04X) = %q; the audit record's status is %q (not answered %v)", st, l, associationaudit.StoreStatus(st), none)
		}
	}
}

// TestHandshakeReasonsAreDicomnets: the reason label of failed TLS
// handshakes takes exactly dicomnet's reasons (HandshakeFailureReason,
// the one classification, which the handshake's log line carries too),
// each a CloudWatch metric of its own, created at 0 from the start
// (metricnames.Known). The counter had no label: an operator seeing it
// rise could not tell an expired certificate from an unknown CA, a
// revoked one, an old TLS version or plain DICOM on the TLS port.
func TestHandshakeReasonsAreDicomnets(t *testing.T) {
	if got, want := slices.Sorted(slices.Values(metricnames.TLSHandshakeReasons)), slices.Sorted(slices.Values(dicomnet.HandshakeFailureReasons)); !slices.Equal(got, want) {
		t.Errorf("metricnames.TLSHandshakeReasons %v, dicomnet.HandshakeFailureReasons %v: want the same", got, want)
	}
	if metricnames.Known[metricnames.TLSHandshakeFailures].Label != metricnames.TLSHandshakeReason ||
		metricnames.Dimensions[metricnames.TLSHandshakeFailures] != metricnames.TLSHandshakeReason {
		t.Errorf("%s: Known %v, Dimensions %q: want its label %q in both", metricnames.TLSHandshakeFailures,
			metricnames.Known[metricnames.TLSHandshakeFailures], metricnames.Dimensions[metricnames.TLSHandshakeFailures], metricnames.TLSHandshakeReason)
	}
}
