package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// oneStudy is an IndexStore holding one study, for studyDetail.
type oneStudy struct {
	IndexStore
	d StudyDetail
}

func (o oneStudy) GetStudy(context.Context, string) (StudyDetail, error) { return o.d, nil }

// TestStudyEventFitsEventBridge: a study event lists instance pointers only
// while they fit its byte budget, so the whole event stays under
// EventBridge's 256 KiB entry limit whatever the UIDs' length; a count of
// 500 let 450 instances of 64-character UIDs make a 300 KB event, which
// PutEvents refused on every run, and the study was never announced.
func TestStudyEventFitsEventBridge(t *testing.T) {
	for _, tt := range []struct {
		instances   int
		wantListing bool
	}{{10, true}, {250, true}, {450, false}, {2000, false}} {
		p := &Pipeline{BucketName: strings.Repeat("b", 63)}
		d, b := studyEventOf(t, p, tt.instances, 4)
		listed := 0
		for _, s := range d.Series {
			listed += len(s.Instances)
		}
		if len(b) > 240<<10 {
			t.Errorf("%d instances: a %d-byte event, over what EventBridge takes with the envelope", tt.instances, len(b))
		}
		if got := listed == tt.instances; got != tt.wantListing {
			t.Errorf("%d instances: %d listed (%d bytes); want the listing: %v", tt.instances, listed, len(b), tt.wantListing)
		}
	}
}

// TestStudyEventListsAlikeInBothModes: whether a study event lists its
// instances depends on its keys alone, not on the base its URIs are given
// (local mode's portal, a short or the longest bucket name), so a consumer
// tried against make run meets the same detail in AWS. Counted with the
// base in use, a study of 300 instances of 64-character UIDs was listed in
// local mode and not with a 63-character bucket, and one of 330 was listed
// with a one-character bucket and not in local mode.
func TestStudyEventListsAlikeInBothModes(t *testing.T) {
	modes := []struct {
		name string
		p    *Pipeline
	}{
		{"local mode", &Pipeline{ObjectURLBase: "http://127.0.0.1:8080/objects/"}},
		{"a one-character bucket", &Pipeline{BucketName: "b"}},
		{"the longest bucket", &Pipeline{BucketName: strings.Repeat("b", 63)}},
	}
	for _, n := range []int{10, 280, 300, 330, 400} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			listed := map[bool][]string{}
			for _, m := range modes {
				d, b := studyEventOf(t, m.p, n, 4)
				if len(b) > 240<<10 {
					t.Errorf("%s: a %d-byte event, over what EventBridge takes with the envelope", m.name, len(b))
				}
				l := len(d.Series[0].Instances) > 0
				listed[l] = append(listed[l], m.name)
			}
			if len(listed) > 1 {
				t.Errorf("%d instances listed with %v, series only with %v", n, listed[true], listed[false])
			}
		})
	}
}

// TestStudyEventOfManySeriesFitsEventBridge: the series a study event lists
// count against its budget as its instance pointers do, so a study of a
// series per instance stays under EventBridge's 256 KiB too, listed whole or
// series only while its series fit, else with none (seriesCount says how
// many). The series had no bound: one of 2,000 series of 64-character UIDs
// made a 280 KB event, which PutEvents refused on every run.
func TestStudyEventOfManySeriesFitsEventBridge(t *testing.T) {
	for _, tt := range []struct {
		instances      int
		wantInstances  bool
		wantSeriesList bool
	}{{10, true, true}, {200, true, true}, {280, false, true}, {1000, false, true}, {2000, false, false}, {5000, false, false}} {
		p := &Pipeline{BucketName: strings.Repeat("b", 63)}
		d, b := studyEventOf(t, p, tt.instances, tt.instances)
		if len(b) > 240<<10 {
			t.Errorf("%d series: a %d-byte event, over what EventBridge takes with the envelope", tt.instances, len(b))
		}
		listed := 0
		for _, s := range d.Series {
			listed += len(s.Instances)
		}
		if got := listed == tt.instances; got != tt.wantInstances {
			t.Errorf("%d series: %d instances listed (%d bytes); want the listing: %v", tt.instances, listed, len(b), tt.wantInstances)
		}
		if got := len(d.Series) == tt.instances; got != tt.wantSeriesList || (!got && len(d.Series) != 0) {
			t.Errorf("%d series: %d listed (%d bytes); want them all: %v, else none", tt.instances, len(d.Series), len(b), tt.wantSeriesList)
		}
		if d.SeriesCount != tt.instances {
			t.Errorf("%d series: seriesCount %d", tt.instances, d.SeriesCount)
		}
	}
}

// TestStudyEventOfManyModalitiesFitsEventBridge: a study event's modalities
// count against its budget, first, so a sender inventing Modality values
// (16 characters each) cannot take it past EventBridge's 256 KiB: the
// modalities are listed while they fit, the first of them in their order,
// and modalityCount counts them all. They had no bound: 20,000 made a
// 381 KB event, which PutEvents refused on every run, and the study was
// never announced.
func TestStudyEventOfManyModalitiesFitsEventBridge(t *testing.T) {
	for _, tt := range []struct {
		modalities int
		wantAll    bool
	}{{4, true}, {5000, true}, {20000, false}} {
		var ms []string
		for i := range tt.modalities {
			ms = append(ms, fmt.Sprintf("M%015d", i)) // sorted, as the index keeps them
		}
		p := &Pipeline{BucketName: strings.Repeat("b", 63)}
		d, b := studyEventOf(t, p, max(tt.modalities, 10), 4, ms...)
		if len(b) > 240<<10 {
			t.Errorf("%d modalities: a %d-byte event, over what EventBridge takes with the envelope", tt.modalities, len(b))
		}
		if got := len(d.Modalities) == tt.modalities; got != tt.wantAll || len(d.Modalities) == 0 {
			t.Errorf("%d modalities: %d listed (%d bytes); want them all: %v, else as many as fit", tt.modalities, len(d.Modalities), len(b), tt.wantAll)
		}
		if !slices.Equal(d.Modalities, ms[:len(d.Modalities)]) {
			t.Errorf("%d modalities: the listed are not the first of them", tt.modalities)
		}
		if d.ModalityCount != tt.modalities {
			t.Errorf("%d modalities: modalityCount %d", tt.modalities, d.ModalityCount)
		}
	}
}

