package pipeline

import (
	"encoding/json"
	"slices"
	"testing"
)

// TestEventStudies: the studies an event names, whichever field names
// them: an instance or study event's studyInstanceUid, a Storage
// Commitment Completed's studies.
func TestEventStudies(t *testing.T) {
	for _, tt := range []struct {
		name, detail string
		want         []string
	}{
		{"instance stored", `{"studyInstanceUid":"1.2.3","sopInstanceUid":"1.2.3.4.5"}`, []string{"1.2.3"}},
		{"rejected without a study", `{"sopInstanceUid":"1.2.3.4.5"}`, nil},
		{"study event", `{"studyInstanceUid":"1.2.3","series":[{"seriesInstanceUid":"1.2.3.4"}]}`, []string{"1.2.3"}},
		{"commitment completed", `{"transactionUid":"9.9","studies":["1.2.3","1.2.4"],"studyCount":2}`, []string{"1.2.3", "1.2.4"}},
		{"commitment completed, none", `{"transactionUid":"9.9","studies":[],"studyCount":0}`, nil},
		{"both, once each", `{"studyInstanceUid":"1.2.3","studies":["1.2.3","","1.2.4","1.2.4"]}`, []string{"1.2.3", "1.2.4"}},
		{"not an object", `[1,2]`, nil},
		{"not JSON", `{"studies":`, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := EventStudies(json.RawMessage(tt.detail)); !slices.Equal(got, tt.want) {
				t.Errorf("EventStudies = %q, want %q", got, tt.want)
			}
		})
	}
}
