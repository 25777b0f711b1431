package pipeline_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// TestStudyDetailOrder: series by Series Number, and a series' instances by
// Instance Number (numerically), then by arrival; they were listed in the
// order they arrived, a sender's directory order (82, 157, 331, …).
func TestStudyDetailOrder(t *testing.T) {
	t0 := time.Date(2026, 1, 15, 10, 0, 0, 0, time.UTC)
	in := func(series, number string, at int) pipeline.InstanceRecord {
		return pipeline.InstanceRecord{SeriesInstanceUID: "2.25." + series, SeriesNumber: series, InstanceNumber: number,
			SOPInstanceUID: "2.25." + series + "." + number + "." + string(rune('0'+at)), ReceivedAt: t0.Add(time.Duration(at) * time.Second)}
	}
	d := pipeline.NewStudyDetail(pipeline.StudySummary{}, []pipeline.InstanceRecord{
		in("2", "10", 0), in("1", "157", 1), in("1", "82", 2), in("2", "9", 3), in("1", "82", 4), in("1", "", 5),
	}, 0)
	var got []string
	for _, r := range d.Instances {
		got = append(got, r.SeriesNumber+"/"+r.InstanceNumber+"@"+r.ReceivedAt.Format("05"))
	}
	want := []string{"1/@05", "1/82@02", "1/82@04", "1/157@01", "2/9@03", "2/10@00"}
	if !slices.Equal(got, want) {
		t.Errorf("instances %v, want %v", got, want)
	}
}

// TestStudySummaryJSONOmitsLastSentUnset: a study record written before
// lastSent existed has none in its JSON (/api/studies), as pipeline.md
// says, not "0001-01-01T00:00:00Z" (omitempty does not omit a time).
func TestStudySummaryJSONOmitsLastSentUnset(t *testing.T) {
	for _, c := range []struct {
		name string
		s    pipeline.StudySummary
		want bool
	}{
		{"unset", pipeline.StudySummary{StudyInstanceUID: "1.2.3"}, false},
		{"set", pipeline.StudySummary{StudyInstanceUID: "1.2.3", LastSent: time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, err := json.Marshal(c.s)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(string(b), `"lastSent"`); got != c.want {
				t.Errorf("lastSent in %s: %v, want %v", b, got, c.want)
			}
		})
	}
}
