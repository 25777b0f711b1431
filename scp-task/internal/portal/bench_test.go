package portal

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/localstore"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// BenchmarkPages renders each page over a database of 50 studies (20
// instances each, in two series), their audit records in 50 associations,
// a Storage Commitment transaction each and 10,000 events: the bound is under 300 ms a page. make bench
// prints it; go test -bench Pages ./scp-task/internal/portal runs it.
func BenchmarkPages(b *testing.B) {
	ctx := context.Background()
	db, err := localstore.Open(ctx, filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = db.Close() })
	seed(b, db)
	s := &Server{Studies: db.IndexStore(), Search: db, Audit: db.AuditStore(), Associations: db, Events: db, Commitments: db.CommitmentStore(),
		Counters: func(context.Context) Counters { return Counters{} }}
	srv := httptest.NewServer(s.Handler())
	b.Cleanup(srv.Close)
	study := "1.9.25"
	for _, page := range []string{
		"/", "/?patient=patient+7", "/?status=receiving", "/studies/" + study,
		"/audit", "/audit/associations/assoc-25", "/audit/records", "/quarantine",
		"/events", "/events?study=" + study, "/events?type=Study+Received",
		"/commitments", "/commitments?outcome=failure",
		"/api/studies", "/api/events", "/api/audit", "/api/commitments",
	} {
		b.Run(page, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				resp, err := http.Get(srv.URL + page)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, resp.Body); err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("%s: %d", page, resp.StatusCode)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/page")
		})
	}
}

// seed writes the benchmark's data through the adapters the pipeline uses.
func seed(b *testing.B, db *localstore.DB) {
	b.Helper()
	ctx := context.Background()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	var events []pipeline.Event
	for st := range 50 {
		study := fmt.Sprint("1.9.", st)
		assoc := fmt.Sprint("assoc-", st)
		err := db.InTx(ctx, nil, func(tx *localstore.Tx) error {
			au := tx.AuditStore()
			if _, err := au.Append(ctx, pipeline.AuditRecord{ID: assoc + "-a", Time: t0, Outcome: "association-accepted", AssociationID: assoc, CallingAE: "SITE_A"}); err != nil {
				return err
			}
			for i := range 20 {
				sop := fmt.Sprintf("%s.%d.%d", study, i%2+1, i)
				at := t0.Add(time.Duration(st)*time.Minute + time.Duration(i)*time.Second)
				if _, err := tx.IndexStore().UpsertInstance(ctx, pipeline.InstanceRecord{StudyInstanceUID: study, SeriesInstanceUID: fmt.Sprintf("%s.%d", study, i%2+1),
					SOPInstanceUID: sop, ContentIdentity: "x", PatientName: fmt.Sprintf("PATIENT^%d", st), PatientID: fmt.Sprint("P", st), Modality: "CT",
					CallingAE: "SITE_A", InstanceNumber: fmt.Sprint(i), TransferSyntaxUID: "1.2.840.10008.1.2.1", Size: 525000, ReceivedAt: at,
					ObjectKey: "incoming/" + sop + ".dcm"}); err != nil {
					return err
				}
				if _, err := au.Append(ctx, pipeline.AuditRecord{ID: sop, Time: at, Outcome: "stored", AssociationID: assoc, CallingAE: "SITE_A",
					StudyInstanceUID: study, SOPInstanceUID: sop, PatientID: fmt.Sprint("P", st)}); err != nil {
					return err
				}
			}
			if _, err := au.Append(ctx, pipeline.AuditRecord{ID: assoc + "-r", Time: t0.Add(time.Hour), Outcome: "association-released", AssociationID: assoc, CallingAE: "SITE_A"}); err != nil {
				return err
			}
			// Each study's Storage Commitment, every fifth with failures.
			cs := tx.CommitmentStore()
			c, _, err := cs.CreateCommitment(ctx, pipeline.CommitmentTransaction{ID: "tx" + study, TransactionUID: "2.25." + fmt.Sprint(st), CallingAE: "SITE_A",
				RefCount: 20, ReceivedAt: t0.Add(time.Duration(st)*time.Minute + time.Hour), State: pipeline.CommitmentPending})
			if err != nil {
				return err
			}
			c.State, c.Committed, c.Studies, c.ResultKey = pipeline.CommitmentReported, 20, []string{study}, pipeline.CommitmentResultsPrefix+c.ID+".json"
			if st%5 == 0 {
				c.Committed, c.Failed = 19, 1
			}
			_, err = cs.UpdateCommitment(ctx, c)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	for i := range 10000 {
		study := fmt.Sprint("1.9.", i%50)
		d, _ := json.Marshal(pipeline.InstanceStoredDetail{StudyInstanceUID: study, SOPInstanceUID: fmt.Sprint(study, ".9.", i), Modality: "CT", CallingAE: "SITE_A"})
		dt := pipeline.DetailTypeInstanceStored
		if i%200 == 0 {
			dt = pipeline.DetailTypeStudyReceived
		}
		events = append(events, pipeline.Event{ID: fmt.Sprint("ev", i), DetailType: dt, Time: t0.Add(time.Duration(i) * time.Second), Detail: d})
		if len(events) == 1000 {
			if _, err := db.Outbox(nil).Publish(ctx, events); err != nil {
				b.Fatal(err)
			}
			events = events[:0]
		}
	}
}
