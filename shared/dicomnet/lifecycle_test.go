package dicomnet_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/dicom-ingest/dicom-ingest/shared/accesscontrol/aetitletest"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dicomnettest"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/pdu"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// TestLifecycleEventsAndLogs checks the event sequence of a normal association and that logs carry the
// association attributes but never data set content.
func TestLifecycleEventsAndLogs(t *testing.T) {
	rec := newRecorder()
	var logs testenv.LogBuffer
	srv := dicomnettest.NewServerT(t, &dicomnet.Server{
		Observer: rec,
		Logger:   slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Handler: dicomnet.HandlerFunc(func(ctx context.Context, req *dicomnet.CStoreRequest, r io.Reader) error {
			_, err := io.Copy(io.Discard, r)
			return err
		}),
	})
	ctx := context.Background()
	a, err := dicomnet.Dial(ctx, srv.Addr, storeCfg(0))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Echo(ctx); err != nil {
		t.Fatal(err)
	}
	secret := "\x10\x00\x10\x00PN\x0c\x00DOE^JOHN^QQQ" // (0010,0010) Patient's Name
	if st, err := a.Store(ctx, dicomuid.CTImageStorage, "1.2.3.9", "", strings.NewReader(secret)); err != nil || !st.IsSuccess() {
		t.Fatal(st, err)
	}
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, dicomnet.EventReleased)
	rec.mu.Lock()
	var types []dicomnet.EventType
	for _, ev := range rec.events {
		types = append(types, ev.Type)
		if ev.Association == nil || ev.Association.CallingAE != "SCU" || ev.Association.ID == "" {
			t.Errorf("event %s without association info: %+v", ev.Type, ev.Association)
		}
	}
	rec.mu.Unlock()
	want := []dicomnet.EventType{dicomnet.EventAccepted, dicomnet.EventEcho, dicomnet.EventStored, dicomnet.EventReleased}
	if len(types) != len(want) {
		t.Fatalf("events %v, want %v", types, want)
	}
	for i := range want {
		if types[i] != want[i] {
			t.Fatalf("events %v, want %v", types, want)
		}
	}
	out := logs.String()
	if strings.Contains(out, "DOE^JOHN") {
		t.Error("logs contain data set content")
	}
	for _, attr := range []string{`"assoc":`, `"calling_ae":"SCU"`, `"called_ae":"SCP"`, `"peer":"127.0.0.1:`} {
		if !strings.Contains(out, attr) {
			t.Errorf("logs lack %s:\n%s", attr, out)
		}
	}
}

