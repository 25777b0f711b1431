package objectstore

import (
	"errors"
	"testing"
	"time"
)

func TestKey(t *testing.T) {
	at := time.Date(2026, 3, 7, 23, 30, 0, 0, time.FixedZone("X", -3600))
	tests := []struct {
		name    string
		obj     Object
		want    string
		wantErr error
	}{
		{"full", Object{SOPInstanceUID: "1.2.3", StudyInstanceUID: "1.2", SeriesInstanceUID: "1.2.9", ReceivedAt: at},
			"incoming/2026/03/08/1.2/1.2.9/1.2.3.dcm", nil},
		{"missing study and series", Object{SOPInstanceUID: "1.2.3", ReceivedAt: at},
			"incoming/2026/03/08/unknown-study/unknown-series/1.2.3.dcm", nil},
		{"traversal in study", Object{SOPInstanceUID: "1.2.3", StudyInstanceUID: "../../etc", SeriesInstanceUID: "1", ReceivedAt: at},
			"incoming/2026/03/08/unknown-study/1/1.2.3.dcm", nil},
		{"traversal in sop", Object{SOPInstanceUID: "../1.2", ReceivedAt: at}, "", ErrUnsafeUID},
		{"double dot sop", Object{SOPInstanceUID: "1..2", ReceivedAt: at}, "", ErrUnsafeUID},
		{"trailing dot sop", Object{SOPInstanceUID: "1.2.", ReceivedAt: at}, "", ErrUnsafeUID},
		{"empty sop", Object{ReceivedAt: at}, "", ErrUnsafeUID},
		{"slash sop", Object{SOPInstanceUID: "1/2", ReceivedAt: at}, "", ErrUnsafeUID},
		{"too long sop", Object{SOPInstanceUID: "1." + string(make([]byte, 0)) + "12345678901234567890123456789012345678901234567890123456789012345", ReceivedAt: at}, "", ErrUnsafeUID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Key(tt.obj)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Key() error = %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("Key() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestConflictKey(t *testing.T) {
	got := ConflictKey("incoming/2026/03/08/1/2/3.dcm", "0123456789abcdef0123")
	if want := "incoming/2026/03/08/1/2/3.conflict-0123456789abcdef.dcm"; got != want {
		t.Errorf("ConflictKey() = %q, want %q", got, want)
	}
}
