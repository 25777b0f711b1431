// Package commitment is the Storage Commitment Push Model's data sets (PS3.4 J.3): the Action Information of
// an N-ACTION-RQ, the request (a Transaction UID and the SOP instances to commit), which ParseRequest reads with
// the module's one element reader, and the Event Information of an N-EVENT-REPORT-RQ, the result, which
// AppendResult encodes. AppendRequest and ParseResult are the other direction, for the tests and tools that
// play the requesting side.
package commitment

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
)

// Action and event type ids of the Push Model (PS3.4 J.3.2, J.3.3).
const (
	// ActionRequest is the Action Type ID of a Storage Commitment Request.
	ActionRequest uint16 = 1
	// EventCommitted is the Event Type ID of a result in which every instance is committed;
	// EventFailures that of a result with at least one failure.
	EventCommitted uint16 = 1
	EventFailures  uint16 = 2
)

// Failure Reason (0008,1197) values (PS3.4 J.3.3.1.1).
const (
	// ReasonProcessingFailure: the instance arrived but cannot be committed (quarantined, unreadable in the
	// store, refused when sent).
	ReasonProcessingFailure uint16 = 0x0110
	// ReasonNoSuchObjectInstance: the instance never arrived.
	ReasonNoSuchObjectInstance uint16 = 0x0112
	// ReasonClassInstanceConflict: the instance is held under another SOP class.
	ReasonClassInstanceConflict uint16 = 0x0119
	// ReasonSOPClassNotSupported: the referenced SOP class is not one we store.
	ReasonSOPClassNotSupported uint16 = 0x0122
	// ReasonDuplicateTransactionUID: the Transaction UID was used before for other instances.
	ReasonDuplicateTransactionUID uint16 = 0x0131
	// ReasonResourceLimitation: more than we can evaluate.
	ReasonResourceLimitation uint16 = 0x0213
)

// MaxRefs bounds the SOP instances one request may name: a request is held whole while it is parsed, made
// durable and evaluated. Fifty thousand references take about 6 MiB and cover a study of any modality.
const MaxRefs = 50_000

// Ref names one SOP instance.
type Ref struct {
	SOPClassUID    string `json:"sopClassUid"`
	SOPInstanceUID string `json:"sopInstanceUid"`
}

// Request is a Storage Commitment Request.
type Request struct {
	TransactionUID string `json:"transactionUid"`
	Refs           []Ref  `json:"refs"`
}

// Failure is an instance that is not committed, and why.
type Failure struct {
	Ref
	Reason uint16 `json:"failureReason"`
}

// Result is a Storage Commitment Result: every instance of the request, committed or failed.
type Result struct {
	TransactionUID string    `json:"transactionUid"`
	Committed      []Ref     `json:"committed"`
	Failed         []Failure `json:"failed"`
}

// EventTypeID is the result's N-EVENT-REPORT Event Type ID.
func (r *Result) EventTypeID() uint16 {
	if len(r.Failed) > 0 {
		return EventFailures
	}
	return EventCommitted
}

// Tags of the data sets.
const (
	tagTransactionUID        = 0x00081195
	tagFailureReason         = 0x00081197
	tagFailedSOPSequence     = 0x00081198
	tagReferencedSOPSequence = 0x00081199
	tagReferencedSOPClass    = 0x00081150
	tagReferencedSOPInstance = 0x00081155
	tagFileSetID             = 0x00880130
	tagFileSetUID            = 0x00880140
)

// ErrTransferSyntax is the error of encoding in a transfer syntax other than Implicit or Explicit VR Little
// Endian, the only ones we negotiate for the class.
var ErrTransferSyntax = errors.New("commitment: transfer syntax not supported for Storage Commitment data sets")

