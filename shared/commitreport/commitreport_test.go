package commitreport_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/dicom-ingest/dicom-ingest/shared/accesscontrol/aetitletest"
	"github.com/dicom-ingest/dicom-ingest/shared/commitreport"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/commitment"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dicomnettest"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/pdu"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/version"
)

func TestParsePeers(t *testing.T) {
	got, err := commitreport.ParsePeers(" PACS=10.1.2.3:104 , CT_2=pacs.example:11112, MR=tls://pacs.example:2762, US=TLS://[::1]:2762,")
	if err != nil {
		t.Fatal(err)
	}
	want := commitreport.Peers{"PACS": {Addr: "10.1.2.3:104"}, "CT_2": {Addr: "pacs.example:11112"},
		"MR": {Addr: "pacs.example:2762", TLS: true}, "US": {Addr: "[::1]:2762", TLS: true}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	if got.String() != "CT_2=pacs.example:11112,MR=tls://pacs.example:2762,PACS=10.1.2.3:104,US=tls://[::1]:2762" || !got.TLS() {
		t.Errorf("String() = %q, TLS() = %v", got.String(), got.TLS())
	}
	if again, err := commitreport.ParsePeers(got.String()); err != nil || !cmp.Equal(again, got) {
		t.Errorf("String() read back: %v, %v", again, err)
	}
	if p, err := commitreport.ParsePeers(""); err != nil || len(p) != 0 {
		t.Errorf("empty spec: %v, %v", p, err)
	}
	for _, bad := range []string{"PACS", "PACS=10.1.2.3", "=1.2.3.4:104", "WAY_TOO_LONG_AE_TITLE=h:1", "PACS=h:0", "PACS=h:70000",
		"PACS=:104", "PACS=h:1,PACS=h:2", `BACK\SLASH=h:1`,
		"PACS=dicom://h:104", "PACS=https://h:443", "PACS=tls://h", "PACS=tls://:2762", "PACS=tls://tls://h:1", "PACS=h/x:1",
		"CT=1=h:104"} { // the peer CT at the host 1=h, was taken: an AE title cannot hold the = that ends it
		if _, err := commitreport.ParsePeers(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestParsePeersHost: a peer's host is an IP address or a DNS name (CheckServerName's rule of one); a host holding
// a space, a control character or other punctuation was taken, to fail only at each delivery's dial.
func TestParsePeersHost(t *testing.T) {
	for _, tc := range []struct {
		spec string
		ok   bool
	}{
		{"PACS=10.1.2.3:104", true},
		{"PACS=[::1]:104", true},
		{"PACS=[fe80::1%eth0]:104", true},
		{"PACS=pacs:104", true},
		{"PACS=pacs-1.st-mary.example:104", true},
		{"PACS=tls://PACS.Example:2762", true},
		// A fully qualified name, rooted (its trailing dot: no search domain appended), is dialled as one; it
		// was taken before hosts were checked, and refused since as "neither an IP address nor a DNS name".
		{"PACS=pacs.example.:104", true},
		{"PACS=tls://pacs.example.:2762", true},
		{"PACS=.:104", false},
		{"PACS=pacs..:104", false},
		{"PACS=10.1.2.3.:104", false},
		{"PACS=pacs example:104", false},
		{"PACS=tls://pacs example:2762", false},
		{"PACS=pacs\texample:104", false},
		{"PACS=pacs\x00:104", false},
		{"PACS=pacs@example:104", false},
		// A host name as resolvers take it: an underscore (a Docker Compose service), taken before hosts were
		// checked and dialled by Go's resolver; a server name is held to RFC 1123 (TestCheckServerName).
		{"PACS=orthanc_pacs:104", true},
		{"PACS=pacs_1.example:104", true},
		{"PACS=pacs+1.example:104", false},
		{"PACS=-pacs.example:104", false},
		{"PACS=pacs..example:104", false},
		{"PACS=10.1.2:104", false}, // an IPv4 address as inet_aton reads it, not as we print one
	} {
		spec, err := strconv.Unquote(`"` + tc.spec + `"`)
		if err != nil {
			t.Fatal(err)
		}
		_, err = commitreport.ParsePeers(spec)
		switch {
		case tc.ok && err != nil:
			t.Errorf("ParsePeers(%q) = %v, want it taken", spec, err)
		case !tc.ok && err == nil:
			t.Errorf("ParsePeers(%q) taken, want an error", spec)
		case !tc.ok && !strings.Contains(err.Error(), "is neither an IP address nor a DNS name"):
			t.Errorf("ParsePeers(%q) = %v, want it to say the host is neither an IP address nor a DNS name", spec, err)
		}
	}
}

// TestParsePeersQueryKeys: the query after a peer's port takes the keys peers know (serverName) spelt exactly; any
// other key, one in other letters (ServerName) among them, is refused by its name with the keys taken, never
// ignored, and so is a key given twice or without a value.
func TestParsePeersQueryKeys(t *testing.T) {
	for _, tc := range []struct{ spec, says string }{
		{"PACS=tls://10.1.2.3:2762?ServerName=pacs.example", `unknown query key "ServerName" (keys are case-sensitive: serverName); want ?serverName=NAME`},
		{"PACS=tls://10.1.2.3:2762?servername=pacs.example", `unknown query key "servername" (keys are case-sensitive: serverName)`},
		{"PACS=tls://10.1.2.3:2762?sni=pacs.example", `unknown query key "sni"; want ?serverName=NAME`},
		{"PACS=10.1.2.3:104?sni=pacs.example", `unknown query key "sni"`},
		{"PACS=tls://10.1.2.3:2762?serverName=pacs.example&sni=x", `unknown query key "sni"`},
		{"PACS=tls://10.1.2.3:2762?serverName=a.example&serverName=b.example", "query key serverName given twice"},
		{"PACS=tls://10.1.2.3:2762?serverName", "query key serverName without a value"},
		{"PACS=tls://10.1.2.3:2762?", "nothing after ?; want ?serverName=NAME"},
		{"PACS=tls://10.1.2.3:2762?=pacs.example", `unknown query key ""`},
	} {
		if _, err := commitreport.ParsePeers(tc.spec); err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("ParsePeers(%q) = %v, want an error saying %q", tc.spec, err, tc.says)
		}
	}
}

// TestParsePeersServerName: a tls:// peer whose certificate names a DNS name only (not the address we dial) takes
// ?serverName=NAME: the name its certificate is checked against and sent as SNI, a DNS name, checked when read.
func TestParsePeersServerName(t *testing.T) {
	got, err := commitreport.ParsePeers("PACS=tls://10.1.2.3:2762?serverName=pacs.st-mary.example, MR=tls://10.1.2.4:2762?serverName=PACS-2.example")
	if err != nil {
		t.Fatal(err)
	}
	want := commitreport.Peers{"PACS": {Addr: "10.1.2.3:2762", TLS: true, ServerName: "pacs.st-mary.example"},
		"MR": {Addr: "10.1.2.4:2762", TLS: true, ServerName: "PACS-2.example"}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	if s := got.String(); s != "MR=tls://10.1.2.4:2762?serverName=PACS-2.example,PACS=tls://10.1.2.3:2762?serverName=pacs.st-mary.example" {
		t.Errorf("String() = %q", s)
	}
	if again, err := commitreport.ParsePeers(got.String()); err != nil || !cmp.Equal(again, got) {
		t.Errorf("String() read back: %v, %v", again, err)
	}
	for _, tc := range []struct{ spec, says string }{
		{"PACS=10.1.2.3:104?serverName=pacs.example", "serverName is for tls:// peers"},
		{"PACS=tls://10.1.2.3:2762?serverName=", "serverName"},
		{"PACS=tls://10.1.2.3:2762?serverName=a.example&serverName=b.example", "serverName"},
		{"PACS=tls://10.1.2.3:2762?serverName=10.1.2.3", "an IP address"},
		// Forms of an IPv4 address (inet_aton's, which URL parsers read as one) are no DNS name either: a
		// last label of digits only (RFC 3696 §2).
		{"PACS=tls://10.1.2.3:2762?serverName=10.1.2", "its last label digits only"},
		{"PACS=tls://10.1.2.3:2762?serverName=167837955", "its last label digits only"},
		{"PACS=tls://10.1.2.3:2762?serverName=pacs.2762", "its last label digits only"},
		{"PACS=tls://10.1.2.3:2762?serverName=pacs.example.", "not a DNS name"},
		{"PACS=tls://10.1.2.3:2762?serverName=b\u00fccher.example", "not a DNS name"},
		{"PACS=tls://10.1.2.3:2762?serverName=pacs%2Eexample", "not a DNS name"},
		{"PACS=tls://10.1.2.3:2762?serverName=pacs.example#x", "not a DNS name"},
		{"PACS=tls://10.1.2.3:2762?serverName=pacs.example=x", "not a DNS name"},
		{"PACS=tls://10.1.2.3:2762?serverName=pacs_1.example", "not a DNS name"},
		{"PACS=tls://10.1.2.3:2762?serverName=-pacs.example", "not a DNS name"},
		{"PACS=tls://10.1.2.3:2762?serverName=pacs..example", "not a DNS name"},
		{"PACS=tls://10.1.2.3:2762?serverName=*.example", "not a DNS name"},
		{"PACS=tls://10.1.2.3:2762?serverName=" + strings.Repeat("a", 64) + ".example", "not a DNS name"},
		{"PACS=tls://10.1.2.3:2762?serverName=" + strings.Repeat("abcdefg.", 32) + "example", "not a DNS name"},
	} {
		if _, err := commitreport.ParsePeers(tc.spec); err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("ParsePeers(%q) = %v, want an error saying %q", tc.spec, err, tc.says)
		}
	}
}

// FuzzParsePeers: whatever --commitment-peers or COMMITMENT_PEERS holds, ParsePeers never panics, and what it
// takes its String reads back the same (the stack renders the function's peers with it).
func FuzzParsePeers(f *testing.F) {
	for _, seed := range []string{"PACS=10.1.2.3:104", "MR=tls://pacs.example:2762,US=TLS://[::1]:2762",
		"PACS=tls://10.1.2.3:2762?serverName=pacs.st-mary.example", "PACS=tls://h:1?serverName=", "PACS=h:1?serverName=x",
		"PACS=tls://h:1?sni=x", "CT=1=h:104", "PACS=tls://h:1?serverName=a..b",
		"PACS=tls://[::1]:2762?serverName=pacs.example", "PACS=tls://[fe80::1%eth0]:2762?serverName=PACS.Example",
		"PACS=tls://h:1?serverName=xn--bcher-kva.example", "PACS=tls://h:1?serverName=pacs.example.",
		"PACS=tls://h:1?serverName=a%2eb&c=d#e", "PACS=tls://h:1?serverName=a,MR=tls://h:2?serverName=10.1.2",
		"PACS=tls://h:1?ServerName=x", "PACS=tls://h:1?serverName=x&serverName=y", "PACS=pacs example:104",
		"PACS=pacs.example.:104", "PACS=.:104"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		p, err := commitreport.ParsePeers(spec)
		if err != nil {
			return
		}
		again, err := commitreport.ParsePeers(p.String())
		if err != nil || !cmp.Equal(again, p) {
			t.Errorf("ParsePeers(%q) = %v, its String %q read back as %v, %v", spec, p, p.String(), again, err)
		}
	})
}

// TestParsePeersAETitles holds the peers' AE titles to the callers' one table (accesscontrol.CheckAETitle).
func TestParsePeersAETitles(t *testing.T) {
	for _, tc := range aetitletest.Titles {
		t.Run(tc.Name, func(t *testing.T) {
			p, err := commitreport.ParsePeers(tc.AE + "=h:104")
			switch {
			case !tc.Valid:
				if err == nil || !strings.Contains(err.Error(), tc.Problem) {
					t.Errorf("ParsePeers took %q: %v, want %s", tc.AE, err, tc.Problem)
				}
			case err != nil:
				t.Errorf("ParsePeers refused %q: %v", tc.AE, err)
			case p[strings.TrimSpace(tc.AE)].Addr != "h:104":
				t.Errorf("ParsePeers(%q) = %v", tc.AE, p)
			}
		})
	}
}

var result = commitment.Result{TransactionUID: "1.2.826.0.1.3680043.10.9.1",
	Committed: []commitment.Ref{{SOPClassUID: dicomuid.CTImageStorage, SOPInstanceUID: "1.2.3.4.1"}},
	Failed:    []commitment.Failure{{Ref: commitment.Ref{SOPClassUID: dicomuid.CTImageStorage, SOPInstanceUID: "1.2.3.4.2"}, Reason: commitment.ReasonNoSuchObjectInstance}}}

type reported struct {
	d   pipeline.CommitmentDelivery
	err error
}

func report(r *commitreport.Reporter, associationID string) <-chan reported {
	ch := make(chan reported, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		d, err := r.Report(ctx, pipeline.CommitmentReport{CallingAE: "PACS", AssociationID: associationID, Result: result})
		ch <- reported{d, err}
	}()
	return ch
}

// takeReport is a PACS taking a report on the association we open: it accepts it with the SCP role proposed,
// answers the report success (expectReport) and releases.
func takeReport(t *testing.T, p *dicomnettest.Parrot) {
	t.Helper()
	p.AcceptAssociation(func(r pdu.RoleSelection) *pdu.RoleSelection { return &r })
	expectReport(t, p, 1, dimse.StatusSuccess)
	p.Expect(pdu.TypeReleaseRQ)
	p.SendPDU(&pdu.ReleaseRP{})
}

// expectReport reads the N-EVENT-REPORT-RQ a parrot receives, checks it carries the result, and answers st.
func expectReport(t *testing.T, p *dicomnettest.Parrot, ctxID byte, st uint16) {
	t.Helper()
	cmd, ds := p.ExpectMessage()
	if cmd.CommandField != dimse.NEventReportRQ || cmd.EventTypeID != commitment.EventFailures {
		t.Fatalf("request %+v", cmd)
	}
	got, err := commitment.ParseResult(bytes.NewReader(ds), dicomuid.ExplicitVRLittleEndian)
	if err != nil {
		got, err = commitment.ParseResult(bytes.NewReader(ds), dicomuid.ImplicitVRLittleEndian)
	}
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(&result, got); d != "" {
		t.Errorf("result (-want +got):\n%s", d)
	}
	answer := dimse.Status{Code: st}
	if answer.IsFailure() {
		// As a PACS may word it: its own text, naming the UIDs the report
		// named.
		answer.Comment = "no transaction " + result.TransactionUID + " for " + result.Failed[0].SOPInstanceUID
	}
	p.SendMessage(ctxID, dimse.NewNEventReportRSP(cmd, answer), nil)
}

type accept struct{}

func (accept) ServeCommitment(_ context.Context, _ *dicomnet.CommitmentRequest, r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}

// TestReportOnTheRequestorsAssociation: while the requestor's association is open, the report goes there.
// requestor is a server taking commitment requests and a PACS associated with it, proposing Storage Commitment,
// whose association has the id returned.
func requestor(t *testing.T) (*dicomnettest.Server, *dicomnettest.Parrot, string) {
	t.Helper()
	ids := make(chan string, 1)
	srv := dicomnettest.NewServerT(t, &dicomnet.Server{Commitment: accept{}, Observer: dicomnet.ObserverFunc(func(ev dicomnet.Event) {
		if ev.Type == dicomnet.EventAccepted {
			ids <- ev.Association.ID
		}
	})})
	p := dicomnettest.DialParrot(t, srv.Addr)
	p.Associate(dicomnettest.CommitmentAssociateRQ("PACS", "INGEST", dicomuid.ExplicitVRLittleEndian))
	return srv, p, <-ids
}

func TestReportOnTheRequestorsAssociation(t *testing.T) {
	srv, p, id := requestor(t)
	r := &commitreport.Reporter{Server: srv.Server, AETitle: "INGEST"}
	done := report(r, id)
	expectReport(t, p, 5, dimse.StatusSuccess)
	if got := <-done; got.err != nil || !got.d.SameAssociation {
		t.Fatalf("Report = %+v, %v", got.d, got.err)
	}
}

// TestReportOnANewAssociation: with the requestor's association gone the reporter associates with the
// configured address, proposing the SCP role (SCU 0, SCP 1) for the Push Model, and releases after the
// response. What the PACS refuses or cannot take is an error, to be retried.
func TestReportOnANewAssociation(t *testing.T) {
	scpRole := func(r pdu.RoleSelection) *pdu.RoleSelection {
		if r.SOPClassUID != dicomuid.StorageCommitment || r.SCU != 0 || r.SCP != 1 {
			t.Errorf("role selection proposed %+v, want SCU 0 SCP 1 for Storage Commitment", r)
		}
		return &r
	}
	srv := dicomnettest.NewServerT(t, &dicomnet.Server{Commitment: accept{}})
	t.Run("delivered", func(t *testing.T) {
		pl := dicomnettest.ListenParrot(t)
		r := &commitreport.Reporter{Server: srv.Server, Peers: commitreport.Peers{"PACS": {Addr: pl.Addr}}, AETitle: "INGEST"}
		done := report(r, "gone-1")
		p := pl.Accept()
		rq := p.AcceptAssociation(scpRole)
		if rq.CallingAE != "INGEST" || rq.CalledAE != "PACS" {
			t.Errorf("association from %q to %q", rq.CallingAE, rq.CalledAE)
		}
		// The identity the conformance statement gives, as in the SCP's
		// A-ASSOCIATE-AC and the stored File Meta Information.
		if ui := rq.UserInformation; ui.ImplementationClassUID != version.ImplementationClassUID ||
			ui.ImplementationVersionName != version.ImplementationVersionName {
			t.Errorf("implementation %q %q, want %q %q", ui.ImplementationClassUID, ui.ImplementationVersionName,
				version.ImplementationClassUID, version.ImplementationVersionName)
		}
		expectReport(t, p, 1, dimse.StatusSuccess)
		p.Expect(pdu.TypeReleaseRQ)
		p.SendPDU(&pdu.ReleaseRP{})
		if got := <-done; got.err != nil || got.d.SameAssociation {
			t.Fatalf("Report = %+v, %v", got.d, got.err)
		}
	})
	t.Run("SCP role turned down", func(t *testing.T) {
		pl := dicomnettest.ListenParrot(t)
		r := &commitreport.Reporter{Peers: commitreport.Peers{"PACS": {Addr: pl.Addr}}, AETitle: "INGEST"}
		done := report(r, "")
		p := pl.Accept()
		p.AcceptAssociation(func(pdu.RoleSelection) *pdu.RoleSelection { return nil })
		p.Expect(pdu.TypeReleaseRQ)
		p.SendPDU(&pdu.ReleaseRP{})
		if got := <-done; !errors.Is(got.err, dicomnet.ErrRoleNotHeld) {
			t.Fatalf("Report error %v, want ErrRoleNotHeld", got.err)
		}
	})
	t.Run("aborted by the PACS", func(t *testing.T) {
		// As Orthanc does when our address is not the one it has for
		// our AE title: the error says what to look at.
		pl := dicomnettest.ListenParrot(t)
		r := &commitreport.Reporter{Peers: commitreport.Peers{"PACS": {Addr: pl.Addr}}, AETitle: "INGEST"}
		done := report(r, "")
		p := pl.Accept()
		p.Expect(pdu.TypeAssociateRQ)
		p.SendPDU(&pdu.Abort{})
		got := <-done
		if !errors.Is(got.err, dicomnet.ErrAborted) || !strings.Contains(got.err.Error(), "may not accept our AE title INGEST from this address") {
			t.Fatalf("Report error %v, want an abort that says what to check", got.err)
		}
	})
	t.Run("peer unreachable", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		r := &commitreport.Reporter{Peers: commitreport.Peers{"PACS": {Addr: addr}}, AETitle: "INGEST", DialTimeout: time.Second}
		if got := <-report(r, ""); got.err == nil {
			t.Fatal("reported to a closed port")
		}
	})
	t.Run("no address", func(t *testing.T) {
		r := &commitreport.Reporter{Server: srv.Server, AETitle: "INGEST"}
		if got := <-report(r, "gone-2"); !errors.Is(got.err, commitreport.ErrNoPeer) {
			t.Fatalf("Report error %v, want ErrNoPeer", got.err)
		}
		if r.CanReport("PACS") {
			t.Error("CanReport without an address")
		}
	})
}

