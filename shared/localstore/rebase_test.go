package localstore

import (
	"encoding/json"
	"slices"
	"testing"
)

// TestRebase: an event recorded while the portal listened on :8080 names
// http://127.0.0.1:8080/objects/<key>, dead once the portal listens on
// :9090; read back, its pointers name the portal as it is, with the same
// keys, and nothing else in the event changes (a UID or an AE title that
// looks like a URL neither).
func TestRebase(t *testing.T) {
	const old, now = "http://127.0.0.1:8080/objects/", "http://127.0.0.1:9090/objects/"
	for _, tt := range []struct {
		name                  string
		detail, want          string
		resources, wantResour []string
	}{
		{"instance stored",
			`{"objectKey":"incoming/a.dcm","objectUri":"` + old + `incoming/a.dcm","metadataUri":"` + old + `metadata/a.json","callingAe":"http://x/objects/"}`,
			`{"objectKey":"incoming/a.dcm","objectUri":"` + now + `incoming/a.dcm","metadataUri":"` + now + `metadata/a.json","callingAe":"http://x/objects/"}`,
			[]string{old + "incoming/a.dcm"}, []string{now + "incoming/a.dcm"}},
		{"study event",
			`{"studyInstanceUid":"1.2","series":[{"instances":[{"objectUri":"` + old + `incoming/b.dcm","metadataUri":"` + old + `metadata/b.json"}]}]}`,
			`{"studyInstanceUid":"1.2","series":[{"instances":[{"objectUri":"` + now + `incoming/b.dcm","metadataUri":"` + now + `metadata/b.json"}]}]}`,
			[]string{}, []string{}},
		{"commitment, another host",
			`{"requestUri":"http://[::1]:7000/objects/commitment/requests/r.json","resultUri":"http://[::1]:7000/objects/commitment/results/r.json"}`,
			`{"requestUri":"` + now + `commitment/requests/r.json","resultUri":"` + now + `commitment/results/r.json"}`,
			[]string{"http://[::1]:7000/objects/commitment/results/r.json"}, []string{now + "commitment/results/r.json"}},
		{"current already", `{"objectUri":"` + now + `incoming/c.dcm"}`, `{"objectUri":"` + now + `incoming/c.dcm"}`, nil, []string{}},
		{"s3 pointers are not the portal's", `{"objectUri":"s3://bucket/incoming/d.dcm"}`, `{"objectUri":"s3://bucket/incoming/d.dcm"}`,
			[]string{"arn:aws:s3:::bucket/incoming/d.dcm"}, []string{"arn:aws:s3:::bucket/incoming/d.dcm"}},
		{"not an objects path", `{"objectUri":"http://h/other/objects/e"}`, `{"objectUri":"http://h/other/objects/e"}`, nil, []string{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := EventPage{Events: []StoredEvent{{Seq: 1, Event: Event{Detail: json.RawMessage(tt.detail), Resources: tt.resources}}}}
			p.Rebase(now)
			got := p.Events[0]
			if string(got.Detail) != tt.want || !slices.Equal(got.Resources, tt.wantResour) {
				t.Errorf("rebased:\n%s %q\nwant\n%s %q", got.Detail, got.Resources, tt.want, tt.wantResour)
			}
			if !json.Valid(got.Detail) {
				t.Errorf("detail is no longer JSON: %s", got.Detail)
			}
		})
	}
}