// TestStudyEventCountsModalitiesTheRecordCut: a study record keeps the
// first MaxStudyModalities modalities and says it cut the rest; its event
// lists those kept and modalityCount counts every modality of its
// instances, not the kept ones only.
func TestStudyEventCountsModalitiesTheRecordCut(t *testing.T) {
	var ins []InstanceRecord
	sum := StudySummary{StudyInstanceUID: "1.2.3"}
	for i := range 100 {
		in := InstanceRecord{StudyInstanceUID: "1.2.3", SeriesInstanceUID: "1.2.3.1", SOPInstanceUID: fmt.Sprint("1.2.3.1.", i),
			Modality: fmt.Sprintf("M%03d", i), ObjectKey: fmt.Sprint("incoming/", i, ".dcm")}
		sum.Count(in, InstanceNew, i == 0)
		sum.Merge(in)
		ins = append(ins, in)
	}
	p := &Pipeline{Index: oneStudy{d: NewStudyDetail(sum, ins, 0)}}
	d, err := p.studyDetail(context.Background(), sum, 1, "quiet")
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Modalities) != MaxStudyModalities || d.Modalities[0] != "M000" || d.ModalityCount != 100 {
		t.Errorf("event lists %d modalities from %q, modalityCount %d; want the first %d and 100", len(d.Modalities),
			d.Modalities[:min(1, len(d.Modalities))], d.ModalityCount, MaxStudyModalities)
	}
}

// studyEventOf is p's study event, and its JSON, of a study of n instances
// in series series, every UID 64 characters long, of modalities (the
// study's, and each instance's in turn) when given.
func studyEventOf(t *testing.T, p *Pipeline, n, series int, modalities ...string) (StudyDetailEvent, []byte) {
	t.Helper()
	uid := func(prefix string, n int) string { // a 64-character UID
		s := fmt.Sprintf("%s.%d.", prefix, n)
		return s + strings.Repeat("1", 64-len(s))
	}
	study := uid("1.2.826.0.1.3680043.10.7", 1)
	var ins []InstanceRecord
	for i := range n {
		se := uid("1.2.826.0.1.3680043.10.8", i%series)
		sop := uid("1.2.826.0.1.3680043.10.9", i)
		key := "incoming/2026/12/06/" + study + "/" + se + "/" + sop + ".dcm"
		jsonKey, _ := MetadataKeys(ObjectInfo{Key: key, ChecksumCRC64NVME: "ASNFZ4mrze8="}) // a CRC64NVME, as S3 reports it
		in := InstanceRecord{StudyInstanceUID: study, SeriesInstanceUID: se, SOPInstanceUID: sop, ObjectKey: key,
			MetadataKey: jsonKey, ReceivedAt: time.Unix(int64(i), 0)}
		if len(modalities) > 0 {
			in.Modality = modalities[i%len(modalities)]
		}
		ins = append(ins, in)
	}
	sum := StudySummary{StudyInstanceUID: study, InstanceCount: n, SeriesCount: series, Modalities: modalities}
	q := *p
	q.Index = oneStudy{d: NewStudyDetail(sum, ins, 0)}
	d, err := q.studyDetail(context.Background(), sum, 1, "quiet")
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return d, b
}

// TestStudyEventCarriesLastSent: a study event carries when the site last
// sent the study (StudySummary.Sent): its lastSent when a resend of
// instances held moved it past lastReceived, lastReceived for a study
// record written before lastSent existed.
func TestStudyEventCarriesLastSent(t *testing.T) {
	received := time.Date(2026, 1, 15, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name     string
		lastSent time.Time
		want     time.Time
	}{
		{"sent with its newest instance", received, received},
		{"resent the next day", received.Add(24 * time.Hour), received.Add(24 * time.Hour)},
		{"recorded before lastSent existed", time.Time{}, received},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sum := StudySummary{StudyInstanceUID: "1.2.3", InstanceCount: 1, Revision: 1, FirstReceived: received,
				LastReceived: received, LastSent: tc.lastSent}
			p := &Pipeline{Index: oneStudy{d: NewStudyDetail(sum, nil, 0)}}
			d, err := p.studyDetail(context.Background(), sum, 1, CompletionQuietPeriod)
			if err != nil {
				t.Fatal(err)
			}
			if !d.LastSent.Equal(tc.want) || !d.LastReceived.Equal(received) {
				t.Errorf("lastSent %v, lastReceived %v; want %v, %v", d.LastSent, d.LastReceived, tc.want, received)
			}
			b, err := json.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			if want := `"lastSent":"` + tc.want.Format(time.RFC3339Nano) + `"`; !strings.Contains(string(b), want) {
				t.Errorf("event JSON %s lacks %s", b, want)
			}
		})
	}
}
