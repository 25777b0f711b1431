package dimse

import "testing"

// TestRefusedBeforeEnd: the marker dicomnet writes into the error of a request refused and then cut short reads
// back as one (the pipeline's AuditRecord.CutShort, localstore's SQL), with the text audit records already stored
// hold; a reason without it, or quoting only part of it, does not.
func TestRefusedBeforeEnd(t *testing.T) {
	const stored = "dicomnet: data set incomplete: EOF; refused before the association ended, status 0122: SOP class differs from the presentation context"
	if got := RefusedBeforeEndMessage("dicomnet: data set incomplete: EOF", StatusSOPClassNotSupported, "SOP class differs from the presentation context"); got != stored {
		t.Errorf("RefusedBeforeEndMessage = %q, want the stored records' %q", got, stored)
	}
	for _, tc := range []struct {
		reason string
		want   bool
	}{
		{stored, true},
		{RefusedBeforeEndMessage("dicomnet: connection closed", StatusOutOfResources, "disk full"), true},
		{"C-STORE not answered (the association ended before its data set did): dicomnet: data set incomplete: EOF", false},
		{"C-STORE status 0122: SOP class differs from the presentation context", false},
		{"refused before the association ended", false},
		{"", false},
	} {
		if got := SaysRefusedBeforeEnd(tc.reason); got != tc.want {
			t.Errorf("SaysRefusedBeforeEnd(%q) = %v, want %v", tc.reason, got, tc.want)
		}
	}
}
