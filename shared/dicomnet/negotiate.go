package dicomnet

import (
	"slices"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/pdu"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
)

// NegotiationOptions is the acceptor's presentation-context policy.
type NegotiationOptions struct {
	// AcceptExplicitBigEndian accepts the retired Explicit VR Big Endian syntax (lowest preference).
	AcceptExplicitBigEndian bool
	// SupportsAbstractSyntax overrides which SOP classes are accepted; nil accepts Verification and every
	// storage SOP class (dicomuid.IsStorageSOPClass), and Storage Commitment Push Model with StorageCommitment.
	SupportsAbstractSyntax func(uid string) bool
	// StorageCommitment accepts the Storage Commitment Push Model SOP class (the requestor as SCU: it invokes
	// N-ACTION, we report with N-EVENT-REPORT).
	StorageCommitment bool
}

// AcceptedContext is a negotiated presentation context.
type AcceptedContext struct {
	ID             byte
	AbstractSyntax string
	TransferSyntax string
	// RequestorSCU and RequestorSCP are the roles the requestor holds for the context's SOP class: SCU alone
	// unless SCP/SCU role selection (PS3.7 D.3.3.4) agreed otherwise. A request is served only from a role held.
	RequestorSCU, RequestorSCP bool
}

// Negotiation is the result of Negotiate.
type Negotiation struct {
	// Results has one entry per proposed context, in ascending id order, each with a transfer syntax
	// sub-item (Implicit VR Little Endian when the context is rejected, whose value is then not significant).
	Results []pdu.PresentationContextAC
	// Accepted are the contexts with result 0, ascending by id.
	Accepted []AcceptedContext
	// Roles answers the role selection sub-items for SOP classes proposed in an accepted context.
	Roles []pdu.RoleSelection
	// Async is the answer to an asynchronous operations window sub-item (1/1), nil if none was proposed.
	Async *pdu.AsyncOperationsWindow
}

