package awsadapters

import (
	"fmt"
	"slices"
	"testing"

	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// TestAttributeUpdateModalities: step 5 adds every modality want holds
// that seen does not in one ADD, conditioned on the set leaving room for
// all of them; a Merge of one record adds one at most, but the update
// writes what it is given (the loop once set one value per modality,
// keeping the last).
func TestAttributeUpdateModalities(t *testing.T) {
	rec := pipeline.InstanceRecord{StudyInstanceUID: "1.2.3", SOPInstanceUID: "1.2.3.4", ContentIdentity: "aa"}
	seen := pipeline.StudySummary{StudyInstanceUID: "1.2.3", Modalities: []string{"CT"}}
	for _, tc := range []struct {
		name string
		want []string
		adds []string
		room int
	}{
		{"none new", []string{"CT"}, nil, 0},
		{"one new", []string{"CT", "MR"}, []string{"MR"}, pipeline.MaxStudyModalities - 1},
		{"several new", []string{"CT", "MR", "PT", "SR"}, []string{"MR", "PT", "SR"}, pipeline.MaxStudyModalities - 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := seen
			want.Modalities = tc.want
			in := attributeUpdate("t", rec, seen, want, false, false)
			got, ok := in.ExpressionAttributeValues[":mods"].(*ddbtypes.AttributeValueMemberSS)
			if len(tc.adds) == 0 {
				if ok {
					t.Fatalf("adds %v, want none", got.Value)
				}
				return
			}
			if !ok || !slices.Equal(got.Value, tc.adds) {
				t.Fatalf("adds %v, want %v", got, tc.adds)
			}
			room, ok := in.ExpressionAttributeValues[":modsRoom"].(*ddbtypes.AttributeValueMemberN)
			if !ok || room.Value != fmt.Sprint(tc.room) {
				t.Errorf("room %v, want %d", room, tc.room)
			}
		})
	}
}
