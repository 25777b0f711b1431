package interop

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
	"github.com/dicom-ingest/dicom-ingest/shared/part10"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/scptest"
)

// dataSetOf is a Part 10 file's data set: what follows its File Meta
// Information, as the SCP received it and stores it.
func dataSetOf(t *testing.T, file []byte) []byte {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(file))
	if _, err := part10.ReadMeta(br); err != nil {
		t.Fatal(err)
	}
	ds, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

// TestOutOfOrderObjectStoredAsSent: DCMTK sorts the elements of what it
// sends, so an object out of tag order (PS3.5 §7.1), as some writers and
// the forwarders that pass their bytes on send it, is sent here with our
// own SCU (StoreFile: the file's data set unchanged) to scp-task in local
// mode. It is answered 0000 and stored byte for byte as sent, the SCP logs
// it by association and message id, and the pipeline indexes it with the
// tag-order warning.
func TestOutOfOrderObjectStoredAsSent(t *testing.T) {
	const study = "1.2.826.0.1.3680043.10.7701"
	in := pipelinetest.Instance{StudyUID: study, SeriesUID: study + ".1", SOPUID: study + ".1.1",
		PatientID: "PID-ORDER", PatientName: "Order^Test", Rows: 16, Columns: 16, SourceAE: "WRITER",
		// The SOP Instance and Study UIDs after Bits Allocated (0028,0100), past the series UID.
		Late: []uint32{pipelinetest.Tag(8, 0x18), pipelinetest.Tag(0x20, 0x0D)}}
	file := in.Build()
	path := filepath.Join(t.TempDir(), "late.dcm")
	if err := os.WriteFile(path, file, 0o600); err != nil {
		t.Fatal(err)
	}
	scp, root := storeModes[1].start(t, "") // local mode: the pipeline runs in the process

	as, err := dicomnet.Dial(scptest.Context(t), scp.DICOMAddr, dicomnet.ClientConfig{CallingAE: "LOCAL_AE", CalledAE: "REMOTE_AE",
		Contexts: []dicomnet.ProposedContext{{AbstractSyntax: pipelinetest.CTStorage, TransferSyntaxes: []string{dicomuid.ExplicitVRLittleEndian}}}})
	if err != nil {
		t.Fatalf("associate: %v", err)
	}
	st, err := as.StoreFile(scptest.Context(t), path)
	if err != nil {
		t.Fatal(err)
	}
	if err := as.Release(scptest.Context(t)); err != nil {
		t.Errorf("release: %v", err)
	}
	if st.Code != 0 {
		t.Fatalf("status %04X %q, want 0000: an element out of tag order is stored", st.Code, st.Comment)
	}

	line := scp.WaitLog(t, 10*time.Second, "an object stored out of tag order", func(m map[string]any) bool {
		return m["msg"] == "stored with elements out of tag order"
	})
	if line["misplaced"] != "(0008,0018)" || line["after"] != "(0028,0100)" || line["association"] == "" || line["message_id"] == nil {
		t.Errorf("log line %v, want (0008,0018) after (0028,0100), by association and message id", line)
	}
	if strings.Contains(scp.Logs(), in.SOPUID) {
		t.Error("the SCP's log names the SOP Instance UID")
	}

	var stored []string
	testenv.Eventually(t, "the stored file", func() bool {
		stored = storedFiles(t, root)
		return len(stored) == 1
	})
	got, err := os.ReadFile(stored[0])
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dataSetOf(t, got), dataSetOf(t, file)) {
		t.Error("the stored data set is not the one sent, byte for byte")
	}

	// The pipeline keeps it, indexed with the warning.
	var detail pipeline.StudyDetail
	testenv.EventuallyWithin(t, 30*time.Second, "the stored outcome in the portal", func() bool {
		recs := portalAudit(t, scp.PortalAddr, pipeline.OutcomeStored)
		if len(recs) != 1 {
			return false
		}
		portalJSON(t, scp.PortalAddr, "/api/studies/"+study, &detail)
		return len(detail.Instances) == 1
	})
	var warned []pipeline.Finding
	for _, f := range detail.Instances[0].Findings {
		if f.Code == pipeline.CodeTagOrder {
			warned = append(warned, f)
		}
	}
	if len(warned) != 1 || warned[0].Severity != pipeline.SeverityWarning ||
		warned[0].Message != "elements not in ascending tag order: (0008,0018) after (0028,0100)" {
		t.Errorf("indexed instance's findings %+v: want the tag-order warning", detail.Instances[0].Findings)
	}
}
