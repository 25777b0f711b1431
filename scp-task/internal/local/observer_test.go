package local

import (
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/portal"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestCounters(t *testing.T) {
	start := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		events []dicomnet.EventType
		at     time.Duration // clock when snapshotting
		want   portal.Counters
	}{
		{"accepted and released", []dicomnet.EventType{dicomnet.EventAccepted, dicomnet.EventStored, dicomnet.EventStored, dicomnet.EventReleased}, 0,
			portal.Counters{Associations: 1, Instances: 2, Bytes: 200, InstancesPerSecond: 0.2}},
		{"open association", []dicomnet.EventType{dicomnet.EventAccepted, dicomnet.EventAccepted, dicomnet.EventAborted}, 0,
			portal.Counters{Associations: 2, ActiveAssociations: 1, Aborted: 1}},
		{"rejected, failed, echo", []dicomnet.EventType{dicomnet.EventRejected, dicomnet.EventAccepted, dicomnet.EventEcho, dicomnet.EventStoreFailed, dicomnet.EventReleased}, 0,
			portal.Counters{Associations: 1, Rejected: 1, Failures: 1, Echoes: 1}},
		{"abort before accept never goes negative", []dicomnet.EventType{dicomnet.EventAborted}, 0,
			portal.Counters{Aborted: 1}},
		{"rate window slides", []dicomnet.EventType{dicomnet.EventStored, dicomnet.EventStored, dicomnet.EventStored}, 11 * time.Second,
			portal.Counters{Instances: 3, Bytes: 300}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := start
			k := newCounters(func() time.Time { return now })
			for _, e := range tt.events {
				k.ObserveAssociation(dicomnet.Event{Type: e, Bytes: 100})
			}
			now = now.Add(tt.at)
			if d := cmp.Diff(tt.want, k.snapshot(), cmpopts.IgnoreFields(portal.Counters{}, "Since")); d != "" {
				t.Errorf("(-want +got)\n%s", d)
			}
		})
	}
}
