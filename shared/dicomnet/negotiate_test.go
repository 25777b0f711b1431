package dicomnet

import (
	"bytes"
	"slices"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/pdu"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
	"github.com/google/go-cmp/cmp"
)

func TestNegotiateContexts(t *testing.T) {
	const (
		ct   = dicomuid.CTImageStorage
		impl = dicomuid.ImplicitVRLittleEndian
		expl = dicomuid.ExplicitVRLittleEndian
		be   = dicomuid.ExplicitVRBigEndian
		jpeg = dicomuid.JPEGBaseline8Bit
		j2k  = dicomuid.JPEG2000
		rle  = dicomuid.RLELossless
		defl = dicomuid.DeflatedExplicitVRLittleEndian
		jls  = "1.2.840.10008.1.2.4.80"  // JPEG-LS Lossless
		mpeg = "1.2.840.10008.1.2.4.100" // MPEG2 Main Profile / Main Level
		jpip = "1.2.840.10008.1.2.4.94"  // JPIP Referenced
		jxlr = "1.2.840.10008.1.2.4.111" // JPEG XL JPEG Recompression
	)
	tests := []struct {
		name     string
		abstract string
		ts       []string
		id       byte
		acceptBE bool
		result   byte
		chosen   string
	}{
		{"verification", dicomuid.Verification, []string{impl}, 1, false, 0, impl},
		// A C-ECHO is answered by us: a little endian syntax, never the
		// compressed one a storage context keeps.
		{"verification prefers explicit", dicomuid.Verification, []string{jpeg, impl, expl}, 1, false, 0, expl},
		{"verification, compressed only", dicomuid.Verification, []string{jpeg}, 1, false, 4, impl},
		{"lossless compressed preferred", ct, []string{impl, expl, rle}, 1, false, 0, rle},
		{"first lossless compressed as offered", ct, []string{expl, jls, rle}, 1, false, 0, jls},
		// A syntax that may be lossy lets the sender choose the quality: a
		// lossless compressed one goes first.
		{"lossless over lossy", ct, []string{jpeg, j2k, rle}, 1, false, 0, rle},
		{"lossless compressed wherever listed", ct, []string{impl, jpeg, expl, jls}, 1, false, 0, jls},
		// Else the proposer's first decides: it lists first what it holds
		// or wants to send.
		{"uncompressed listed first", ct, []string{expl, jpeg}, 1, false, 0, expl},
		{"uncompressed first, explicit taken", ct, []string{impl, jpeg, expl}, 1, false, 0, expl},
		{"lossy listed first", ct, []string{jpeg, expl, impl}, 1, false, 0, jpeg},
		{"a recompressed JPEG listed first", ct, []string{jxlr, expl}, 1, false, 0, jxlr},
		{"explicit before a recompressed JPEG", ct, []string{expl, jxlr}, 1, false, 0, expl},
		{"implicit before lossy", ct, []string{impl, j2k}, 1, false, 0, impl},
		{"big endian before lossy", ct, []string{be, jpeg}, 1, true, 0, be},
		{"big endian not accepted, lossy after it", ct, []string{be, jpeg}, 1, false, 0, jpeg},
		{"lossy when nothing else", ct, []string{jpeg}, 1, false, 0, jpeg},
		{"first lossy as offered", ct, []string{j2k, jpeg}, 1, false, 0, j2k},
		{"video", "1.2.840.10008.5.1.4.1.1.77.1.1.1", []string{mpeg}, 1, false, 0, mpeg}, // Video Endoscopic Image Storage
		{"lossy before referenced", ct, []string{j2k, jpip}, 1, false, 0, j2k},
		{"referenced listed first", ct, []string{jpip, expl}, 1, false, 0, jpip},
		{"referenced when nothing else", ct, []string{jpip}, 1, false, 0, jpip},
		{"deflated counts as compressed", ct, []string{expl, defl}, 1, false, 0, defl},
		{"explicit over implicit", ct, []string{impl, expl}, 1, false, 0, expl},
		{"implicit only", ct, []string{impl}, 1, false, 0, impl},
		{"HTJ2K", ct, []string{dicomuid.HTJ2KLossless}, 1, false, 0, dicomuid.HTJ2KLossless},
		{"trailing NUL in TS", ct, []string{expl + "\x00"}, 1, false, 0, expl},
		{"big endian not configured", ct, []string{be}, 1, false, 4, impl},
		{"big endian configured", ct, []string{be}, 1, true, 0, be},
		{"big endian last", ct, []string{be, impl}, 1, true, 0, impl},
		{"private TS", ct, []string{"1.2.3.4.5.6.7"}, 1, false, 4, impl},
		{"MIME TS", ct, []string{"1.2.840.10008.1.2.6.1"}, 1, false, 4, impl},
		{"no TS", ct, nil, 1, false, 4, impl},
		{"storage commitment", dicomuid.StorageCommitment, []string{impl}, 1, false, 3, impl},
		{"query/retrieve", "1.2.840.10008.5.1.4.1.2.2.1", []string{impl}, 1, false, 3, impl},
		{"query class under the storage root", "1.2.840.10008.5.1.4.1.1.200.4", []string{impl}, 1, false, 3, impl},
		{"empty abstract syntax", "", []string{impl}, 1, false, 3, impl},
		{"id 255", ct, []string{impl}, 255, false, 0, impl},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rq := &pdu.AssociateRQ{PresentationContexts: []pdu.PresentationContextRQ{{ID: tc.id, AbstractSyntax: tc.abstract, TransferSyntaxes: tc.ts}}}
			n := Negotiate(rq, NegotiationOptions{AcceptExplicitBigEndian: tc.acceptBE})
			want := []pdu.PresentationContextAC{{ID: tc.id, Result: tc.result, TransferSyntax: tc.chosen}}
			if d := cmp.Diff(want, n.Results); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
			if (len(n.Accepted) == 1) != (tc.result == 0) {
				t.Errorf("accepted %+v", n.Accepted)
			}
		})
	}
}

