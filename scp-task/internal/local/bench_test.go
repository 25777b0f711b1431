package local

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
)

// BenchmarkStoreToIndexed measures one object from Store.Put (file store,
// hand-off) until the pipeline has committed it to the index: the latency
// behind "in the portal within seconds" (the target is well under 2 s).
func BenchmarkStoreToIndexed(b *testing.B) {
	dir := b.TempDir()
	l, err := Start(context.Background(), Config{DataDir: dir, PortalListen: "127.0.0.1:0", QuietPeriod: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = l.Shutdown(context.Background()) }()
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		in := pipelinetest.Instance{StudyUID: "1.2.826.0.1.3680043.2.9", SeriesUID: "1.2.826.0.1.3680043.2.9.1",
			SOPUID: fmt.Sprintf("1.2.826.0.1.3680043.2.9.1.%d", i+1), PatientID: "P", PatientName: "B^M", Rows: 64, Columns: 64, SourceAE: "LOCAL_AE"}
		st, err := l.Store().Put(ctx, objectstore.Object{SOPClassUID: pipelinetest.CTStorage, SOPInstanceUID: in.SOPUID,
			StudyInstanceUID: in.StudyUID, SeriesInstanceUID: in.SeriesUID, TransferSyntaxUID: "1.2.840.10008.1.2.1",
			CallingAE: "LOCAL_AE", CalledAE: "REMOTE_AE", AssociationID: "bench", ReceivedAt: time.Now()}, bytes.NewReader(in.Build()))
		if err != nil {
			b.Fatal(err)
		}
		for {
			state, _, err := l.db.Handoff().State(ctx, st.Key)
			if err != nil {
				b.Fatal(err)
			}
			if state == "done" {
				break
			}
			if state == "failed" {
				b.Fatalf("processing %s failed", st.Key)
			}
			time.Sleep(200 * time.Microsecond)
		}
	}
}