// peerName is the person PeerComment names in TestReportRefusedWithPeerText.
const peerName = "Zqxdoe^Jane"

// TestReportRefusedWithPeerText: a PACS that answers the report with a failure status and an Error Comment of its
// own (a person's name, the report's UIDs, 10 KB of text: LO's 64 characters not held to), on the requestor's
// association or on one we open, fails the report with the status, by number and meaning, and nothing of its text:
// the error is the undeliverable record's last error and reaches logs. The comment's presence is said, for the
// PACS's administrator to look in its own log; the status found by errors.As carries no comment either.
func TestReportRefusedWithPeerText(t *testing.T) {
	comment := dicomnettest.PeerComment(peerName, result.TransactionUID, result.Failed[0].SOPInstanceUID)
	answer := func(p *dicomnettest.Parrot, ctxID byte) {
		cmd, _ := p.ExpectMessage()
		p.SendResponseWithComment(ctxID, dimse.NewNEventReportRSP(cmd, dimse.Status{Code: dimse.StatusProcessingFailure}), comment)
	}
	for _, tc := range []struct {
		name string
		run  func(t *testing.T) reported
	}{
		{"on the requestor's association", func(t *testing.T) reported {
			srv, p, id := requestor(t)
			done := report(&commitreport.Reporter{Server: srv.Server, AETitle: "INGEST"}, id)
			answer(p, 5)
			return <-done
		}},
		{"on a new association", func(t *testing.T) reported {
			pl := dicomnettest.ListenParrot(t)
			done := report(&commitreport.Reporter{Peers: commitreport.Peers{"PACS": {Addr: pl.Addr}}, AETitle: "INGEST"}, "")
			p := pl.Accept()
			p.AcceptAssociation(func(r pdu.RoleSelection) *pdu.RoleSelection { return &r })
			answer(p, 1)
			p.Expect(pdu.TypeReleaseRQ)
			p.SendPDU(&pdu.ReleaseRP{})
			return <-done
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.run(t)
			var st dimse.Status
			if !errors.As(got.err, &st) || st.Code != dimse.StatusProcessingFailure || st.Comment != "" {
				t.Fatalf("Report error %v (status %+v), want the PACS's 0110 without its comment", got.err, st)
			}
			msg := got.err.Error()
			if !strings.Contains(msg, "status 0x0110 (Processing failure)") || !strings.Contains(msg, "Error Comment") {
				t.Errorf("Report error %q: want the status by number and meaning, and that the PACS commented it", msg)
			}
			for _, peer := range []string{"Zqxdoe", "Jane", result.TransactionUID, result.Failed[0].SOPInstanceUID, dicomnettest.PeerFiller, "rejected for"} {
				if strings.Contains(msg, peer) {
					t.Errorf("Report error holds the PACS's text %q:\n%.300s", peer, msg)
				}
			}
		})
	}
}

