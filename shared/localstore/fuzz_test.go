package localstore

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// FuzzAuditCursor: the cursor comes from API clients; a bad one is an error,
// never a panic or a silently different page.
func FuzzAuditCursor(f *testing.F) {
	db, err := Open(context.Background(), f.TempDir()+"/fuzz.db")
	if err != nil {
		f.Fatal(err)
	}
	defer db.Close()
	a := db.AuditStore()
	for i, id := range []string{"a", "b", "c"} {
		if _, err := a.Append(context.Background(), pipeline.AuditRecord{ID: id, Time: t0.Add(-time.Duration(i) * time.Second), Outcome: "stored"}); err != nil {
			f.Fatal(err)
		}
	}
	for _, s := range []string{"", "1.2", "x.y", "9223372036854775807.1", "-1.-1", "1764151200000000000.3", "."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cursor string) {
		page, err := a.Query(context.Background(), pipeline.AuditQuery{Cursor: cursor, Limit: 2})
		if err != nil {
			if !strings.Contains(err.Error(), "bad cursor") {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if len(page.Records) > 2 {
			t.Fatalf("page of %d", len(page.Records))
		}
	})
}