// TestMessageLinesNameTheMessage: every line about one DIMSE message names it by its Message ID (message_id),
// beside the association (assoc), and never by a UID (docs/operations/logging.md): the lines the server writes
// itself, for a request it refuses or that breaks off, are the only ones there are of it.
func TestMessageLinesNameTheMessage(t *testing.T) {
	const instance = "1.2.826.0.1.3680043.9.7777.1" // Affected SOP Instance UID: never logged
	ctStore := func(id uint16) *dimse.Command {
		return dimse.NewCStoreRQ(id, dicomuid.CTImageStorage, instance, dimse.PriorityMedium)
	}
	store := func(p *dicomnettest.Parrot) {
		p.SendMessage(3, ctStore(42), []byte("ab"))
		p.ExpectCommand()
	}
	tests := []struct {
		name    string
		send    func(p *dicomnettest.Parrot)
		line    string           // the message of the line about message 42
		handler dicomnet.Handler // nil: one that reads the data set
		// panicked is what the line says of a panic's value
		// (panicvalue.Describe): a runtime error's text, or only the
		// type of a value that could hold a UID.
		panicked string
	}{
		{"stored", store, "dicomnet: C-STORE", nil, ""},
		{"refused: SOP class differs from the context", func(p *dicomnettest.Parrot) {
			p.SendMessage(3, dimse.NewCStoreRQ(42, dicomuid.MRImageStorage, instance, dimse.PriorityMedium), []byte("ab"))
			p.ExpectCommand()
		}, "dicomnet: C-STORE failed", nil, ""},
		// A panic's value may hold the UIDs of what the handler was
		// storing: only its type is told, in the line and in the error the
		// failure's line and audit record carry.
		{"handler panicked", store, "dicomnet: C-STORE handler panicked", dicomnet.HandlerFunc(func(ctx context.Context, req *dicomnet.CStoreRequest, r io.Reader) error {
			panic("store broke on " + req.AffectedSOPInstanceUID)
		}), "a value of type string"},
		{"handler panicked with a runtime error", store, "dicomnet: C-STORE handler panicked", dicomnet.HandlerFunc(func(ctx context.Context, req *dicomnet.CStoreRequest, r io.Reader) error {
			var seen map[string]bool
			//lint:ignore SA5000 a runtime error, on purpose
			seen[req.AffectedSOPInstanceUID] = true
			return nil
		}), "assignment to entry in nil map"},
		{"broken off", func(p *dicomnettest.Parrot) {
			p.SendPDVs(dicomnettest.CommandPDV(3, ctStore(42)), dicomnettest.PDV(3, 0, []byte("ab")))
			p.SendPDU(&pdu.Abort{})
		}, "dicomnet: C-STORE incomplete", nil, ""},
		{"unsupported", func(p *dicomnettest.Parrot) {
			c := dimse.NewCEchoRQ(42)
			c.CommandField = dimse.CFindRQ
			p.SendPDVs(dicomnettest.CommandPDV(1, c))
			p.ExpectCommand()
		}, "dicomnet: unsupported DIMSE command", nil, ""},
		{"N-ACTION on a storage context", func(p *dicomnettest.Parrot) {
			c := dimse.NewCEchoRQ(42)
			c.CommandField = dimse.NActionRQ
			p.SendPDVs(dicomnettest.CommandPDV(3, c))
			p.ExpectCommand()
		}, "dicomnet: N-ACTION refused", nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder()
			var logs testenv.LogBuffer
			h := tc.handler
			if h == nil {
				h = dicomnet.HandlerFunc(func(ctx context.Context, req *dicomnet.CStoreRequest, r io.Reader) error {
					_, err := io.Copy(io.Discard, r)
					return err
				})
			}
			p, _ := startParrot(t, &dicomnet.Server{Observer: rec, Handler: h,
				Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
			p.Associate(dicomnettest.AssociateRQ("SCU", "ANY"))
			tc.send(p)
			if tc.line == "dicomnet: C-STORE incomplete" {
				rec.waitFor(t, dicomnet.EventAborted)
			} else {
				p.SendPDU(&pdu.ReleaseRQ{})
				p.Expect(pdu.TypeReleaseRP)
				rec.waitFor(t, dicomnet.EventReleased)
			}
			out := logs.String()
			if strings.Contains(out, instance) {
				t.Errorf("logs name the SOP Instance UID:\n%s", out)
			}
			// An event's error is its audit record's reason.
			rec.mu.Lock()
			for _, ev := range rec.events {
				if ev.Err != nil && strings.Contains(ev.Err.Error(), instance) {
					t.Errorf("%s event's error names the SOP Instance UID: %v", ev.Type, ev.Err)
				}
			}
			rec.mu.Unlock()
			found := false
			for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
				var m map[string]any
				if err := json.Unmarshal([]byte(l), &m); err != nil {
					t.Fatalf("log line %q: %v", l, err)
				}
				if m["msg"] != tc.line {
					continue
				}
				found = true
				if m["message_id"] != float64(42) || m["assoc"] == nil {
					t.Errorf("line %q names message %v in association %v, want 42", tc.line, m["message_id"], m["assoc"])
				}
				if m["panic"] != nil && m["panic"] != tc.panicked || tc.panicked != "" && m["panic"] == nil {
					t.Errorf("line %q says the panic was %v, want %q", tc.line, m["panic"], tc.panicked)
				}
			}
			if !found {
				t.Errorf("no line %q:\n%s", tc.line, out)
			}
		})
	}
}