func TestNegotiateOrderRolesAsync(t *testing.T) {
	ct, mr := dicomuid.CTImageStorage, dicomuid.MRImageStorage
	impl := dicomuid.ImplicitVRLittleEndian
	rq := &pdu.AssociateRQ{
		PresentationContexts: []pdu.PresentationContextRQ{
			{ID: 5, AbstractSyntax: mr, TransferSyntaxes: []string{impl}},
			{ID: 1, AbstractSyntax: ct, TransferSyntaxes: []string{impl}},
			{ID: 3, AbstractSyntax: dicomuid.StorageCommitment, TransferSyntaxes: []string{impl}},
		},
		UserInformation: pdu.UserInformation{
			AsyncOperations: &pdu.AsyncOperationsWindow{Invoked: 5, Performed: 5},
			RoleSelections: []pdu.RoleSelection{
				{SOPClassUID: ct, SCU: 1, SCP: 1},                          // SCP role for the requestor is not granted
				{SOPClassUID: mr, SCU: 0, SCP: 1},                          // no role left: context rejected
				{SOPClassUID: dicomuid.StorageCommitment, SCU: 1, SCP: 1},  // rejected context: not answered
				{SOPClassUID: "1.2.840.10008.5.1.4.1.1.7", SCU: 1, SCP: 0}, // not proposed: not answered
				{SOPClassUID: ct, SCU: 1, SCP: 0},                          // second item for ct: not answered twice
			},
		},
	}
	n := Negotiate(rq, NegotiationOptions{})
	wantResults := []pdu.PresentationContextAC{{ID: 1, Result: 0, TransferSyntax: impl}, {ID: 3, Result: 3, TransferSyntax: impl}, {ID: 5, Result: 1, TransferSyntax: impl}}
	if d := cmp.Diff(wantResults, n.Results); d != "" {
		t.Errorf("results (-want +got):\n%s", d)
	}
	wantRoles := []pdu.RoleSelection{{SOPClassUID: ct, SCU: 1, SCP: 0}}
	if d := cmp.Diff(wantRoles, n.Roles); d != "" {
		t.Errorf("roles (-want +got):\n%s", d)
	}
	if n.Async == nil || *n.Async != (pdu.AsyncOperationsWindow{Invoked: 1, Performed: 1}) {
		t.Errorf("async %+v", n.Async)
	}
	if n := Negotiate(&pdu.AssociateRQ{}, NegotiationOptions{}); n.Async != nil || len(n.Results) != 0 {
		t.Errorf("empty RQ: %+v", n)
	}
}

