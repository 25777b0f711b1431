package pipelinetest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/commitment"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// UID64 is a UID of 64 characters, the longest, under root: n makes it unique.
func UID64(root string, n int) string { return fmt.Sprintf("%s1%0*d", root, 63-len(root), n) }

// ScaleStudyUID is the study of RunCommitmentAtScale's i-th instance.
func ScaleStudyUID(i int) string { return UID64("1.2.826.0.1.3680043.10.1002.", i) }

// RunCommitmentAtScale runs the largest request PS3.4 J lets a PACS send and the SCP takes (commitment.MaxRefs
// instances, a backlog commitment after a migration), each instance of a study of its own and every UID 64
// characters long, through a pipeline whose transactions and audit trail are newStores' (the fakes, SQLite,
// DynamoDB on an emulator): it is evaluated, reported and finished, one rule for every store. The transaction and
// the audit records name a bounded number of studies and count them all; the result document lists every one.
func RunCommitmentAtScale(t *testing.T, newStores func(t *testing.T) (pipeline.CommitmentStore, pipeline.AuditStore)) {
	ctx := context.Background()
	f := New()
	p := f.Pipeline()
	p.Commitments, p.Audit = newStores(t)
	p.Now = func() time.Time { return T0 }
	refs := make([]commitment.Ref, commitment.MaxRefs)
	for i := range refs {
		in := Record(1, 1, 1, "aa", 0)
		in.StudyInstanceUID = ScaleStudyUID(i)
		in.SeriesInstanceUID = UID64("1.2.826.0.1.3680043.10.1003.", i)
		in.SOPInstanceUID = UID64("1.2.826.0.1.3680043.10.1004.", i)
		in.ObjectKey = fmt.Sprintf("incoming/2026/01/15/%s/%s/%s.dcm", in.StudyInstanceUID, in.SeriesInstanceUID, in.SOPInstanceUID)
		if _, err := f.Index.UpsertInstance(ctx, in); err != nil {
			t.Fatal(err)
		}
		f.Objects.Add(in.ObjectKey, []byte("DICM"), nil)
		refs[i] = commitment.Ref{SOPClassUID: in.SOPClassUID, SOPInstanceUID: in.SOPInstanceUID}
	}
	req := pipeline.CommitmentRequest{SchemaVersion: 1, TransactionUID: UID64("1.2.826.0.1.3680043.10.1005.", 1), Refs: refs,
		CallingAE: "PACS", CalledAE: "INGEST", PeerAddr: "10.1.2.3:4567", AssociationID: "abcd1234-1", MessageID: 1, ReceivedAt: T0}
	body, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Objects.Put(ctx, req.Key(), body, "application/json", nil); err != nil {
		t.Fatal(err)
	}
	if err := p.ProcessCommitmentRequest(ctx, req.Key()); err != nil {
		t.Fatalf("the request: %v", err)
	}
	if n, err := p.RunCommitments(ctx, T0); n != 1 || err != nil {
		t.Fatalf("the run: %d finished, err %v; want the transaction finished", n, err)
	}
	reps := f.Reporter.Reports()
	if len(reps) != 1 || len(reps[0].Result.Committed) != commitment.MaxRefs {
		t.Fatalf("%d reports; want one, of %d instances committed", len(reps), commitment.MaxRefs)
	}
	due, err := p.Commitments.DueCommitments(ctx, T0.Add(24*time.Hour), 10)
	if err != nil || len(due) != 0 {
		t.Errorf("%d transactions still due (%v); want none", len(due), err)
	}
	tx, err := p.Commitments.GetCommitment(ctx, pipeline.CommitmentID(req.TransactionUID))
	if err != nil {
		t.Fatal(err)
	}
	if tx.State != pipeline.CommitmentReported || len(tx.Studies) != pipeline.MaxListedStudies || tx.StudyCount != commitment.MaxRefs {
		t.Errorf("the transaction %s, naming %d studies of %d; want reported, naming %d of %d",
			tx.State, len(tx.Studies), tx.StudyCount, pipeline.MaxListedStudies, commitment.MaxRefs)
	}
	var results []string
	for _, k := range f.Objects.Keys() {
		if strings.HasPrefix(k, pipeline.CommitmentResultsPrefix) {
			results = append(results, k)
		}
	}
	if len(results) != 1 {
		t.Fatalf("result documents %v; want one", results)
	}
	b, _, _ := f.Objects.Get(results[0])
	var doc pipeline.CommitmentResultDoc
	if err := json.Unmarshal(b, &doc); err != nil || len(doc.Studies) != commitment.MaxRefs {
		t.Errorf("the result document lists %d studies (%v); want every one, %d", len(doc.Studies), err, commitment.MaxRefs)
	}
	var cd pipeline.CommitmentCompletedDetail
	for _, e := range f.Events.All() {
		if e.DetailType == pipeline.DetailTypeCommitmentCompleted {
			if err := json.Unmarshal(e.Detail, &cd); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !cd.Report.Delivered || cd.StudyCount != commitment.MaxRefs || !cd.StudiesTruncated {
		t.Errorf("Storage Commitment Completed %+v; want delivered, of %d studies, the list cut", cd.Report, cd.StudyCount)
	}
}
