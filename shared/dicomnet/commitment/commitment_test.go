package commitment_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/commitment"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
	pt "github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
)

const (
	impl = dicomuid.ImplicitVRLittleEndian
	expl = dicomuid.ExplicitVRLittleEndian
	txn  = "1.2.826.0.1.3680043.10.9.1"
	ct   = dicomuid.CTImageStorage
)

var (
	tagTxn      = pt.Tag(0x0008, 0x1195)
	tagRefSeq   = pt.Tag(0x0008, 0x1199)
	tagFailSeq  = pt.Tag(0x0008, 0x1198)
	tagClass    = pt.Tag(0x0008, 0x1150)
	tagInstance = pt.Tag(0x0008, 0x1155)
	tagReason   = pt.Tag(0x0008, 0x1197)
	tagFileSet  = pt.Tag(0x0088, 0x0130)
	tagFileUID  = pt.Tag(0x0088, 0x0140)
)

func ref(sop string) []pt.Elem {
	return []pt.Elem{pt.Str(tagClass, "UI", ct), pt.Str(tagInstance, "UI", sop)}
}

func sampleRefs(n int) []commitment.Ref {
	var out []commitment.Ref
	for i := range n {
		out = append(out, commitment.Ref{SOPClassUID: ct, SOPInstanceUID: "1.2.3.4." + string(rune('1'+i))})
	}
	return out
}

// TestRequestRoundTrip: what AppendRequest writes, ParseRequest reads back, in both syntaxes.
func TestRequestRoundTrip(t *testing.T) {
	for _, ts := range []string{impl, expl} {
		want := &commitment.Request{TransactionUID: txn, Refs: sampleRefs(3)}
		b, err := commitment.AppendRequest(nil, want, ts)
		if err != nil {
			t.Fatal(err)
		}
		got, err := commitment.ParseRequest(bytes.NewReader(b), ts)
		if err != nil {
			t.Fatalf("%s: %v", ts, err)
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("%s (-want +got):\n%s", ts, d)
		}
	}
}

// TestResultRoundTrip: AppendResult's data set, read by ParseResult; a result without failures has no Failed
// SOP Sequence and one without commitments no Referenced SOP Sequence.
func TestResultRoundTrip(t *testing.T) {
	refs := sampleRefs(3)
	for _, res := range []*commitment.Result{
		{TransactionUID: txn, Committed: refs, Failed: []commitment.Failure{}},
		{TransactionUID: txn, Committed: refs[:1], Failed: []commitment.Failure{{Ref: refs[1], Reason: commitment.ReasonNoSuchObjectInstance}, {Ref: refs[2], Reason: commitment.ReasonProcessingFailure}}},
		{TransactionUID: txn, Committed: []commitment.Ref{}, Failed: []commitment.Failure{{Ref: refs[0], Reason: commitment.ReasonDuplicateTransactionUID}}},
	} {
		for _, ts := range []string{impl, expl} {
			b, err := commitment.AppendResult(nil, res, ts)
			if err != nil {
				t.Fatal(err)
			}
			if (len(res.Failed) > 0) != bytes.Contains(b, []byte{0x08, 0x00, 0x98, 0x11}) {
				t.Errorf("Failed SOP Sequence present %v with %d failures", !(len(res.Failed) > 0), len(res.Failed))
			}
			got, err := commitment.ParseResult(bytes.NewReader(b), ts)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(res, got); d != "" {
				t.Errorf("%s (-want +got):\n%s", ts, d)
			}
		}
	}
	if (&commitment.Result{}).EventTypeID() != 1 || (&commitment.Result{Failed: []commitment.Failure{{}}}).EventTypeID() != 2 {
		t.Error("EventTypeID")
	}
}

// TestResultBytes pins the Explicit VR encoding: ascending tags, defined lengths, UIDs padded with NUL.
func TestResultBytes(t *testing.T) {
	b, err := commitment.AppendResult(nil, &commitment.Result{TransactionUID: "1.2",
		Failed: []commitment.Failure{{Ref: commitment.Ref{SOPClassUID: "1.3", SOPInstanceUID: "1.45"}, Reason: 0x0112}}}, expl)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{
		"0800 9511 5549 0400 312e3200", // (0008,1195) UI "1.2\0"
		"0800 9811 5351 0000 2a000000", // (0008,1198) SQ, 42 bytes
		"feff 00e0 22000000",           // item, 34 bytes
		"0800 5011 5549 0400 312e3300", // (0008,1150) "1.3\0"
		"0800 5511 5549 0400 312e3435", // (0008,1155) "1.45"
		"0800 9711 5553 0200 1201",     // (0008,1197) US 0112
	}, "")
	if got, want := hexOf(b), strings.ReplaceAll(want, " ", ""); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if _, err := commitment.AppendResult(nil, &commitment.Result{}, dicomuid.JPEGBaseline8Bit); !errors.Is(err, commitment.ErrTransferSyntax) {
		t.Errorf("JPEG syntax: %v", err)
	}
}

