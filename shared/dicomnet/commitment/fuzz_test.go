package commitment_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/commitment"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	pt "github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
)

// FuzzParseRequest: the N-ACTION data set is outside bytes. ParseRequest never panics, answers every refusal
// with an N-ACTION status, and what it accepts is a valid request that encodes and parses back the same.
func FuzzParseRequest(f *testing.F) {
	for _, explicit := range []bool{false, true} {
		ts := impl
		if explicit {
			ts = expl
		}
		good, _ := commitment.AppendRequest(nil, &commitment.Request{TransactionUID: txn, Refs: sampleRefs(3)}, ts)
		f.Add(good, explicit)
		f.Add(good[:len(good)/2], explicit)
		f.Add(pt.DataSet([]pt.Elem{pt.Str(tagTxn, "UI", txn), pt.Seq(tagRefSeq, true, ref("1.2.3"), ref("1.2.4"))}, !explicit), explicit)
		f.Add(pt.DataSet([]pt.Elem{pt.Str(tagTxn, "UI", txn), pt.Seq(tagRefSeq, false,
			append(ref("1.2.3"), pt.Seq(tagRefSeq, true, ref("1.2.5")), pt.Str(tagFileSet, "SH", "X")))}, !explicit), explicit)
		f.Add(pt.DataSet([]pt.Elem{pt.Str(tagTxn, "UI", txn), pt.Seq(tagRefSeq, false)}, !explicit), explicit)
		f.Add(pt.DataSet([]pt.Elem{pt.Str(tagTxn, "UI", txn), pt.Seq(tagRefSeq, false, ref("1.2.3")), pt.Seq(tagRefSeq, true, ref("1.2.4"))}, !explicit), explicit)
		f.Add(pt.DataSet([]pt.Elem{pt.Seq(tagRefSeq, false, ref("1.2.3")), pt.Str(tagTxn, "UI", txn)}, !explicit), explicit)
	}
	f.Fuzz(func(t *testing.T, data []byte, explicit bool) {
		ts := impl
		if explicit {
			ts = expl
		}
		req, err := commitment.ParseRequest(bytes.NewReader(data), ts)
		if err != nil {
			var st dimse.Status
			if !errors.As(err, &st) || (st.Code != dimse.StatusInvalidArgumentValue && st.Code != dimse.StatusResourceLimitation) {
				t.Fatalf("refusal %v is not 0115 or 0213", err)
			}
			if len(st.Comment) > dimse.MaxCommentLen {
				t.Fatalf("comment of %d characters", len(st.Comment))
			}
			return
		}
		if len(req.Refs) == 0 || len(req.Refs) > commitment.MaxRefs {
			t.Fatalf("accepted %d references", len(req.Refs))
		}
		b, err := commitment.AppendRequest(nil, req, ts)
		if err != nil {
			t.Fatal(err)
		}
		again, err := commitment.ParseRequest(bytes.NewReader(b), ts)
		if err != nil {
			t.Fatalf("re-encoded request refused: %v", err)
		}
		if d := cmp.Diff(req, again); d != "" {
			t.Fatalf("round trip (-first +second):\n%s", d)
		}
	})
}