// TestNegotiateRoleSelectionTwice: items proposed twice for one SOP class (PS3.7 D.3.3.4 allows one) are answered
// once, and the SCU role is kept only if every item proposed it: the first one no longer decides alone. A class
// left without the SCU role has all its contexts rejected (user-rejection), and no item answered.
func TestNegotiateRoleSelectionTwice(t *testing.T) {
	ct, impl := dicomuid.CTImageStorage, dicomuid.ImplicitVRLittleEndian
	tests := []struct {
		name string
		scu  []byte // of each item, in order
		keep bool
	}{
		{"the same twice", []byte{1, 1}, true},
		{"SCU, then not", []byte{1, 0}, false},
		{"not, then SCU", []byte{0, 1}, false},
		{"three, one not", []byte{1, 1, 0}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rq := &pdu.AssociateRQ{PresentationContexts: []pdu.PresentationContextRQ{
				{ID: 1, AbstractSyntax: ct, TransferSyntaxes: []string{impl}},
				{ID: 3, AbstractSyntax: ct, TransferSyntaxes: []string{dicomuid.ExplicitVRLittleEndian}},
			}}
			for _, scu := range tc.scu {
				rq.UserInformation.RoleSelections = append(rq.UserInformation.RoleSelections, pdu.RoleSelection{SOPClassUID: ct, SCU: scu, SCP: 1})
			}
			n := Negotiate(rq, NegotiationOptions{})
			var wantRoles []pdu.RoleSelection
			wantResult, wantAccepted := byte(pdu.ResultUserRejection), 0
			if tc.keep {
				wantRoles = []pdu.RoleSelection{{SOPClassUID: ct, SCU: 1, SCP: 0}}
				wantResult, wantAccepted = pdu.ResultAcceptance, 2
			}
			if d := cmp.Diff(wantRoles, n.Roles); d != "" {
				t.Errorf("roles (-want +got):\n%s", d)
			}
			for _, r := range n.Results {
				if r.Result != wantResult {
					t.Errorf("context %d: result %d, want %d", r.ID, r.Result, wantResult)
				}
			}
			if len(n.Accepted) != wantAccepted {
				t.Fatalf("accepted %+v", n.Accepted)
			}
			for _, pc := range n.Accepted {
				if !pc.RequestorSCU || pc.RequestorSCP {
					t.Errorf("context %d: requestor SCU %v, SCP %v", pc.ID, pc.RequestorSCU, pc.RequestorSCP)
				}
			}
		})
	}
}

