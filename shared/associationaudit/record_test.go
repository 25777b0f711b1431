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

// TestRunFacts: a start's unclean previous runs and a stop's lost records
// are fields of the record, round-tripped; records written before them
// (schema version 1 all the same) still parse, without them.
func TestRunFacts(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	tests := []struct {
		name string
		in   string // a stored record; empty: Marshal(want)
		want Record
	}{
		{name: "start naming a dead run", want: Record{Event: EventApplicationStart, Time: at, AssociationID: "cccc", CalledAE: "REMOTE_AE", Seq: 1,
			Reason: "previous run dead1 …", PreviousRuns: []UncleanRun{{Instance: "dead1", AETitle: "REMOTE_AE", Started: at.Add(-time.Hour),
				LastAlive: at.Add(-time.Minute), LastSeq: 7, Written: 5, CountedLost: 1, NotWritten: 1}}}},
		{name: "start after an unreadable marker", want: Record{Event: EventApplicationStart, Time: at, AssociationID: "cccc", Seq: 1,
			PreviousRuns: []UncleanRun{{Instance: "dead2", Unreadable: true}}}},
		{name: "a running SCP's report of a dead run", want: Record{Event: EventUncleanStopFound, Time: at, AssociationID: "cccc", CalledAE: "REMOTE_AE", Seq: 42,
			Reason: "previous run dead1 …", PreviousRuns: []UncleanRun{{Instance: "dead1", AETitle: "REMOTE_AE", Started: at.Add(-time.Hour),
				LastAlive: at.Add(-time.Minute), LastSeq: 7, Written: 5, CountedLost: 1, NotWritten: 1}}}},
		{name: "stop with records lost", want: Record{Event: EventApplicationStop, Time: at, AssociationID: "cccc", Seq: 9,
			Lost: &LostRecords{Count: 2, Seqs: []uint64{4, 6}}}},
		{name: "start written before the fields", in: `{"schemaVersion":1,"event":"application-start","time":"2026-03-04T05:06:07Z",` +
			`"associationId":"cccc","reason":"previous run dead1 (AE REMOTE_AE) stopped uncleanly","seq":1}`,
			want: Record{SchemaVersion: 1, Event: EventApplicationStart, Time: at, AssociationID: "cccc", Seq: 1,
				Reason: "previous run dead1 (AE REMOTE_AE) stopped uncleanly"}},
		{name: "stop written before the fields", in: `{"schemaVersion":1,"event":"application-stop","time":"2026-03-04T05:06:07Z","associationId":"cccc","seq":9}`,
			want: Record{SchemaVersion: 1, Event: EventApplicationStop, Time: at, AssociationID: "cccc", Seq: 9}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := []byte(tt.in)
			if tt.in == "" {
				var err error
				if b, err = Marshal(tt.want); err != nil {
					t.Fatal(err)
				}
				tt.want.SchemaVersion = SchemaVersion
			}
			got, err := Parse(b)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("parsed (-want +got):\n%s", d)
			}
		})
	}
}

func TestPossiblyLost(t *testing.T) {
	tests := []struct {
		run  UncleanRun
		want string
	}{
		{UncleanRun{LastSeq: 7, Written: 5, CountedLost: 1, NotWritten: 1}, "up to 2 of seq 1-7, and any after seq 7"},
		{UncleanRun{LastSeq: 9, Written: 8, CountedLost: 1, StopNotWritten: true}, "up to 1 of seq 1-9"},
		{UncleanRun{}, "any (it had numbered none)"},
		{UncleanRun{Unreadable: true}, "any"},
	}
	for _, tt := range tests {
		if got := tt.run.PossiblyLost(); got != tt.want {
			t.Errorf("PossiblyLost(%+v) = %q, want %q", tt.run, got, tt.want)
		}
	}
}

// TestFoldedRefusal: a record standing for several refusals keeps its count
// and the last one's time; a record of one event says neither.
func TestFoldedRefusal(t *testing.T) {
	first := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name   string
		r      Record
		fields []string // in the JSON
		absent []string // not in the JSON
	}{
		{"one refusal", Record{Event: EventRejected, Time: first, AssociationID: "a1", PeerAddr: "10.0.0.1:5000", Seq: 1},
			nil, []string{`"count"`, `"until"`}},
		{"folded", Record{Event: EventRejected, Time: first, AssociationID: "a1", PeerAddr: "10.0.0.1", Seq: 2,
			Count: 4711, Until: first.Add(10 * time.Second)}, []string{`"count":4711`, `"until":"2026-01-02T03:04:15Z"`}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Marshal(tt.r)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range tt.fields {
				if !strings.Contains(string(b), f) {
					t.Errorf("%s lacks %s", b, f)
				}
			}
			for _, f := range tt.absent {
				if strings.Contains(string(b), f) {
					t.Errorf("%s has %s", b, f)
				}
			}
			got, err := Parse(b)
			if err != nil {
				t.Fatal(err)
			}
			tt.r.SchemaVersion = SchemaVersion
			if d := cmp.Diff(tt.r, got); d != "" {
				t.Errorf("round trip (-want +got):\n%s", d)
			}
		})
	}
}

// TestStoreStatus: the one rule of a store-failed record's status: the
// DIMSE status dicomnet's event carries, four upper-case hex digits, and
// none for status 0, a C-STORE the association's end cut short, which was
// answered nothing (NotAnswered; records written before said "0000").
func TestStoreStatus(t *testing.T) {
	for _, tt := range []struct {
		status      uint16
		want        string
		notAnswered bool
	}{
		{0, "", true},
		{0xA700, "A700", false},
		{0xC000, "C000", false},
		{0x0122, "0122", false},
		{0xa9ff, "A9FF", false},
	} {
		got := StoreStatus(tt.status)
		if got != tt.want || NotAnswered(got) != tt.notAnswered {
			t.Errorf("StoreStatus(%#04x) = %q, not answered %v; want %q, %v", tt.status, got, NotAnswered(got), tt.want, tt.notAnswered)
		}
	}
	// Records written before: their cut short C-STOREs said "0000".
	for _, tt := range []struct {
		status string
		want   bool
	}{{"", true}, {"0000", true}, {"A700", false}, {"C001", false}} {
		if got := NotAnswered(tt.status); got != tt.want {
			t.Errorf("NotAnswered(%q) = %v, want %v", tt.status, got, tt.want)
		}
	}
}
