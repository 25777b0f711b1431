package commitment

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/dicom-ingest/dicom-ingest/shared/dataset"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
)

// maxUI is the longest UI value (64 characters, even already).
const maxUI = 64

// ParseRequest reads the Action Information of a Storage Commitment N-ACTION-RQ from r, encoded in
// transferSyntaxUID (Implicit or Explicit VR Little Endian), with the module's one element reader and its
// limits. It keeps the Transaction UID (0008,1195) and the Referenced SOP Sequence (0008,1199); the Storage
// Media File-Set ID and UID (0088,0130), (0088,0140), where it is allowed to carry them, and anything else are
// read past and ignored.
//
// A data set that is not a valid request fails with the dimse.Status to answer: 0115 (invalid argument value)
// for one that cannot be read (the reader's verdict: a repeated element too, two Referenced SOP Sequences say,
// which are not one list to merge), or has no valid Transaction UID, no or an empty Referenced SOP Sequence, or
// an item without a valid Referenced SOP Class and Instance UID; 0213 (resource limitation) past MaxRefs or the
// reader's limits. A failure of r itself (the association broke) is returned wrapped, as it is. Elements out of
// tag order (PS3.5 §7.1) but not repeated are read as if in order: what is kept is looked up by tag and level,
// never by position.
func ParseRequest(r io.Reader, transferSyntaxUID string) (*Request, error) {
	p, err := parse(r, transferSyntaxUID)
	if err != nil {
		return nil, err
	}
	switch {
	case p.txn == "":
		return nil, invalid("no Transaction UID (0008,1195)")
	case !p.seen[tagReferencedSOPSequence]:
		return nil, invalid("no Referenced SOP Sequence (0008,1199)")
	case len(p.items[tagReferencedSOPSequence]) == 0:
		return nil, invalid("empty Referenced SOP Sequence (0008,1199)")
	}
	req := &Request{TransactionUID: p.txn, Refs: make([]Ref, 0, len(p.items[tagReferencedSOPSequence]))}
	for _, it := range p.items[tagReferencedSOPSequence] {
		req.Refs = append(req.Refs, it.Ref)
	}
	return req, nil
}

// ParseResult reads the Event Information of a Storage Commitment N-EVENT-REPORT-RQ (what a requesting AE
// receives), with the rules of ParseRequest: a valid Transaction UID, items with valid UIDs, and a Failure
// Reason in each item of the Failed SOP Sequence (0008,1198).
func ParseResult(r io.Reader, transferSyntaxUID string) (*Result, error) {
	p, err := parse(r, transferSyntaxUID)
	if err != nil {
		return nil, err
	}
	if p.txn == "" {
		return nil, invalid("no Transaction UID (0008,1195)")
	}
	res := &Result{TransactionUID: p.txn, Committed: []Ref{}, Failed: []Failure{}}
	for _, it := range p.items[tagReferencedSOPSequence] {
		res.Committed = append(res.Committed, it.Ref)
	}
	for _, it := range p.items[tagFailedSOPSequence] {
		if !it.hasReason {
			return nil, invalid("Failed SOP Sequence item without a Failure Reason (0008,1197)")
		}
		res.Failed = append(res.Failed, Failure{Ref: it.Ref, Reason: it.reason})
	}
	return res, nil
}

func invalid(why string) error {
	return dimse.Status{Code: dimse.StatusInvalidArgumentValue, Comment: clip(why)}
}

// item is one item of a Referenced or Failed SOP Sequence as read.
type item struct {
	Ref
	reason    uint16
	hasReason bool
}

// parsed is what parse keeps of a data set.
type parsed struct {
	txn   string
	seen  map[uint32]bool
	items map[uint32][]item
}

