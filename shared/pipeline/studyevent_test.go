package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
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
	uid := func(prefix string, n int) string { // a 64-character UID
		s := fmt.Sprintf("%s.%d", prefix, n)
		return s + strings.Repeat("1", 64-len(s))
	}
	study := uid("1.2.826.0.1.3680043.10.7", 1)
	for _, tt := range []struct {
		instances   int
		wantListing bool
	}{{10, true}, {250, true}, {450, false}, {2000, false}} {
		var ins []InstanceRecord
		for i := range tt.instances {
			se := uid("1.2.826.0.1.3680043.10.8", i%4)
			sop := uid("1.2.826.0.1.3680043.10.9", i)
			key := "incoming/2026/12/06/" + study + "/" + se + "/" + sop + ".dcm"
			ins = append(ins, InstanceRecord{StudyInstanceUID: study, SeriesInstanceUID: se, SOPInstanceUID: sop, ObjectKey: key,
				MetadataKey: "metadata/2026/12/06/" + study + "/" + se + "/" + sop + ".json", ReceivedAt: time.Unix(int64(i), 0)})
		}
		sum := StudySummary{StudyInstanceUID: study, InstanceCount: tt.instances, SeriesCount: 4}
		p := &Pipeline{Index: oneStudy{d: NewStudyDetail(sum, ins)}, BucketName: strings.Repeat("b", 63)}
		d, err := p.studyDetail(context.Background(), sum, 1, "quiet")
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
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
