package associationaudit

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestRoundTrip(t *testing.T) {
	src, reason := 2, 1
	r := Record{Event: EventAborted, Time: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), AssociationID: "a1b2", CallingAE: "LOCAL_AE",
		CalledAE: "REMOTE_AE", PeerAddr: "10.0.0.1:5000", AbortSource: &src, AbortReason: &reason, Instances: 3, Bytes: 99, Implementation: "x", Seq: 7}
	b, err := Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	r.SchemaVersion = SchemaVersion
	if d := cmp.Diff(r, got); d != "" {
		t.Errorf("round trip (-want +got):\n%s", d)
	}
	k, err := Key(got)
	if err != nil || k != "audit/2026/01/02/a1b2-000007-association-aborted.json" {
		t.Errorf("Key = %q, %v", k, err)
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name, in string
		want     error
		msg      string
	}{
		{"not json", "{", nil, "parse"},
		{"future version", `{"schemaVersion":2,"event":"association-accepted","associationId":"a"}`, ErrUnsupportedVersion, ""},
		{"traversal id", `{"schemaVersion":1,"event":"association-accepted","associationId":"../x"}`, nil, "not key-safe"},
		{"unknown event", `{"schemaVersion":1,"event":"party","associationId":"a"}`, nil, "unknown event"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in))
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("Parse error = %v", err)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":1,"event":"store-failed","associationId":"abc","status":"a700"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Parse(b)
		if err != nil {
			return
		}
		if _, err := Key(r); err != nil {
			t.Fatalf("a parsed record must have a key: %v", err)
		}
	})
}