// Negotiate decides the presentation contexts of an A-ASSOCIATE-RQ. It is a pure function.
//
//   - Abstract syntax: Verification and storage SOP classes are supported; anything else gets result 3.
//   - Transfer syntax: among the proposed syntaxes we can store as received (every registered syntax except
//     MIME/XML/real-time video; Explicit VR Big Endian only with AcceptExplicitBigEndian), the first lossless
//     compressed, deflated or encapsulated one (dicomuid.Fidelity), wherever it is in the list; else the
//     proposer's first: an uncompressed one (then Explicit VR LE if proposed, else Implicit VR LE, else Big
//     Endian), or one that may be lossy, or a JPIP one, as the proposer prefers. A sender lists first what it
//     holds or wants to send: asking for a lossy syntax it listed after an uncompressed one would have it
//     compress at a quality it alone chooses, and refusing one it listed first would fail a sender that holds
//     a lossy object and cannot decompress it (DCMTK's storescu -xy +C). Unknown (e.g. private) syntaxes are
//     not accepted: without knowing the encoding we cannot check the data set or write a correct file meta.
//     None acceptable: result 4. Storage Commitment's and Verification's data sets are read and answered here,
//     not stored: Explicit VR LE, else Implicit VR LE, nothing else.
//   - Context ids are odd and unique: pdu.DecodeAssociateRQ refuses a request with any other (PS3.8 Table 9-13,
//     §7.1.1.13), and the server aborts it as an invalid PDU.
//   - Roles (54): role selection is per SOP class (PS3.7 D.3.3.4). The requestor keeps the SCU role for a class
//     if every item it sent for the class asked for it; the SCP role is never granted (we never take the SCU
//     role). A class whose items leave the requestor no role (SCU 0: SCP only, or SCU 0 and SCP 0, which is none of
//     the three role values PS3.7 D.3.3.4 allows) has its supported contexts rejected with result 1
//     (user-rejection): accepted, such a context could carry no request from the requestor, and each C-STORE
//     on it was answered 0211 after the sender had been told the context was accepted. Answering it without the
//     item instead would give the requestor the default SCU role, one it said it does not take. Items are
//     answered only for classes with an accepted context, once per class: SCU 1, SCP 0.
//   - Async operations window (53): answered 1/1 (no asynchronous operations) when proposed.
func Negotiate(rq *pdu.AssociateRQ, opt NegotiationOptions) Negotiation {
	var n Negotiation
	accepted := map[string]bool{}
	supports := opt.SupportsAbstractSyntax
	if supports == nil {
		supports = func(uid string) bool {
			return uid == dicomuid.Verification || dicomuid.IsStorageSOPClass(uid) ||
				opt.StorageCommitment && uid == dicomuid.StorageCommitment
		}
	}
	// PS3.7 D.3.3.4 allows one item per SOP class; a requestor may send more (one per presentation context of the
	// class), which may disagree. Each class keeps the SCU role only if every item of it proposed that role: never
	// a role one of them turned down, whichever came first.
	var classes []string
	scuKept := map[string]bool{}
	for _, r := range rq.UserInformation.RoleSelections {
		kept, seen := scuKept[r.SOPClassUID]
		if !seen {
			classes, kept = append(classes, r.SOPClassUID), true
		}
		scuKept[r.SOPClassUID] = kept && r.SCU != 0
	}
	for _, pc := range rq.PresentationContexts {
		res := pdu.PresentationContextAC{ID: pc.ID, TransferSyntax: dicomuid.ImplicitVRLittleEndian}
		switch kept, asked := scuKept[pc.AbstractSyntax]; {
		case pc.AbstractSyntax == "" || !supports(pc.AbstractSyntax):
			res.Result = pdu.ResultAbstractSyntaxNotSupported
		case asked && !kept:
			res.Result = pdu.ResultUserRejection // no role left to the requestor
		default:
			// What we store is kept in its sender's syntax; what we read and
			// answer ourselves (a C-ECHO, a commitment request) is in a
			// little endian one every implementation has.
			choose := chooseTransferSyntax
			if pc.AbstractSyntax == dicomuid.StorageCommitment || pc.AbstractSyntax == dicomuid.Verification {
				choose = chooseReadSyntax
			}
			ts, ok := choose(pc.TransferSyntaxes, opt.AcceptExplicitBigEndian)
			if !ok {
				res.Result = pdu.ResultTransferSyntaxesNotSupported
				break
			}
			res.Result = pdu.ResultAcceptance
			res.TransferSyntax = ts
			n.Accepted = append(n.Accepted, AcceptedContext{ID: pc.ID, AbstractSyntax: pc.AbstractSyntax, TransferSyntax: ts, RequestorSCU: true})
			accepted[pc.AbstractSyntax] = true
		}
		n.Results = append(n.Results, res)
	}
	slices.SortFunc(n.Results, func(a, b pdu.PresentationContextAC) int { return int(a.ID) - int(b.ID) })
	slices.SortFunc(n.Accepted, func(a, b AcceptedContext) int { return int(a.ID) - int(b.ID) })
	for _, uid := range classes {
		if accepted[uid] {
			n.Roles = append(n.Roles, pdu.RoleSelection{SOPClassUID: uid, SCU: 1, SCP: 0})
		}
	}
	if rq.UserInformation.AsyncOperations != nil {
		n.Async = &pdu.AsyncOperationsWindow{Invoked: 1, Performed: 1}
	}
	return n
}

// chooseTransferSyntax applies the preference order documented on Negotiate.
func chooseTransferSyntax(proposed []string, acceptBE bool) (string, bool) {
	const (
		rankNone = iota
		rankBE
		rankImplicit
		rankExplicit
	)
	first, uncompressed, rank := "", "", rankNone
	firstUncompressed := false
	for _, uid := range proposed {
		ts, ok := dicomuid.LookupTransferSyntax(uid)
		if !ok || !ts.Storable || ts.BigEndian && !acceptBE {
			continue
		}
		native := !ts.Compressed() && ts.Fidelity == dicomuid.Lossless
		switch {
		case ts.Fidelity == dicomuid.Lossless && !native:
			return ts.UID, true
		case first == "":
			first, firstUncompressed = ts.UID, native
		}
		r := rankNone
		switch {
		case !native:
		case ts.BigEndian:
			r = rankBE
		case ts.UID == dicomuid.ExplicitVRLittleEndian:
			r = rankExplicit
		case ts.UID == dicomuid.ImplicitVRLittleEndian:
			r = rankImplicit
		}
		if r > rank {
			uncompressed, rank = ts.UID, r
		}
	}
	if firstUncompressed {
		return uncompressed, true
	}
	return first, first != ""
}

// chooseReadSyntax picks the syntax of a data set we read and answer ourselves: Explicit VR Little Endian,
// else Implicit VR Little Endian (which every DICOM implementation supports).
func chooseReadSyntax(proposed []string, _ bool) (string, bool) {
	best := ""
	for _, uid := range proposed {
		switch dicomuid.Trim(uid) {
		case dicomuid.ExplicitVRLittleEndian:
			return dicomuid.ExplicitVRLittleEndian, true
		case dicomuid.ImplicitVRLittleEndian:
			best = dicomuid.ImplicitVRLittleEndian
		}
	}
	return best, best != ""
}