// AppendRequest appends r as an N-ACTION Action Information data set in transferSyntaxUID.
func AppendRequest(dst []byte, r *Request, transferSyntaxUID string) ([]byte, error) {
	w, err := newWriter(dst, transferSyntaxUID)
	if err != nil {
		return dst, err
	}
	w.uid(tagTransactionUID, r.TransactionUID)
	w.sequence(tagReferencedSOPSequence, len(r.Refs), func(i int, item *writer) {
		item.ref(r.Refs[i])
	})
	return w.b, nil
}

// AppendResult appends r as an N-EVENT-REPORT Event Information data set in transferSyntaxUID: the Transaction
// UID, the Failed SOP Sequence with a Failure Reason per item (when any failed) and the Referenced SOP Sequence
// of the committed instances (when any are).
func AppendResult(dst []byte, r *Result, transferSyntaxUID string) ([]byte, error) {
	w, err := newWriter(dst, transferSyntaxUID)
	if err != nil {
		return dst, err
	}
	w.uid(tagTransactionUID, r.TransactionUID)
	if len(r.Failed) > 0 {
		w.sequence(tagFailedSOPSequence, len(r.Failed), func(i int, item *writer) {
			item.ref(r.Failed[i].Ref)
			item.us(tagFailureReason, r.Failed[i].Reason)
		})
	}
	if len(r.Committed) > 0 {
		w.sequence(tagReferencedSOPSequence, len(r.Committed), func(i int, item *writer) {
			item.ref(r.Committed[i])
		})
	}
	return w.b, nil
}

// writer encodes elements in Implicit or Explicit VR Little Endian, sequences and items of defined length.
type writer struct {
	explicit bool
	b        []byte
}

func newWriter(dst []byte, transferSyntaxUID string) (*writer, error) {
	switch dicomuid.Trim(transferSyntaxUID) {
	case dicomuid.ImplicitVRLittleEndian:
		return &writer{b: dst}, nil
	case dicomuid.ExplicitVRLittleEndian:
		return &writer{explicit: true, b: dst}, nil
	}
	return nil, fmt.Errorf("%w: %s", ErrTransferSyntax, transferSyntaxUID)
}

func (w *writer) header(tag uint32, vr string, n int) {
	w.b = binary.LittleEndian.AppendUint16(w.b, uint16(tag>>16))
	w.b = binary.LittleEndian.AppendUint16(w.b, uint16(tag))
	switch {
	case !w.explicit:
		w.b = binary.LittleEndian.AppendUint32(w.b, uint32(n))
	case vr == "SQ":
		w.b = append(w.b, 'S', 'Q', 0, 0)
		w.b = binary.LittleEndian.AppendUint32(w.b, uint32(n))
	default:
		w.b = append(w.b, vr[0], vr[1])
		w.b = binary.LittleEndian.AppendUint16(w.b, uint16(n))
	}
}

// uid writes a UI value, padded with a NUL to even length.
func (w *writer) uid(tag uint32, v string) {
	n := len(v) + len(v)&1
	w.header(tag, "UI", n)
	w.b = append(w.b, v...)
	if len(v)&1 == 1 {
		w.b = append(w.b, 0)
	}
}

func (w *writer) us(tag uint32, v uint16) {
	w.header(tag, "US", 2)
	w.b = binary.LittleEndian.AppendUint16(w.b, v)
}

func (w *writer) ref(r Ref) {
	w.uid(tagReferencedSOPClass, r.SOPClassUID)
	w.uid(tagReferencedSOPInstance, r.SOPInstanceUID)
}

// sequence writes n items, each encoded by item, with their lengths filled in once written.
func (w *writer) sequence(tag uint32, n int, item func(i int, w *writer)) {
	w.header(tag, "SQ", 0)
	seqLen := len(w.b) - 4
	start := len(w.b)
	for i := range n {
		w.b = append(w.b, 0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0)
		itemLen := len(w.b) - 4
		itemStart := len(w.b)
		item(i, w)
		binary.LittleEndian.PutUint32(w.b[itemLen:], uint32(len(w.b)-itemStart))
	}
	binary.LittleEndian.PutUint32(w.b[seqLen:], uint32(len(w.b)-start))
}