// TestReportWhenTheRequestorDoesNotAnswer: a requestor that keeps its association open but leaves the report
// unanswered for the response timeout is reported to on a new association, as if it had left.
func TestReportWhenTheRequestorDoesNotAnswer(t *testing.T) {
	srv, silent, id := requestor(t)
	pl := dicomnettest.ListenParrot(t)
	r := &commitreport.Reporter{Server: srv.Server, Peers: commitreport.Peers{"PACS": {Addr: pl.Addr}}, AETitle: "INGEST",
		ResponseTimeout: 300 * time.Millisecond}
	done := report(r, id)
	if cmd, _ := silent.ExpectMessage(); cmd.CommandField != dimse.NEventReportRQ {
		t.Fatalf("on the requestor's association: %+v", cmd)
	}
	p := pl.Accept()
	takeReport(t, p)
	if got := <-done; got.err != nil || got.d.SameAssociation {
		t.Fatalf("Report = %+v, %v; want delivered on a new association", got.d, got.err)
	}
}

// TestWriteMarginCoversTheTeardown: a delivery cut by its run (pipeline.CommitmentWriteMargin before the
// invocation's end) tears its association down within the margin, the A-ABORT's write (even to a PACS that stopped
// reading) and ARTIM, and leaves the store's write of the attempt at least 2 s; and the least a delivery is given
// (MinReport) is within its bound.
func TestWriteMarginCoversTheTeardown(t *testing.T) {
	const storeWrite = 2 * time.Second
	if teardown := dicomnet.TeardownWriteTimeout + commitreport.ARTIMTimeout; pipeline.CommitmentWriteMargin < teardown+storeWrite {
		t.Errorf("CommitmentWriteMargin %v < the teardown %v + the store's write %v", pipeline.CommitmentWriteMargin, teardown, storeWrite)
	}
	r := &commitreport.Reporter{}
	if r.MinReport() <= 0 || r.MinReport() > r.MaxReport() {
		t.Errorf("MinReport %v, MaxReport %v", r.MinReport(), r.MaxReport())
	}
}
