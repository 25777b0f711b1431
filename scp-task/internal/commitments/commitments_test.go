package commitments_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/commitments"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/commitment"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	pt "github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
)

type records struct {
	put map[string][]byte
	err error
}

func (r *records) PutRecord(_ context.Context, key string, body []byte) error {
	if r.err != nil {
		return r.err
	}
	r.put[key] = body
	return nil
}

func request(assoc string) *dicomnet.CommitmentRequest {
	return &dicomnet.CommitmentRequest{
		Association: &dicomnet.AssociationInfo{ID: assoc, CallingAE: "PACS", CalledAE: "INGEST",
			RemoteAddr: &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 4000}},
		MessageID: 7, TransferSyntaxUID: dicomuid.ExplicitVRLittleEndian, ReceivedAt: time.Date(2026, 1, 15, 10, 0, 0, 0, time.UTC),
	}
}

func TestServeCommitment(t *testing.T) {
	want := commitment.Request{TransactionUID: "1.2.3.99", Refs: []commitment.Ref{{SOPClassUID: dicomuid.CTImageStorage, SOPInstanceUID: "1.2.3.4"}}}
	ds, err := commitment.AppendRequest(nil, &want, dicomuid.ExplicitVRLittleEndian)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("stored before success", func(t *testing.T) {
		st := &records{put: map[string][]byte{}}
		h := &commitments.Handler{Store: st, CanReport: func(ae string) bool { return ae == "PACS" }}
		if err := h.ServeCommitment(context.Background(), request("ab12-3"), bytes.NewReader(ds)); err != nil {
			t.Fatal(err)
		}
		body, ok := st.put["commitment/requests/2026/01/15/ab12-3-7.json"]
		if !ok {
			t.Fatalf("stored %v", st.put)
		}
		got, err := pipeline.ParseCommitmentRequest(body)
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(want.Refs, got.Refs); d != "" || got.TransactionUID != want.TransactionUID || got.CallingAE != "PACS" ||
			got.PeerAddr != "10.1.2.3:4000" || got.AssociationID != "ab12-3" || got.MessageID != 7 {
			t.Errorf("stored %s (%s)", body, d)
		}
	})
	// Two Referenced SOP Sequences: a data set holds a tag once (PS3.5 §7.1), so it is malformed, not two lists
	// to merge.
	refItem := func(inst string) []pt.Elem {
		return []pt.Elem{pt.Str(pt.Tag(8, 0x1150), "UI", dicomuid.CTImageStorage), pt.Str(pt.Tag(8, 0x1155), "UI", inst)}
	}
	twice := pt.DataSet([]pt.Elem{pt.Str(pt.Tag(8, 0x1195), "UI", "1.2.3.99"),
		pt.Seq(pt.Tag(8, 0x1199), false, refItem("1.2.3.4")), pt.Seq(pt.Tag(8, 0x1199), false, refItem("1.2.3.5"))}, false)
	for name, tc := range map[string]struct {
		h    *commitments.Handler
		ds   []byte
		code uint16
	}{
		"two Referenced SOP Sequences": {&commitments.Handler{Store: &records{put: map[string][]byte{}}, CanReport: func(string) bool { return true }}, twice, dimse.StatusInvalidArgumentValue},
		"no report address":            {&commitments.Handler{Store: &records{put: map[string][]byte{}}, CanReport: func(string) bool { return false }}, ds, dimse.StatusNotAuthorized},
		"store down":                   {&commitments.Handler{Store: &records{err: errors.New("disk full")}}, ds, dimse.StatusProcessingFailure},
		"empty sequence":               {&commitments.Handler{Store: &records{put: map[string][]byte{}}}, ds[:20], dimse.StatusInvalidArgumentValue},
	} {
		t.Run(name, func(t *testing.T) {
			err := tc.h.ServeCommitment(context.Background(), request("ab12-3"), bytes.NewReader(tc.ds))
			var st dimse.Status
			if !errors.As(err, &st) || st.Code != tc.code {
				t.Fatalf("error %v, want status 0x%04X", err, tc.code)
			}
			if b, _ := json.Marshal(st); strings.Contains(string(b), "1.2.3.4") {
				t.Errorf("status comment names an instance: %s", b)
			}
			if r, ok := tc.h.Store.(*records); ok && len(r.put) != 0 {
				t.Errorf("refused request stored: %v", r.put)
			}
		})
	}
}
