package dicomnet

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/dicom-ingest/dicom-ingest/shared/accesscontrol"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/pdu"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
	"github.com/dicom-ingest/dicom-ingest/shared/tlstrust"
)

// This file is the A-ASSOCIATE exchange of the acceptor: the service-provider checks of AE-6, the local user's
// decision in Sta3 (AE title, limits, the association policy, presentation context negotiation) and the PDUs
// that answer the request.

// associateAcceptable is the service-provider check of AE-6. When it refuses, a.rj is the A-ASSOCIATE-RJ to send.
func (a *association) associateAcceptable() bool {
	rq := a.rq
	switch {
	case rq == nil:
		a.rj = RejectNoReason
	case rq.ProtocolVersion&1 == 0:
		a.rj = RejectProtocolVersion
	case rq.ApplicationContext != dicomuid.ApplicationContext:
		a.rj = RejectApplicationContext
	default:
		return true
	}
	if rq != nil {
		a.info.CallingAE, a.info.CalledAE, _, _ = peerAETitles(rq)
	}
	return false
}

// decide is the local user's answer to an A-ASSOCIATE indication (Sta3): it returns Evt7 (accept, with the
// A-ASSOCIATE-AC prepared) or Evt8 (reject, with a.rj set).
func (a *association) decide() rxEvent {
	s, rq := a.srv, a.rq
	var callingErr, calledErr error
	a.info.CallingAE, a.info.CalledAE, callingErr, calledErr = peerAETitles(rq)
	a.info.PeerImplementationClassUID, a.info.PeerImplementationVersionName = peerImplementation(&rq.UserInformation)
	a.info.PeerMaxPDULength = rq.UserInformation.MaxPDULength
	a.info.TLS = a.tlsState()
	if c := a.info.PeerCertificate(); c != nil {
		n := tlstrust.NameOf(c)
		a.info.PeerCertificateName = &n
	}
	a.log = a.log.With("calling_ae", a.info.CallingAE, "called_ae", a.info.CalledAE)

	var rj *RejectError
	switch {
	case s.inShutdown.Load():
		rj = RejectTemporaryCongestion
	case calledErr != nil:
		a.rejectBy = fmt.Errorf("%w (%w)", RejectCalledAENotRecognized, calledErr)
		rj = RejectCalledAENotRecognized
	case s.AETitle != "" && a.info.CalledAE != trimAE(s.AETitle):
		a.rejectBy = fmt.Errorf("%w (%w)", RejectCalledAENotRecognized, notOurAETitle(a.info.CalledAE, trimAE(s.AETitle)))
		rj = RejectCalledAENotRecognized
	case callingErr != nil:
		// Not an AE title, whatever the policy's list: kept with '?', it could read as one that is listed.
		a.rejectBy = fmt.Errorf("%w (%w)", RejectCallingAENotRecognized, callingErr)
		rj = RejectCallingAENotRecognized
	case !s.reserveSlot(a):
		rj = RejectTooManyAssociations
	case s.Accept != nil:
		if err := s.Accept(a.ctx, &a.info); err != nil {
			a.rejectBy = err
			if !errors.As(err, &rj) || rj == nil {
				a.log.Info("dicomnet: association policy refused", "err", err)
				rj = RejectNoReason
			}
			s.releaseSlot(a)
		}
	}
	if rj != nil {
		return a.reject(rj)
	}
	n := Negotiate(rq, NegotiationOptions{AcceptExplicitBigEndian: s.AcceptExplicitBigEndian, StorageCommitment: s.Commitment != nil})
	for i := range n.Accepted {
		pc := n.Accepted[i]
		a.ctxs[pc.ID] = &pc
	}
	a.peerMax = rq.UserInformation.MaxPDULength
	a.contexts = summarizeContexts(rq.PresentationContexts, n.Results)
	ac := &pdu.AssociateAC{
		ProtocolVersion: pdu.ProtocolVersion, CalledAE: a.info.CalledAE, CallingAE: a.info.CallingAE, Echo: &rq.Echo,
		ApplicationContext: dicomuid.ApplicationContext, PresentationContexts: n.Results,
		UserInformation: pdu.UserInformation{MaxPDULength: s.maxPDU(), ImplementationClassUID: s.implClassUID(),
			ImplementationVersionName: s.implVersion(), AsyncOperations: n.Async, RoleSelections: n.Roles},
	}
	b, err := pdu.Encode(ac)
	if err != nil {
		s.releaseSlot(a)
		a.log.Error("dicomnet: encode A-ASSOCIATE-AC", "err", err)
		return a.reject(RejectNoReason)
	}
	a.ac = b
	a.accepted = true
	s.leaveUnassociated(a)
	a.releaseCharge() // from now on its memory counts under MaxAssociations
	return rxEvent{ev: evt7}
}

// maxRefusedUIDs bounds each list of a ContextSummary: enough to name what a PACS proposes in vain (often one
// syntax, or a few classes), while a peer's 128 contexts of many syntaxes each cannot fill a log line or a record.
const maxRefusedUIDs = 8