func hexOf(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

// TestParseRequest: what a request may carry besides what we keep, and what makes it invalid (0115) or too
// large (0213), in both syntaxes.
func TestParseRequest(t *testing.T) {
	sop := "1.2.3.4.1"
	ok := &commitment.Request{TransactionUID: txn, Refs: []commitment.Ref{{SOPClassUID: ct, SOPInstanceUID: sop}}}
	tests := []struct {
		name   string
		ds     []pt.Elem
		want   *commitment.Request
		status uint16
	}{
		{"minimal", []pt.Elem{pt.Str(tagTxn, "UI", txn), pt.Seq(tagRefSeq, false, ref(sop))}, ok, 0},
		{"undefined lengths", []pt.Elem{pt.Str(tagTxn, "UI", txn), pt.Seq(tagRefSeq, true, ref(sop))}, ok, 0},
		{"storage media fields ignored", []pt.Elem{pt.Str(tagTxn, "UI", txn),
			pt.Seq(tagRefSeq, false, append(ref(sop), pt.Str(tagFileSet, "SH", "DISK1"), pt.Str(tagFileUID, "UI", "1.2.3.9"))),
			pt.Str(tagFileSet, "SH", "DISK1"), pt.Str(tagFileUID, "UI", "1.2.3.9")}, ok, 0},
		{"other elements and nested sequences ignored", []pt.Elem{pt.Str(pt.Tag(8, 5), "CS", "ISO_IR 100"),
			pt.Seq(pt.Tag(8, 0x1111), false, ref("1.9.9")), pt.Str(tagTxn, "UI", txn),
			pt.Seq(tagRefSeq, false, append(ref(sop), pt.Seq(pt.Tag(8, 0x1199), false, ref("1.9.8"))))}, ok, 0},
		{"no transaction", []pt.Elem{pt.Seq(tagRefSeq, false, ref(sop))}, nil, dimse.StatusInvalidArgumentValue},
		// A data set holds a tag once, in increasing order (PS3.5 §7.1): two sequences are not one list to merge.
		{"two Referenced SOP Sequences", []pt.Elem{pt.Str(tagTxn, "UI", txn), pt.Seq(tagRefSeq, false, ref(sop)),
			pt.Seq(tagRefSeq, false, ref("1.2.3.99"))}, nil, dimse.StatusInvalidArgumentValue},
		{"two Transaction UIDs", []pt.Elem{pt.Str(tagTxn, "UI", txn), pt.Str(tagTxn, "UI", "1.2.3.98"),
			pt.Seq(tagRefSeq, false, ref(sop))}, nil, dimse.StatusInvalidArgumentValue},
		{"repeated in an item", []pt.Elem{pt.Str(tagTxn, "UI", txn), pt.Seq(tagRefSeq, false,
			append(ref(sop), pt.Str(tagInstance, "UI", "1.2.3.97")))}, nil, dimse.StatusInvalidArgumentValue},
		{"repeated after a step back", []pt.Elem{pt.Seq(tagRefSeq, false, ref(sop)), pt.Str(tagTxn, "UI", txn),
			pt.Seq(tagRefSeq, false, ref("1.2.3.99"))}, nil, dimse.StatusInvalidArgumentValue},
		// Out of tag order but no repeat: the parse looks elements up by tag, so the request reads the same.
		{"out of order", []pt.Elem{pt.Seq(tagRefSeq, false, ref(sop)), pt.Str(tagTxn, "UI", txn)}, ok, 0},
		{"out of order in an item", []pt.Elem{pt.Str(tagTxn, "UI", txn), pt.Seq(tagRefSeq, false,
			[]pt.Elem{pt.Str(tagInstance, "UI", sop), pt.Str(tagClass, "UI", ct)})}, ok, 0},
		{"invalid transaction", []pt.Elem{pt.Str(tagTxn, "UI", "1.02"), pt.Seq(tagRefSeq, false, ref(sop))}, nil, dimse.StatusInvalidArgumentValue},
		{"transaction too long", []pt.Elem{pt.Str(tagTxn, "UI", "1."+strings.Repeat("1", 70)), pt.Seq(tagRefSeq, false, ref(sop))}, nil, dimse.StatusInvalidArgumentValue},
		{"no sequence", []pt.Elem{pt.Str(tagTxn, "UI", txn)}, nil, dimse.StatusInvalidArgumentValue},
		{"empty sequence", []pt.Elem{pt.Str(tagTxn, "UI", txn), pt.Seq(tagRefSeq, false)}, nil, dimse.StatusInvalidArgumentValue},
		{"item without instance", []pt.Elem{pt.Str(tagTxn, "UI", txn), pt.Seq(tagRefSeq, false, ref(sop)[:1])}, nil, dimse.StatusInvalidArgumentValue},
		{"item with a bad class", []pt.Elem{pt.Str(tagTxn, "UI", txn), pt.Seq(tagRefSeq, false, []pt.Elem{pt.Str(tagClass, "UI", "CT"), pt.Str(tagInstance, "UI", sop)})}, nil, dimse.StatusInvalidArgumentValue},
	}
	for _, tc := range tests {
		for _, ts := range []string{impl, expl} {
			t.Run(tc.name+"/"+ts, func(t *testing.T) {
				got, err := commitment.ParseRequest(bytes.NewReader(pt.DataSet(tc.ds, ts == impl)), ts)
				if tc.status != 0 {
					var st dimse.Status
					if !errors.As(err, &st) || st.Code != tc.status || st.Comment == "" {
						t.Fatalf("error %v, want status 0x%04X with a comment", err, tc.status)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if d := cmp.Diff(tc.want, got); d != "" {
					t.Errorf("(-want +got):\n%s", d)
				}
			})
		}
	}
}

func TestParseRequestMalformedAndTruncated(t *testing.T) {
	good, _ := commitment.AppendRequest(nil, &commitment.Request{TransactionUID: txn, Refs: sampleRefs(2)}, expl)
	for name, b := range map[string][]byte{
		"cut in a value":  good[:len(good)-3],
		"cut in a header": good[:len(good)-10],
		"no VR":           append(append([]byte{}, good...), 0x08, 0x00, 0x00, 0x00, 0, 0, 0, 0),
	} {
		var st dimse.Status
		if _, err := commitment.ParseRequest(bytes.NewReader(b), expl); !errors.As(err, &st) || st.Code != dimse.StatusInvalidArgumentValue {
			t.Errorf("%s: %v, want 0115", name, err)
		}
	}
	broken := io.MultiReader(bytes.NewReader(good[:20]), iotestErr{})
	if _, err := commitment.ParseRequest(broken, expl); !errors.Is(err, errBroken) {
		t.Errorf("association broke: %v, want the reader's error", err)
	}
	if _, err := commitment.ParseRequest(bytes.NewReader(good), dicomuid.JPEGBaseline8Bit); !errors.Is(err, commitment.ErrTransferSyntax) {
		t.Errorf("JPEG syntax: %v", err)
	}
}

var errBroken = errors.New("association broke")

type iotestErr struct{}

func (iotestErr) Read([]byte) (int, error) { return 0, errBroken }

// TestParseRequestTooMany: past MaxRefs the request is refused with 0213.
func TestParseRequestTooMany(t *testing.T) {
	refs := make([]commitment.Ref, commitment.MaxRefs+1)
	for i := range refs {
		refs[i] = commitment.Ref{SOPClassUID: ct, SOPInstanceUID: "1.2.3"}
	}
	b, err := commitment.AppendRequest(nil, &commitment.Request{TransactionUID: txn, Refs: refs}, impl)
	if err != nil {
		t.Fatal(err)
	}
	var st dimse.Status
	if _, err := commitment.ParseRequest(bytes.NewReader(b), impl); !errors.As(err, &st) || st.Code != dimse.StatusResourceLimitation {
		t.Errorf("%d references: %v, want 0213", len(refs), err)
	}
}

func TestParseResultNeedsReasons(t *testing.T) {
	ds := []pt.Elem{pt.Str(tagTxn, "UI", txn), pt.Seq(tagFailSeq, false, ref("1.2.3"))}
	if _, err := commitment.ParseResult(bytes.NewReader(pt.DataSet(ds, false)), expl); err == nil {
		t.Error("a failure without a reason was accepted")
	}
	ds[1] = pt.Seq(tagFailSeq, false, append(ref("1.2.3"), pt.U16(tagReason, 0x0112)))
	res, err := commitment.ParseResult(bytes.NewReader(pt.DataSet(ds, false)), expl)
	if err != nil || len(res.Failed) != 1 || res.Failed[0].Reason != 0x0112 {
		t.Errorf("ParseResult = %+v, %v", res, err)
	}
}