// TestNegotiateStorageCommitment: with StorageCommitment the class is accepted in a syntax we read ourselves
// (Explicit, else Implicit VR Little Endian) with the requestor as SCU; the SCP role it may ask for in role
// selection is turned down, so we stay the class's SCP (the side that sends N-EVENT-REPORT).
func TestNegotiateStorageCommitment(t *testing.T) {
	const (
		sc   = dicomuid.StorageCommitment
		impl = dicomuid.ImplicitVRLittleEndian
		expl = dicomuid.ExplicitVRLittleEndian
	)
	tests := []struct {
		name       string
		ts         []string
		role       *pdu.RoleSelection
		result     byte
		chosen     string
		wantRoles  []pdu.RoleSelection
		scu, scp   bool
		acceptedAs int
	}{
		{"implicit", []string{impl}, nil, 0, impl, nil, true, false, 1},
		{"explicit preferred", []string{impl, expl}, nil, 0, expl, nil, true, false, 1},
		{"compressed refused", []string{dicomuid.JPEGBaseline8Bit, dicomuid.DeflatedExplicitVRLittleEndian}, nil, 4, impl, nil, false, false, 0},
		{"big endian refused", []string{dicomuid.ExplicitVRBigEndian}, nil, 4, impl, nil, false, false, 0},
		{"requestor SCU by role selection", []string{impl}, &pdu.RoleSelection{SOPClassUID: sc, SCU: 1, SCP: 0}, 0, impl,
			[]pdu.RoleSelection{{SOPClassUID: sc, SCU: 1, SCP: 0}}, true, false, 1},
		{"requestor asks both roles", []string{impl}, &pdu.RoleSelection{SOPClassUID: sc, SCU: 1, SCP: 1}, 0, impl,
			[]pdu.RoleSelection{{SOPClassUID: sc, SCU: 1, SCP: 0}}, true, false, 1},
		{"requestor asks SCP only: no role left", []string{impl}, &pdu.RoleSelection{SOPClassUID: sc, SCU: 0, SCP: 1}, 1, impl,
			nil, false, false, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rq := &pdu.AssociateRQ{PresentationContexts: []pdu.PresentationContextRQ{{ID: 1, AbstractSyntax: sc, TransferSyntaxes: tc.ts}}}
			if tc.role != nil {
				rq.UserInformation.RoleSelections = []pdu.RoleSelection{*tc.role}
			}
			if n := Negotiate(rq, NegotiationOptions{}); n.Results[0].Result != 3 {
				t.Errorf("without StorageCommitment: result %d, want 3", n.Results[0].Result)
			}
			n := Negotiate(rq, NegotiationOptions{StorageCommitment: true})
			if d := cmp.Diff([]pdu.PresentationContextAC{{ID: 1, Result: tc.result, TransferSyntax: tc.chosen}}, n.Results); d != "" {
				t.Errorf("results (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.wantRoles, n.Roles); d != "" {
				t.Errorf("roles (-want +got):\n%s", d)
			}
			if len(n.Accepted) != tc.acceptedAs {
				t.Fatalf("accepted %+v", n.Accepted)
			}
			if tc.acceptedAs == 1 && (n.Accepted[0].RequestorSCU != tc.scu || n.Accepted[0].RequestorSCP != tc.scp) {
				t.Errorf("requestor roles %+v, want SCU %v SCP %v", n.Accepted[0], tc.scu, tc.scp)
			}
		})
	}
}