// ContextSummary is what an A-ASSOCIATE-AC answered to the presentation contexts proposed: how many it accepted
// and refused, and what it refused them for. The log line of the accepted association and its EventAccepted
// (hence the audit trail) are both made from it, so that whoever reads either can tell a PACS what to propose
// instead: without it a PACS that proposed only Explicit VR Big Endian showed as an association that accepted
// nothing and ended.
type ContextSummary struct {
	Accepted, Refused int
	// UnsupportedTransferSyntaxes are the transfer syntaxes proposed in the contexts refused for them (result
	// 4), UnsupportedAbstractSyntaxes the abstract syntaxes refused (result 3): SOP class and transfer syntax
	// UIDs as the peer sent them, each once, at most maxRefusedUIDs, cut and made printable as the peer's
	// implementation identifiers are. Nil when none was refused so.
	UnsupportedTransferSyntaxes, UnsupportedAbstractSyntaxes []string
	// NoSCURoleAbstractSyntaxes are the abstract syntaxes whose contexts were rejected by the user (result 1),
	// which Negotiate answers only to a SOP class whose SCP/SCU Role Selection items leave the requestor no SCU
	// role (a C-GET SCU's storage classes, proposed in the SCP role only), by the same rule. Nil when none.
	NoSCURoleAbstractSyntaxes []string
	// MoreTransferSyntaxes, MoreAbstractSyntaxes and MoreNoSCURoleAbstractSyntaxes count the UIDs of each
	// kind left out of its list by the bound.
	MoreTransferSyntaxes, MoreAbstractSyntaxes, MoreNoSCURoleAbstractSyntaxes int
}

// summarizeContexts is the ContextSummary of results, the answers to proposed.
func summarizeContexts(proposed []pdu.PresentationContextRQ, results []pdu.PresentationContextAC) ContextSummary {
	byID := make(map[byte]*pdu.PresentationContextRQ, len(proposed))
	for i := range proposed {
		byID[proposed[i].ID] = &proposed[i]
	}
	var s ContextSummary
	seen := map[string]bool{}
	add := func(list []string, more *int, kind, uid string) []string {
		uid = printableASCII(uid, maxImplementationClassUID)
		switch {
		case seen[kind+uid]:
		case len(list) == maxRefusedUIDs:
			*more++
		default:
			list = append(list, uid)
		}
		seen[kind+uid] = true
		return list
	}
	for _, r := range results {
		pc := byID[r.ID]
		switch {
		case pc == nil:
			continue
		case r.Result == pdu.ResultAcceptance:
			s.Accepted++
			continue
		}
		s.Refused++
		switch r.Result {
		case pdu.ResultTransferSyntaxesNotSupported:
			for _, ts := range pc.TransferSyntaxes {
				s.UnsupportedTransferSyntaxes = add(s.UnsupportedTransferSyntaxes, &s.MoreTransferSyntaxes, "t", ts)
			}
		case pdu.ResultAbstractSyntaxNotSupported:
			s.UnsupportedAbstractSyntaxes = add(s.UnsupportedAbstractSyntaxes, &s.MoreAbstractSyntaxes, "a", pc.AbstractSyntax)
		case pdu.ResultUserRejection:
			s.NoSCURoleAbstractSyntaxes = add(s.NoSCURoleAbstractSyntaxes, &s.MoreNoSCURoleAbstractSyntaxes, "r", pc.AbstractSyntax)
		}
	}
	return s
}

// logAttrs are s as attributes of the log line: the contexts accepted and, when some were refused, how many and
// the UIDs they were refused for.
func (s ContextSummary) logAttrs() []any {
	attrs := []any{"accepted", s.Accepted}
	if s.Refused == 0 {
		return attrs
	}
	attrs = append(attrs, "refused_contexts", s.Refused)
	if s.UnsupportedTransferSyntaxes != nil {
		attrs = append(attrs, "unsupported_transfer_syntaxes", s.UnsupportedTransferSyntaxes)
	}
	if s.MoreTransferSyntaxes > 0 {
		attrs = append(attrs, "unsupported_transfer_syntaxes_more", s.MoreTransferSyntaxes)
	}
	if s.UnsupportedAbstractSyntaxes != nil {
		attrs = append(attrs, "unsupported_abstract_syntaxes", s.UnsupportedAbstractSyntaxes)
	}
	if s.MoreAbstractSyntaxes > 0 {
		attrs = append(attrs, "unsupported_abstract_syntaxes_more", s.MoreAbstractSyntaxes)
	}
	if s.NoSCURoleAbstractSyntaxes != nil {
		attrs = append(attrs, "no_scu_role_abstract_syntaxes", s.NoSCURoleAbstractSyntaxes)
	}
	if s.MoreNoSCURoleAbstractSyntaxes > 0 {
		attrs = append(attrs, "no_scu_role_abstract_syntaxes_more", s.MoreNoSCURoleAbstractSyntaxes)
	}
	return attrs
}

