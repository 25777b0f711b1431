package pipeline_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// TestContentIdentityFieldIsOneName: audit and index records carry the
// content identity under pipeline.ContentIdentityField, and read records
// written before under pipeline.LegacyContentIdentityField ("sha256", which
// an officer or a forensic tool took for a SHA-256 while it held the
// CRC-64/NVME), in JSON (SQLite, the portal, the feed's spool) and in any
// other form (ReadLegacyContentIdentity: DynamoDB items).
func TestContentIdentityFieldIsOneName(t *testing.T) {
	const id = "dataset-crc64nvme-0123456789abcdef"
	for _, tc := range []struct {
		name   string
		record any // pointer to a zero record
		get    func(any) string
	}{
		{"index record", &pipeline.InstanceRecord{}, func(r any) string { return r.(*pipeline.InstanceRecord).ContentIdentity }},
		{"audit record", &pipeline.AuditRecord{}, func(r any) string { return r.(*pipeline.AuditRecord).ContentIdentity }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, ok := reflect.TypeOf(tc.record).Elem().FieldByName("ContentIdentity")
			if !ok {
				t.Fatal("no ContentIdentity field")
			}
			if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); name != pipeline.ContentIdentityField {
				t.Errorf("JSON name %q, want pipeline.ContentIdentityField %q", name, pipeline.ContentIdentityField)
			}
			for _, field := range []string{pipeline.ContentIdentityField, pipeline.LegacyContentIdentityField} {
				rec := reflect.New(reflect.TypeOf(tc.record).Elem()).Interface()
				body := `{"objectKey":"incoming/k.dcm","` + field + `":"` + id + `","size":3}`
				if err := json.Unmarshal([]byte(body), rec); err != nil {
					t.Fatalf("%s: %v", field, err)
				}
				if got := tc.get(rec); got != id {
					t.Errorf("read under %q: content identity %q, want %q", field, got, id)
				}
				out, err := json.Marshal(rec)
				if err != nil {
					t.Fatal(err)
				}
				var m map[string]any
				if err := json.Unmarshal(out, &m); err != nil {
					t.Fatal(err)
				}
				if _, ok := m[pipeline.LegacyContentIdentityField]; ok || m[pipeline.ContentIdentityField] != id {
					t.Errorf("read under %q, written as %s: want it under %q only", field, out, pipeline.ContentIdentityField)
				}
			}
		})
	}
	for _, tc := range []struct{ name, id, legacy, want string }{
		{"new name", id, "", id},
		{"old name", "", id, id},
		{"both: the new name's", id, "other", id},
		{"neither", "", "", ""},
	} {
		t.Run("ReadLegacyContentIdentity/"+tc.name, func(t *testing.T) {
			got := pipeline.ReadLegacyContentIdentity(tc.id, func(field string) string {
				if field != pipeline.LegacyContentIdentityField {
					t.Errorf("asked for %q, want %q", field, pipeline.LegacyContentIdentityField)
				}
				return tc.legacy
			})
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