func TestAppendMessageFragments(t *testing.T) {
	data := make([]byte, 1001)
	for i := range data {
		data[i] = byte(i)
	}
	for _, peerMax := range []uint32{0, 8, 9, 16, 100, 1006, 1007, 4096} {
		b := appendMessage(nil, 7, pdu.ControlCommand, data, peerMax)
		var got []byte
		for len(b) > 0 {
			p, err := pdu.Read(bytesReader(b), 1<<20)
			if err != nil {
				t.Fatalf("peer max %d: %v", peerMax, err)
			}
			h, _ := pdu.ParseHeader(b)
			if peerMax != 0 && h.Length > peerMax {
				t.Errorf("peer max %d: PDU of %d", peerMax, h.Length)
			}
			b = b[pdu.HeaderLen+int(h.Length):]
			for _, v := range p.(*pdu.PDataTF).PDVs {
				if v.ContextID != 7 || !v.IsCommand() {
					t.Errorf("PDV header %+v", v)
				}
				if v.IsLast() != (len(b) == 0) {
					t.Errorf("peer max %d: last flag %v with %d bytes left", peerMax, v.IsLast(), len(b))
				}
				if !v.IsLast() && len(v.Data)%2 != 0 {
					t.Errorf("peer max %d: odd fragment %d", peerMax, len(v.Data))
				}
				got = append(got, v.Data...)
			}
		}
		if !cmp.Equal(got, data) {
			t.Errorf("peer max %d: reassembled data differs", peerMax)
		}
	}
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

// FuzzNegotiate: whatever A-ASSOCIATE-RQ a peer sends, Negotiate answers each proposed context once, never accepts
// a context whose class the requestor's role selection left without the SCU role, answers each role item once and
// only SCU 1 SCP 0 for a class it accepted; and the summary the accepted line and the audit record are made of
// counts every context and lists a role-rejected class (result 1) in its own bounded list.
func FuzzNegotiate(f *testing.F) {
	rq := &pdu.AssociateRQ{ProtocolVersion: 1, CalledAE: "ANY", CallingAE: "SCU", ApplicationContext: dicomuid.ApplicationContext,
		PresentationContexts: []pdu.PresentationContextRQ{
			{ID: 1, AbstractSyntax: dicomuid.Verification, TransferSyntaxes: []string{dicomuid.ImplicitVRLittleEndian}},
			{ID: 3, AbstractSyntax: dicomuid.CTImageStorage, TransferSyntaxes: []string{dicomuid.ExplicitVRLittleEndian}},
			{ID: 5, AbstractSyntax: dicomuid.MRImageStorage, TransferSyntaxes: []string{dicomuid.ImplicitVRLittleEndian}},
			{ID: 7, AbstractSyntax: dicomuid.StorageCommitment, TransferSyntaxes: []string{dicomuid.ImplicitVRLittleEndian}},
			{ID: 9, AbstractSyntax: "1.2.840.10008.5.1.4.1.2.1.3", TransferSyntaxes: []string{dicomuid.ImplicitVRLittleEndian}},
		},
		UserInformation: pdu.UserInformation{MaxPDULength: 16384, ImplementationClassUID: "1.2.3",
			RoleSelections: []pdu.RoleSelection{{SOPClassUID: dicomuid.CTImageStorage, SCU: 1, SCP: 1},
				{SOPClassUID: dicomuid.MRImageStorage, SCP: 1}, {SOPClassUID: dicomuid.CTImageStorage, SCU: 0}}}}
	if b, err := pdu.Encode(rq); err == nil {
		f.Add(b[pdu.HeaderLen:], true)
	}
	f.Fuzz(func(t *testing.T, body []byte, commitment bool) {
		rq, err := pdu.DecodeAssociateRQ(body)
		if err != nil {
			return
		}
		n := Negotiate(rq, NegotiationOptions{StorageCommitment: commitment})
		if len(n.Results) != len(rq.PresentationContexts) {
			t.Fatalf("%d results for %d contexts", len(n.Results), len(rq.PresentationContexts))
		}
		scuKept := map[string]bool{}
		for _, r := range rq.UserInformation.RoleSelections {
			kept, seen := scuKept[r.SOPClassUID]
			scuKept[r.SOPClassUID] = (kept || !seen) && r.SCU != 0
		}
		accepted := map[string]bool{}
		for _, pc := range n.Accepted {
			if kept, asked := scuKept[pc.AbstractSyntax]; asked && !kept {
				t.Fatalf("context %d accepted, its class left without the SCU role", pc.ID)
			}
			if !pc.RequestorSCU || pc.RequestorSCP {
				t.Fatalf("context %d: requestor SCU %v SCP %v", pc.ID, pc.RequestorSCU, pc.RequestorSCP)
			}
			accepted[pc.AbstractSyntax] = true
		}
		answered := map[string]bool{}
		for _, r := range n.Roles {
			if answered[r.SOPClassUID] || !accepted[r.SOPClassUID] || !scuKept[r.SOPClassUID] || r.SCU != 1 || r.SCP != 0 {
				t.Fatalf("role answer %+v (answered before %v, class accepted %v)", r, answered[r.SOPClassUID], accepted[r.SOPClassUID])
			}
			answered[r.SOPClassUID] = true
		}
		s := summarizeContexts(rq.PresentationContexts, n.Results)
		if s.Accepted != len(n.Accepted) || s.Accepted+s.Refused != len(n.Results) {
			t.Fatalf("summary %d accepted, %d refused; negotiation %d accepted of %d", s.Accepted, s.Refused, len(n.Accepted), len(n.Results))
		}
		byID := map[byte]string{}
		for _, pc := range rq.PresentationContexts {
			byID[pc.ID] = pc.AbstractSyntax
		}
		for _, r := range n.Results {
			if r.Result == pdu.ResultUserRejection && s.MoreNoSCURoleAbstractSyntaxes == 0 &&
				!slices.Contains(s.NoSCURoleAbstractSyntaxes, printableASCII(byID[r.ID], maxImplementationClassUID)) {
				t.Fatalf("context %d rejected (1), its class not in the summary's %q", r.ID, s.NoSCURoleAbstractSyntaxes)
			}
		}
		for _, l := range [][]string{s.UnsupportedTransferSyntaxes, s.UnsupportedAbstractSyntaxes, s.NoSCURoleAbstractSyntaxes} {
			if len(l) > maxRefusedUIDs {
				t.Fatalf("list of %d UIDs", len(l))
			}
		}
	})
}