// parse walks the data set token by token. Only values it keeps are captured; every other value is skipped
// by the reader, sequences and items of any nesting included.
func parse(r io.Reader, transferSyntaxUID string) (*parsed, error) {
	switch dicomuid.Trim(transferSyntaxUID) {
	case dicomuid.ImplicitVRLittleEndian, dicomuid.ExplicitVRLittleEndian:
	default:
		return nil, fmt.Errorf("%w: %s", ErrTransferSyntax, transferSyntaxUID)
	}
	d := dataset.NewDecoder(bufio.NewReaderSize(r, 4096), transferSyntaxUID)
	p := &parsed{seen: map[uint32]bool{}, items: map[uint32][]item{}}
	var (
		open    []uint32 // sequences (and fragment lists) open, outermost first
		cur     *item    // the item being read, in a top-level Referenced or Failed SOP Sequence
		buf     [maxUI]byte
		target  *string // where the captured UI value goes
		reason  bool    // the captured value is the Failure Reason
		refs    int
		txnSeen bool
	)
	keep := func(e dataset.Element, dst *string) error {
		if e.Length > maxUI {
			return invalid(fmt.Sprintf("%s longer than a UID", dataset.TagString(e.Tag)))
		}
		if e.Length > 0 {
			target, reason = dst, false
			d.Capture(buf[:e.Length])
		}
		return nil
	}
	for {
		k, err := d.Next()
		switch k {
		case dataset.KindError:
			var verdict *dataset.Error
			switch {
			case errors.As(err, &verdict) && errors.Is(err, dataset.ErrLimit):
				return nil, dimse.Status{Code: dimse.StatusResourceLimitation, Comment: "data set exceeds the reader's limits"}
			case errors.As(err, &verdict):
				return nil, invalid(verdict.Error())
			}
			return nil, fmt.Errorf("commitment: read data set: %w", err)
		case dataset.KindEnd:
			if txnSeen && p.txn == "" {
				return nil, invalid("Transaction UID (0008,1195) is not a valid UID")
			}
			return p, nil
		case dataset.KindElement:
			e := d.Element()
			if e.Sequence || e.Encapsulated {
				open = append(open, e.Tag)
				if len(open) == 1 {
					p.seen[e.Tag] = true
				}
				continue
			}
			switch {
			case len(open) == 0 && e.Tag == tagTransactionUID && !txnSeen:
				txnSeen = true
				if err := keep(e, &p.txn); err != nil {
					return nil, err
				}
			case len(open) == 0 && (e.Tag == tagReferencedSOPSequence || e.Tag == tagFailedSOPSequence):
				return nil, invalid(fmt.Sprintf("%s is not a sequence", dataset.TagString(e.Tag)))
			case cur != nil && len(open) == 1 && e.Tag == tagReferencedSOPClass:
				if err := keep(e, &cur.SOPClassUID); err != nil {
					return nil, err
				}
			case cur != nil && len(open) == 1 && e.Tag == tagReferencedSOPInstance:
				if err := keep(e, &cur.SOPInstanceUID); err != nil {
					return nil, err
				}
			case cur != nil && len(open) == 1 && e.Tag == tagFailureReason:
				if e.Length != 2 {
					return nil, invalid("Failure Reason (0008,1197) is not one US value")
				}
				target, reason = nil, true
				d.Capture(buf[:2])
			}
		case dataset.KindValue:
			switch {
			case reason:
				cur.reason, cur.hasReason = binary.LittleEndian.Uint16(buf[:2]), true
			case target != nil:
				*target = trimUID(string(buf[:d.Element().Length]))
			}
			target, reason = nil, false
		case dataset.KindItem:
			if len(open) == 1 && (open[0] == tagReferencedSOPSequence || open[0] == tagFailedSOPSequence) {
				if refs++; refs > MaxRefs {
					return nil, dimse.Status{Code: dimse.StatusResourceLimitation, Comment: fmt.Sprintf("more than %d referenced instances", MaxRefs)}
				}
				cur = &item{}
			}
		case dataset.KindItemEnd:
			if cur != nil && len(open) == 1 {
				if !dicomuid.ValidUID(cur.SOPClassUID) || !dicomuid.ValidUID(cur.SOPInstanceUID) {
					return nil, invalid(fmt.Sprintf("item %d of %s: no valid referenced UIDs", len(p.items[open[0]])+1, dataset.TagString(open[0])))
				}
				p.items[open[0]] = append(p.items[open[0]], *cur)
				cur = nil
			}
		case dataset.KindSequenceEnd:
			if len(open) > 0 {
				open = open[:len(open)-1]
			}
		}
	}
}

// trimUID drops a UI value's padding; a value that is then not a valid UID is dropped whole.
func trimUID(s string) string {
	s = strings.TrimRight(s, "\x00 ")
	if !dicomuid.ValidUID(s) {
		return ""
	}
	return s
}

// clip keeps a status comment within the 64 characters of (0000,0902).
func clip(s string) string {
	if len(s) > dimse.MaxCommentLen {
		return s[:dimse.MaxCommentLen]
	}
	return s
}