// TestOneLinePerAbort: an association's end is logged once. An A-ABORT we send on an established association was
// logged twice ("association aborted" with the state after it, Sta13, and again with source and reason); one
// answering a stray PDU after a release said "association aborted" of an association released in good order.
func TestOneLinePerAbort(t *testing.T) {
	encode := func(x pdu.PDU) []byte { b, _ := pdu.Encode(x); return b }
	tests := []struct {
		name              string
		associate         bool
		send              [][]byte
		aborted, released int // lines "dicomnet: association aborted" and "… released"
	}{
		{"protocol error in data transfer", true, [][]byte{{0x09, 0, 0, 0, 0, 0}}, 1, 0},
		{"invalid A-ASSOCIATE-RQ", false, [][]byte{{1, 0, 0, 0, 0, 4, 0, 1, 0, 0}}, 1, 0},
		// Before the association (Sta2), each first PDU of TestSta2Violations: the P-DATA-TF's A-ABORT went unlogged.
		{"P-DATA-TF before the association", false, [][]byte{{4, 0, 0, 0, 0, 6, 0, 0, 0, 2, 1, 3}}, 1, 0},
		{"A-RELEASE-RQ before the association", false, [][]byte{encode(&pdu.ReleaseRQ{})}, 1, 0},
		{"unrecognized PDU before the association", false, [][]byte{{0x09, 0, 0, 0, 0, 0}}, 1, 0},
		{"A-ASSOCIATE-RQ after the release", true, [][]byte{encode(&pdu.ReleaseRQ{}), encode(dicomnettest.AssociateRQ("SCU", "ANY"))}, 0, 1},
		{"unrecognized PDU after the release", true, [][]byte{encode(&pdu.ReleaseRQ{}), {0x09, 0, 0, 0, 0, 0}}, 0, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logs testenv.LogBuffer
			p, srv := startParrot(t, &dicomnet.Server{ARTIMTimeout: 200 * time.Millisecond,
				Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
			if tc.associate {
				p.Associate(dicomnettest.AssociateRQ("SCU", "ANY"))
			}
			for _, b := range tc.send {
				p.Send(b)
			}
			for { // an A-RELEASE-RP first, where released
				x, err := p.Next()
				if err != nil {
					t.Fatalf("no A-ABORT: %v", err)
				}
				if x.Type() == pdu.TypeAbort {
					break
				}
			}
			p.ExpectClosed()
			waitActive(t, srv.Server, 0)
			time.Sleep(50 * time.Millisecond) // the lines written as the connection closes
			out := logs.String()
			if n := strings.Count(out, `"msg":"dicomnet: association aborted"`); n != tc.aborted {
				t.Errorf("%d lines 'association aborted', want %d:\n%s", n, tc.aborted, out)
			}
			if n := strings.Count(out, `"msg":"dicomnet: association released"`); n != tc.released {
				t.Errorf("%d lines 'association released', want %d:\n%s", n, tc.released, out)
			}
		})
	}
}

// TestPeerImplementationBounded: the peer's Implementation Class UID and Version Name, as both sides keep them and
// the server logs them on the accepted association's line (peer_impl, peer_impl_version; the name was not logged),
// are cut to 64 and 16 bytes (PS3.5 9.1, PS3.7 D.3.3.2) and hold no control
// characters; the association goes on. They were kept and logged as sent, up to an item's 64 KiB.
func TestPeerImplementationBounded(t *testing.T) {
	long := "1.2." + strings.Repeat("9", 70)
	tests := []struct {
		name                 string
		uid, version         string // sent
		wantUID, wantVersion string
	}{
		{"DCMTK's", "1.2.276.0.7230010.3.0.3.6.7", "OFFIS_DCMTK_367", "1.2.276.0.7230010.3.0.3.6.7", "OFFIS_DCMTK_367"},
		{"a UID of 74 bytes, a version name of 17", long, "ABCDEFGHIJKLMNOPQ", long[:64], "ABCDEFGHIJKLMNOP"},
		{"a UID of 60,000 bytes", strings.Repeat("1", 60000), "V", strings.Repeat("1", 64), "V"},
		{"control characters and bytes past ASCII", "1.2.3\n\x1b[31m4", "A\tB\x7fC\xc3\xa9", "1.2.3??[31m4", "A?B?C??"},
		// A hostile peer's item 55 as long as an item holds, of newlines and ANSI escapes.
		{"a version name of 65,000 bytes of newlines and escapes", "1.2.3", strings.Repeat("V\n\x1b[31m", 9300)[:65000], "1.2.3", "V??[31mV??[31mV?"},
	}
	for _, tc := range tests {
		t.Run(tc.name+", server", func(t *testing.T) {
			var logs testenv.LogBuffer
			got := make(chan dicomnet.AssociationInfo, 1)
			p, _ := startParrot(t, &dicomnet.Server{Accept: func(_ context.Context, info *dicomnet.AssociationInfo) error {
				got <- *info
				return nil
			}, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
			rq := dicomnettest.AssociateRQ("SCU", "ANY")
			rq.UserInformation.ImplementationClassUID, rq.UserInformation.ImplementationVersionName = tc.uid, tc.version
			p.Associate(rq)
			info := <-got
			if info.PeerImplementationClassUID != tc.wantUID || info.PeerImplementationVersionName != tc.wantVersion {
				t.Errorf("kept %q %q, want %q %q", info.PeerImplementationClassUID, info.PeerImplementationVersionName, tc.wantUID, tc.wantVersion)
			}
			p.SendPDU(&pdu.ReleaseRQ{})
			p.Expect(pdu.TypeReleaseRP)
			var line struct {
				PeerImpl        *string `json:"peer_impl"`
				PeerImplVersion *string `json:"peer_impl_version"`
			}
			for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
				// Each line one JSON object, whatever the peer sent, and none carries more of it than the bounds.
				if !json.Valid([]byte(l)) || len(l) > 2048 {
					t.Errorf("a log line of %d bytes, JSON %v: %.300s", len(l), json.Valid([]byte(l)), l)
				}
				if strings.Contains(l, `"msg":"dicomnet: association accepted"`) {
					if err := json.Unmarshal([]byte(l), &line); err != nil {
						t.Fatal(err)
					}
				}
			}
			if line.PeerImpl == nil || *line.PeerImpl != tc.wantUID {
				t.Errorf("logged peer_impl %v, want %q:\n%s", line.PeerImpl, tc.wantUID, logs.String())
			}
			if line.PeerImplVersion == nil || *line.PeerImplVersion != tc.wantVersion {
				t.Errorf("logged peer_impl_version %v, want %q:\n%s", line.PeerImplVersion, tc.wantVersion, logs.String())
			}
		})
		t.Run(tc.name+", client", func(t *testing.T) {
			pl := dicomnettest.ListenParrot(t)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			// No ARTIM: Abort, at the end, does not wait for the peer to close.
			dialed := dial(ctx, pl.Addr, dicomnet.ClientConfig{CallingAE: "SCU", CalledAE: "ANY", ARTIMTimeout: -1})
			p := pl.Accept()
			rq := p.Expect(pdu.TypeAssociateRQ).(*pdu.AssociateRQ)
			p.SendPDU(&pdu.AssociateAC{ProtocolVersion: 1, Echo: &rq.Echo, ApplicationContext: dicomuid.ApplicationContext,
				PresentationContexts: []pdu.PresentationContextAC{{ID: 1, TransferSyntax: dicomuid.ImplicitVRLittleEndian}},
				UserInformation:      pdu.UserInformation{MaxPDULength: 16384, ImplementationClassUID: tc.uid, ImplementationVersionName: tc.version}})
			a := (<-dialed).get(t)
			defer a.Abort()
			if a.PeerImplementationClassUID != tc.wantUID || a.PeerImplementationVersionName != tc.wantVersion {
				t.Errorf("kept %q %q, want %q %q", a.PeerImplementationClassUID, a.PeerImplementationVersionName, tc.wantUID, tc.wantVersion)
			}
		})
	}
}

// TestRefusedContextsLogged: the line of an accepted association names what it refused, so that whoever reads the
// log can tell a PACS which transfer syntax or SOP class to propose, and its EventAccepted carries the same (Contexts),
// for the audit trail, which said no more than "association-accepted" then "association-aborted … EOF". It said "accepted":0 and nothing more for a PACS
// that proposed only the retired Explicit VR Big Endian, whose association then ended "connection closed: EOF"
// (found onboarding a site). The lists hold each UID once, at most eight of them, cut and made printable as the
// peer's implementation identifiers are; a line of an association that refused nothing carries none of this.
func TestRefusedContextsLogged(t *testing.T) {
	many := func(n int) []string {
		var ts []string
		for i := range n {
			ts = append(ts, fmt.Sprintf("1.2.3.%d", i))
		}
		return ts
	}
	const qr = "1.2.840.10008.5.1.4.1.2.1.1" // Patient Root Query/Retrieve FIND
	// scpOnly is role selection leaving the requestor no SCU role for these classes: their contexts are rejected
	// (user-rejection), as a C-GET SCU's storage contexts are (DCMTK's getscu proposes them SCP only).
	scpOnly := func(classes ...string) []pdu.RoleSelection {
		var r []pdu.RoleSelection
		for _, c := range classes {
			r = append(r, pdu.RoleSelection{SOPClassUID: c, SCU: 0, SCP: 1})
		}
		return r
	}
	storage := func(n int) (classes []string, pcs []pdu.PresentationContextRQ) {
		for i := range n {
			classes = append(classes, fmt.Sprintf("1.2.840.10008.5.1.4.1.1.%d", 900+i))
			pcs = append(pcs, pdu.PresentationContextRQ{ID: byte(2*i + 3), AbstractSyntax: classes[i], TransferSyntaxes: []string{dicomuid.ImplicitVRLittleEndian}})
		}
		return classes, pcs
	}
	tenClasses, tenContexts := storage(10)
	tests := []struct {
		name     string
		contexts []pdu.PresentationContextRQ
		roles    []pdu.RoleSelection
		want     string // the attributes of the line, as JSON
	}{
		{"only Big Endian, and a query", []pdu.PresentationContextRQ{
			{ID: 1, AbstractSyntax: dicomuid.CTImageStorage, TransferSyntaxes: []string{dicomuid.ExplicitVRBigEndian}},
			{ID: 3, AbstractSyntax: dicomuid.MRImageStorage, TransferSyntaxes: []string{dicomuid.ExplicitVRBigEndian}},
			{ID: 5, AbstractSyntax: qr, TransferSyntaxes: []string{dicomuid.ImplicitVRLittleEndian}},
		}, nil, `{"accepted":0,"refused_contexts":3,"unsupported_transfer_syntaxes":["1.2.840.10008.1.2.2"],"unsupported_abstract_syntaxes":["` + qr + `"]}`},
		{"ten unknown syntaxes, one too long and one twice", []pdu.PresentationContextRQ{
			{ID: 1, AbstractSyntax: dicomuid.CTImageStorage, TransferSyntaxes: append([]string{"1.2.\n" + strings.Repeat("9", 70)}, many(9)...)},
			{ID: 3, AbstractSyntax: dicomuid.Verification, TransferSyntaxes: []string{dicomuid.ImplicitVRLittleEndian}},
			{ID: 5, AbstractSyntax: dicomuid.MRImageStorage, TransferSyntaxes: many(1)},
		}, nil, `{"accepted":1,"refused_contexts":2,"unsupported_transfer_syntaxes":["1.2.?` + strings.Repeat("9", 59) +
			`","1.2.3.0","1.2.3.1","1.2.3.2","1.2.3.3","1.2.3.4","1.2.3.5","1.2.3.6"],"unsupported_transfer_syntaxes_more":2}`},
		// A C-GET SCU: its query class not supported, its storage classes proposed in the SCP role only.
		{"storage classes without the SCU role, and a query", []pdu.PresentationContextRQ{
			{ID: 1, AbstractSyntax: qr, TransferSyntaxes: []string{dicomuid.ImplicitVRLittleEndian}},
			{ID: 3, AbstractSyntax: dicomuid.CTImageStorage, TransferSyntaxes: []string{dicomuid.ImplicitVRLittleEndian}},
			{ID: 5, AbstractSyntax: dicomuid.CTImageStorage, TransferSyntaxes: []string{dicomuid.ExplicitVRLittleEndian}},
			{ID: 7, AbstractSyntax: dicomuid.MRImageStorage, TransferSyntaxes: []string{dicomuid.ImplicitVRLittleEndian}},
			{ID: 9, AbstractSyntax: dicomuid.Verification, TransferSyntaxes: []string{dicomuid.ImplicitVRLittleEndian}},
		}, scpOnly(qr, dicomuid.CTImageStorage), `{"accepted":2,"refused_contexts":3,"unsupported_abstract_syntaxes":["` + qr +
			`"],"no_scu_role_abstract_syntaxes":["` + dicomuid.CTImageStorage + `"]}`},
		{"ten classes without the SCU role", tenContexts, scpOnly(tenClasses...),
			`{"accepted":0,"refused_contexts":10,"no_scu_role_abstract_syntaxes":["` + strings.Join(tenClasses[:8], `","`) +
				`"],"no_scu_role_abstract_syntaxes_more":2}`},
		{"nothing refused", dicomnettest.AssociateRQ("SCU", "ANY").PresentationContexts, nil, `{"accepted":2}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logs testenv.LogBuffer
			var mu sync.Mutex
			var observed []*dicomnet.ContextSummary
			p, _ := startParrot(t, &dicomnet.Server{Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
				Observer: dicomnet.ObserverFunc(func(ev dicomnet.Event) {
					if ev.Type == dicomnet.EventAccepted {
						mu.Lock()
						observed = append(observed, ev.Contexts)
						mu.Unlock()
					}
				})})
			rq := dicomnettest.AssociateRQ("SCU", "ANY")
			rq.PresentationContexts, rq.UserInformation.RoleSelections = tc.contexts, tc.roles
			p.Associate(rq)
			p.SendPDU(&pdu.ReleaseRQ{})
			p.Expect(pdu.TypeReleaseRP) // the accepted event was observed before the release was answered
			type attrs struct {
				Accepted     *int     `json:"accepted"`
				Refused      int      `json:"refused_contexts,omitempty"`
				Transfer     []string `json:"unsupported_transfer_syntaxes,omitempty"`
				TransferMore int      `json:"unsupported_transfer_syntaxes_more,omitempty"`
				Abstract     []string `json:"unsupported_abstract_syntaxes,omitempty"`
				AbstractMore int      `json:"unsupported_abstract_syntaxes_more,omitempty"`
				NoRole       []string `json:"no_scu_role_abstract_syntaxes,omitempty"`
				NoRoleMore   int      `json:"no_scu_role_abstract_syntaxes_more,omitempty"`
			}
			mu.Lock()
			defer mu.Unlock()
			if len(observed) != 1 || observed[0] == nil {
				t.Fatalf("EventAccepted's Contexts: %v, want one", observed)
			}
			ev := observed[0]
			evJSON, err := json.Marshal(attrs{&ev.Accepted, ev.Refused, ev.UnsupportedTransferSyntaxes, ev.MoreTransferSyntaxes,
				ev.UnsupportedAbstractSyntaxes, ev.MoreAbstractSyntaxes, ev.NoSCURoleAbstractSyntaxes, ev.MoreNoSCURoleAbstractSyntaxes})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, string(evJSON)); diff != "" {
				t.Errorf("EventAccepted's Contexts (-want +got):\n%s", diff)
			}
			var line attrs
			for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
				if strings.Contains(l, `"msg":"dicomnet: association accepted"`) {
					if err := json.Unmarshal([]byte(l), &line); err != nil {
						t.Fatal(err)
					}
				}
			}
			got, err := json.Marshal(line)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, string(got)); diff != "" {
				t.Errorf("line's attributes (-want +got):\n%s\n%s", diff, logs.String())
			}
		})
	}
}

// TestPeerAETitlesPrintable: the AE titles of an A-ASSOCIATE-RQ are kept, logged and recorded by the implementation
// identifiers' rule (each byte outside printable ASCII as '?'; the RQ's fields bound them to 16 bytes), and one
// that had a byte replaced is no AE title: refused, calling or called, even where the policy lists what it reads
// as ('CT?'). They were kept and logged as received.
// TestPeerAETitlesByTheRule holds the AE titles an association receives to the callers' one table
// (accesscontrol.CheckAETitle), as calling (refused 01 01 03, the rule's reason logged as why) and as called (01
// 01 07) with any called AE title accepted: a backslash, which no allowlist can list, and an empty title were
// taken. Titles past 16 bytes are left out: the RQ's fields hold 16.
func TestPeerAETitlesByTheRule(t *testing.T) {
	for _, tc := range aetitletest.Titles {
		if len(tc.AE) > 16 {
			continue
		}
		for _, called := range []bool{false, true} {
			name := tc.Name + "/calling"
			calling, calledAE, reason := tc.AE, "ANY", byte(3)
			if called {
				name, calling, calledAE, reason = tc.Name+"/called", "CT", tc.AE, 7
			}
			t.Run(name, func(t *testing.T) {
				var logs testenv.LogBuffer
				p, _ := startParrot(t, &dicomnet.Server{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
				p.SendPDU(dicomnettest.AssociateRQ(calling, calledAE))
				if tc.Valid {
					p.Expect(pdu.TypeAssociateAC)
					p.SendPDU(&pdu.ReleaseRQ{})
					p.Expect(pdu.TypeReleaseRP)
					return
				}
				p.ExpectReject(1, 1, reason)
				for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
					var line struct {
						Msg string `json:"msg"`
						Why string `json:"why"`
					}
					if err := json.Unmarshal([]byte(l), &line); err != nil {
						t.Fatal(err)
					}
					if line.Msg == "dicomnet: association rejected" && strings.Contains(line.Why, tc.Problem) {
						return
					}
				}
				t.Errorf("no rejection line says why %q:\n%s", tc.Problem, logs.String())
			})
		}
	}
}

func TestPeerAETitlesPrintable(t *testing.T) {
	tests := []struct {
		name                    string
		calling, called         string // sent
		serverAE                string
		wantCalling, wantCalled string // kept and logged
		wantReason              byte   // A-ASSOCIATE-RJ reason (source 1); 0 = accepted
	}{
		{"printable", "CT?", "ANY", "", "CT?", "ANY", 0},
		{"a control character in the calling AE title", "CT\x01", "ANY", "", "CT?", "ANY", 3},
		{"a byte past ASCII in the calling AE title", "CT\xc3\xa9", "ANY", "", "CT??", "ANY", 3},
		{"an escape sequence in the called AE title, any accepted", "CT?", "AN\x1b[31mY", "", "CT?", "AN?[31mY", 7},
		{"the called AE title ours with a byte replaced", "CT?", "OURS\x7f", "OURS?", "CT?", "OURS?", 7},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logs testenv.LogBuffer
			got := make(chan dicomnet.AssociationInfo, 1)
			p, _ := startParrot(t, &dicomnet.Server{AETitle: tc.serverAE, Accept: func(_ context.Context, info *dicomnet.AssociationInfo) error {
				got <- *info
				if info.CallingAE != "CT?" {
					return dicomnet.RejectCallingAENotRecognized
				}
				return nil
			}, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
			p.SendPDU(dicomnettest.AssociateRQ(tc.calling, tc.called))
			if tc.wantReason == 0 {
				p.Expect(pdu.TypeAssociateAC)
				if info := <-got; info.CallingAE != tc.wantCalling || info.CalledAE != tc.wantCalled {
					t.Errorf("the policy saw %q %q, want %q %q", info.CallingAE, info.CalledAE, tc.wantCalling, tc.wantCalled)
				}
				p.SendPDU(&pdu.ReleaseRQ{})
				p.Expect(pdu.TypeReleaseRP)
			} else {
				p.ExpectReject(1, 1, tc.wantReason)
			}
			var lines int
			for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
				var line struct {
					CallingAE *string `json:"calling_ae"`
					CalledAE  *string `json:"called_ae"`
				}
				if err := json.Unmarshal([]byte(l), &line); err != nil {
					t.Fatal(err)
				}
				if line.CallingAE == nil {
					continue
				}
				lines++
				if *line.CallingAE != tc.wantCalling || line.CalledAE == nil || *line.CalledAE != tc.wantCalled {
					t.Errorf("logged %s, want %q %q", l, tc.wantCalling, tc.wantCalled)
				}
			}
			if lines == 0 {
				t.Errorf("no line names the AE titles:\n%s", logs.String())
			}
		})
	}
}