// Bounds of a peer's implementation identifiers as we keep and log them: a UID is at most 64 characters (PS3.5
// 9.1; item 52's value "is structured as a UID as defined in PS3.5", PS3.7 D.3.3.2.1 and D.3.3.2.2), a version
// name "a string of 1 to 16 ISO 646:1990 (basic G0 set) characters" (item 55, D.3.3.2.3 and D.3.3.2.4).
const (
	maxImplementationClassUID    = 64
	maxImplementationVersionName = 16
)

// peerImplementation is the peer's Implementation Class UID and Version Name (items 52 and 55) as we keep and log
// them, on both sides: cut to their bounds, every byte outside printable ASCII (G0, which both are drawn from)
// replaced by '?', so a peer cannot put control characters or a 64 KiB item into our logs. A value out of bounds
// is not refused: PS3.7 D.3.3.2 has the identification serve to tell implementations apart "in the event of
// communication problems", nothing of the association depends on it, and refusing a peer that interoperates
// today over it would stop its images; the prefix kept still names the vendor's root.
func peerImplementation(u *pdu.UserInformation) (classUID, versionName string) {
	return printableASCII(u.ImplementationClassUID, maxImplementationClassUID),
		printableASCII(u.ImplementationVersionName, maxImplementationVersionName)
}

// maxAETitle bounds an AE title as we keep and log it, as the A-ASSOCIATE-RQ's 16-byte fields do
// (accesscontrol.MaxAETitleLength).
const maxAETitle = accesscontrol.MaxAETitleLength

// peerAETitles is the calling and called AE titles of rq as we keep, log and record them: padding trimmed, by the
// rule of peerImplementation (printableASCII); and why each as received is no AE title, nil when it is one. What
// an AE title is is the one rule every AE title is held to (accesscontrol.CheckAETitle: PS3.5 AE, no backslash,
// no control characters, not empty); decide refuses one that is not (the called one as not ours), so that
// 'CT\x01', kept as 'CT?', is not taken for a listed 'CT?', and 'A\B', which no allowlist can list, is refused
// as not one.
func peerAETitles(rq *pdu.AssociateRQ) (calling, called string, callingErr, calledErr error) {
	rawCalling, rawCalled := trimAE(rq.CallingAE), trimAE(rq.CalledAE)
	return printableASCII(rawCalling, maxAETitle), printableASCII(rawCalled, maxAETitle),
		accesscontrol.CheckAETitle(rawCalling), accesscontrol.CheckAETitle(rawCalled)
}

// printableASCII is s cut to n bytes, each outside 0x20-0x7E replaced by '?'.
func printableASCII(s string, n int) string {
	b := []byte(s[:min(len(s), n)])
	for i, c := range b {
		if c < 0x20 || c > 0x7E {
			b[i] = '?'
		}
	}
	return string(b)
}

// notOurAETitle is why a called AE title is refused: it names ours, which the sender's configuration has to call
// (the log line names the one called), and says when the two differ only in letter case, as AE titles are matched
// case-sensitively ("remote_ae" called for "REMOTE_AE" was refused naming neither).
func notOurAETitle(called, ours string) error {
	if strings.EqualFold(called, ours) {
		return fmt.Errorf("dicomnet: our AE title is %q, which differs only in letter case: AE titles are matched case-sensitively", ours)
	}
	return fmt.Errorf("dicomnet: our AE title is %q", ours)
}

// reject prepares the A-ASSOCIATE-RJ rj and returns Evt8.
func (a *association) reject(rj *RejectError) rxEvent {
	a.rj = rj
	attrs := rejectionAttrs(rj)
	if why := policyReason(a.rejectBy); why != "" {
		attrs = append(attrs, "why", why)
	}
	a.srv.rejectLog.log(a.log, slog.LevelInfo, "dicomnet: association rejected", attrs...)
	return rxEvent{ev: evt8}
}

// policyReason is what the association policy said beside the rejection it
// chose (Accept's fmt.Errorf("%w (%w)", rj, why)): which of the reasons a
// code stands for (01 01 03 for an AE title not allowed, from the wrong
// network or without its certificate), as the audit trail records it.
func policyReason(err error) string {
	m, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return ""
	}
	var why []string
	for _, e := range m.Unwrap() {
		if _, isRJ := e.(*RejectError); !isRJ && e != nil {
			why = append(why, e.Error())
		}
	}
	return strings.Join(why, "; ")
}

// rejectionAttrs are a rejection's log attributes: its codes, and in words
// what they mean, as the audit trail gives them.
func rejectionAttrs(rj *RejectError) []any {
	return []any{"result", rj.Result, "source", rj.Source, "reason", rj.Reason, "rejection", rj.words()}
}

func (a *association) sendAssociateAC() error { return a.write(a.ac) }

func (a *association) sendAssociateRJ() error {
	rj := a.rj
	if rj == nil {
		rj = RejectNoReason
	}
	return sendPDU(a.write, &pdu.AssociateRJ{Result: rj.Result, Source: rj.Source, Reason: rj.Reason})
}
