package ingest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/part10"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/shared/testpki"
	"github.com/dicom-ingest/dicom-ingest/shared/tlstrust"
)

// memStore keeps what was put, or fails every Put with err.
type memStore struct {
	objs map[string][]byte
	meta map[string]objectstore.Object
	err  error
}

func (m *memStore) Put(_ context.Context, obj objectstore.Object, r io.Reader) (objectstore.Stored, error) {
	b, rerr := io.ReadAll(r)
	if m.err != nil {
		return objectstore.Stored{}, m.err
	}
	if rerr != nil {
		return objectstore.Stored{}, rerr
	}
	key, err := objectstore.Key(obj)
	if err != nil {
		return objectstore.Stored{}, err
	}
	if held, ok := m.objs[key]; ok && bytes.Equal(held, b) {
		return objectstore.Stored{Key: key, Size: int64(len(b)), Duplicate: true}, nil
	}
	m.objs[key], m.meta[key] = b, obj
	return objectstore.Stored{Key: key, Size: int64(len(b))}, nil
}
func (m *memStore) PutRecord(context.Context, string, []byte) error { return nil }
func (m *memStore) Ready(context.Context) error                     { return nil }

// el encodes one Explicit VR Little Endian element with a short length.
func el(group, elem uint16, vr, v string) []byte {
	if len(v)%2 == 1 {
		if vr == "UI" {
			v += "\x00"
		} else {
			v += " "
		}
	}
	b := binary.LittleEndian.AppendUint16(nil, group)
	b = binary.LittleEndian.AppendUint16(b, elem)
	b = append(b, vr...)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(v)))
	return append(b, v...)
}

func ds(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

const (
	ctClass   = "1.2.840.10008.5.1.4.1.1.2"
	explicitL = "1.2.840.10008.1.2.1"
)

func TestServeCStore(t *testing.T) {
	good := ds(el(0x0008, 0x0016, "UI", ctClass), el(0x0008, 0x0018, "UI", "1.2.3.4"),
		el(0x0010, 0x0020, "LO", "PAT1"), el(0x0020, 0x000D, "UI", "1.2.3"), el(0x0020, 0x000E, "UI", "1.2.3.9"))
	withMeta := ds(el(0x0002, 0x0010, "UI", explicitL), good)
	tests := []struct {
		name       string
		class, sop string
		ts         string
		data       []byte
		storeErr   error
		wantStatus uint16 // 0 with wantKey set: stored
		wantKey    string
		wantData   []byte // dataset bytes expected after the File Meta
		// refusedIn: the study the refusal names for the audit record (a
		// failure once the header was read).
		refusedIn string
	}{
		{name: "stored", class: ctClass, sop: "1.2.3.4", ts: explicitL, data: good,
			wantKey: "incoming/2026/05/04/1.2.3/1.2.3.9/1.2.3.4.dcm", wantData: good},
		{name: "group 0002 in dataset dropped", class: ctClass, sop: "1.2.3.4", ts: explicitL, data: withMeta,
			wantStatus: dimse.StatusElementsDiscarded, wantKey: "incoming/2026/05/04/1.2.3/1.2.3.9/1.2.3.4.dcm", wantData: good},
		{name: "instance mismatch", class: ctClass, sop: "1.2.3.5", ts: explicitL, data: good, wantStatus: dimse.StatusDataSetDoesNotMatchSOPClass},
		{name: "class mismatch", class: "1.2.840.10008.5.1.4.1.1.4", sop: "1.2.3.4", ts: explicitL, data: good, wantStatus: dimse.StatusDataSetDoesNotMatchSOPClass},
		{name: "no SOP UIDs", class: ctClass, sop: "1.2.3.4", ts: explicitL, data: el(0x0010, 0x0020, "LO", "PAT1"), wantStatus: dimse.StatusCannotUnderstand},
		{name: "unparseable", class: ctClass, sop: "1.2.3.4", ts: explicitL, data: []byte{8, 0, 0x16, 0, 'x', '?', 1, 0, 0}, wantStatus: StatusUnreadable},
		{name: "cut inside a header", class: ctClass, sop: "1.2.3.4", ts: explicitL, data: []byte{8, 0, 0x16, 0, 'x', '?', 1}, wantStatus: StatusTruncated},
		{name: "unreadable after the header", class: ctClass, sop: "1.2.3.4", ts: explicitL,
			data: ds(good, []byte{0x28, 0, 0x10, 0, 1, 2, 0, 0}), wantStatus: StatusUnreadable, refusedIn: "1.2.3"},
		{name: "pixel data shorter than declared", class: ctClass, sop: "1.2.3.4", ts: explicitL,
			data: ds(good, []byte{0xE0, 0x7F, 0x10, 0, 'O', 'W', 0, 0, 0, 0, 8, 0}, make([]byte, 100)), wantStatus: StatusTruncated, refusedIn: "1.2.3"},
		{name: "path in UID", class: ctClass, sop: "../../x", ts: explicitL,
			data: ds(el(0x0008, 0x0016, "UI", ctClass), el(0x0008, 0x0018, "UI", "../../x")), wantStatus: dimse.StatusCannotUnderstand},
		{name: "store down", class: ctClass, sop: "1.2.3.4", ts: explicitL, data: good, storeErr: objectstore.ErrUnavailable, wantStatus: dimse.StatusOutOfResources, refusedIn: "1.2.3"},
		{name: "private syntax read as its first element says", class: ctClass, sop: "1.2.3.4", ts: "1.2.826.0.1.3680043.999.1", data: good,
			wantKey: "incoming/2026/05/04/1.2.3/1.2.3.9/1.2.3.4.dcm", wantData: good},
		{name: "private syntax that cannot be read", class: ctClass, sop: "1.2.3.4", ts: "1.2.826.0.1.3680043.999.1", data: []byte{1, 2, 3, 4},
			wantStatus: StatusTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := &memStore{objs: map[string][]byte{}, meta: map[string]objectstore.Object{}, err: tt.storeErr}
			h := New(store, Options{Now: func() time.Time { return time.Date(2026, 5, 4, 3, 2, 1, 0, time.UTC) }})
			req := &dicomnet.CStoreRequest{
				Association: &dicomnet.AssociationInfo{ID: "a1", CallingAE: "LOCAL_AE", CalledAE: "REMOTE_AE",
					RemoteAddr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 7), Port: 4000}},
				AffectedSOPClassUID: tt.class, AffectedSOPInstanceUID: tt.sop, TransferSyntaxUID: tt.ts,
			}
			err := h.ServeCStore(context.Background(), req, bytes.NewReader(tt.data))
			var st dimse.Status
			if err != nil && !errors.As(err, &st) {
				t.Fatalf("error %v is not a DIMSE status", err)
			}
			if st.Code != tt.wantStatus {
				t.Fatalf("status %04X (%s), want %04X", st.Code, st.Comment, tt.wantStatus)
			}
			if tt.refusedIn != "" {
				var named *ObjectRefused
				if !errors.As(err, &named) || named.StudyInstanceUID != tt.refusedIn || named.SeriesInstanceUID != "1.2.3.9" {
					t.Errorf("refusal %#v names no study %s and series 1.2.3.9 for the audit record", err, tt.refusedIn)
				}
				if strings.Contains(err.Error(), "1.2.3.9") {
					t.Errorf("the refusal's message, which is logged, names the series: %v", err)
				}
			}
			if len(st.Comment) > dimse.MaxCommentLen {
				t.Errorf("comment longer than %d: %q", dimse.MaxCommentLen, st.Comment)
			}
			if tt.wantKey == "" {
				if len(store.objs) != 0 {
					t.Fatalf("refused object stored: %v", store.objs)
				}
				return
			}
			file, ok := store.objs[tt.wantKey]
			if !ok {
				t.Fatalf("nothing at %s (have %v)", tt.wantKey, store.meta)
			}
			r := bufio.NewReader(bytes.NewReader(file))
			meta, err := part10.ReadMeta(r)
			if err != nil {
				t.Fatal(err)
			}
			if meta.TransferSyntaxUID != tt.ts || meta.MediaStorageSOPInstanceUID != tt.sop || meta.SourceApplicationEntityTitle != "REMOTE_AE" ||
				meta.SendingApplicationEntityTitle != "LOCAL_AE" || meta.ReceivingApplicationEntityTitle != "REMOTE_AE" {
				t.Errorf("meta = %+v", meta)
			}
			rest, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(rest, tt.wantData) {
				t.Errorf("stored dataset\n%x\nwant\n%x", rest, tt.wantData)
			}
			if o := store.meta[tt.wantKey]; o.PeerAddr != "10.0.0.7:4000" || o.AssociationID != "a1" || o.CalledAE != "REMOTE_AE" {
				t.Errorf("object metadata = %+v", o)
			}
		})
	}
}

// An identical resend succeeds, and says so to the audit writer: the
// object held, the study and series its header named.
func TestResendAlreadyHeld(t *testing.T) {
	good := ds(el(0x0008, 0x0016, "UI", ctClass), el(0x0008, 0x0018, "UI", "1.2.3.4"),
		el(0x0010, 0x0020, "LO", "PAT1"), el(0x0020, 0x000D, "UI", "1.2.3"), el(0x0020, 0x000E, "UI", "1.2.3.9"))
	store := &memStore{objs: map[string][]byte{}, meta: map[string]objectstore.Object{}}
	h := New(store, Options{Now: func() time.Time { return time.Date(2026, 5, 4, 3, 2, 1, 0, time.UTC) }})
	req := &dicomnet.CStoreRequest{Association: &dicomnet.AssociationInfo{ID: "a1", CallingAE: "LOCAL_AE", CalledAE: "REMOTE_AE"},
		AffectedSOPClassUID: ctClass, AffectedSOPInstanceUID: "1.2.3.4", TransferSyntaxUID: explicitL}
	if err := h.ServeCStore(context.Background(), req, bytes.NewReader(good)); err != nil {
		t.Fatalf("first: %v", err)
	}
	err := h.ServeCStore(context.Background(), req, bytes.NewReader(good))
	var held *AlreadyHeld
	var st dimse.Status
	if !errors.As(err, &held) || !errors.As(err, &st) || !st.IsSuccess() {
		t.Fatalf("resend = %v, want a success naming the object held", err)
	}
	if held.Key != "incoming/2026/05/04/1.2.3/1.2.3.9/1.2.3.4.dcm" || held.StudyInstanceUID != "1.2.3" || held.SeriesInstanceUID != "1.2.3.9" {
		t.Errorf("held = %+v", held)
	}
	if strings.Contains(err.Error(), "1.2.3") {
		t.Errorf("its message, which is logged, names a UID: %v", err)
	}
}

// A transfer that breaks mid-dataset is no status to send: the error
// must not read as success, and nothing may be stored.
func TestBrokenTransfer(t *testing.T) {
	store := &memStore{objs: map[string][]byte{}, meta: map[string]objectstore.Object{}}
	h := New(store, Options{})
	req := &dicomnet.CStoreRequest{Association: &dicomnet.AssociationInfo{ID: "a"}, AffectedSOPClassUID: ctClass,
		AffectedSOPInstanceUID: "1.2.3.4", TransferSyntaxUID: explicitL}
	good := ds(el(0x0008, 0x0016, "UI", ctClass), el(0x0008, 0x0018, "UI", "1.2.3.4"), el(0x0020, 0x000D, "UI", "1.2.3"), el(0x0020, 0x000E, "UI", "1.2.3.9"))
	broken := io.MultiReader(bytes.NewReader(good), iotestErr{})
	if err := h.ServeCStore(context.Background(), req, broken); err == nil {
		t.Fatal("broken transfer answered as success")
	}
	if len(store.objs) != 0 {
		t.Fatal("broken transfer stored")
	}
}

// TestSenderBrokeOff: a data set the sender breaks off (A-ABORT, A-RELEASE-RQ or a closed connection in the
// middle of it: dicomnet's reader fails with ErrIncomplete) is no store failure: nothing is stored, no status can
// be answered, and dicomnet logs it ("C-STORE incomplete"). It was logged at ERROR as "store failed", beside the
// line that said what happened.
func TestSenderBrokeOff(t *testing.T) {
	store := &memStore{objs: map[string][]byte{}, meta: map[string]objectstore.Object{}}
	var logs testenv.LogBuffer
	h := New(store, Options{Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	req := &dicomnet.CStoreRequest{Association: &dicomnet.AssociationInfo{ID: "a"}, MessageID: 7, AffectedSOPClassUID: ctClass,
		AffectedSOPInstanceUID: "1.2.3.4", TransferSyntaxUID: explicitL}
	// The header is whole (its identifiers read, the object's Put begun); the break comes in what follows it.
	good := ds(el(0x0008, 0x0016, "UI", ctClass), el(0x0008, 0x0018, "UI", "1.2.3.4"), el(0x0020, 0x000D, "UI", "1.2.3"),
		el(0x0020, 0x000E, "UI", "1.2.3.9"), el(0x0028, 0x0010, "US", "\x00\x02"))
	brokeOff := io.MultiReader(bytes.NewReader(good), errReader{fmt.Errorf("%w: %w", dicomnet.ErrIncomplete, &dicomnet.AbortError{})})
	err := h.ServeCStore(context.Background(), req, brokeOff)
	if !errors.Is(err, dicomnet.ErrIncomplete) {
		t.Fatalf("ServeCStore = %v, want ErrIncomplete", err)
	}
	if len(store.objs) != 0 {
		t.Fatal("a data set broken off was stored")
	}
	if out := logs.String(); strings.Contains(out, `"level":"ERROR"`) {
		t.Errorf("a sender's abort logged as an error:\n%s", out)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

type iotestErr struct{}

func (iotestErr) Read([]byte) (int, error) { return 0, errors.New("association aborted") }

// TestObjectNamesTLSPeer: the object handed to the store names the client
// certificate of a TLS association as the association's audit records do
// (with the certificate name the allowlist bound, if any), so that the
// staged store's duplicate record, written at upload from the staged
// object alone, names it too; a plain association's names none. The name
// is the association's, made once (dicomnet sets PeerCertificateName):
// every C-STORE named the certificate anew, about 3 µs each.
func TestObjectNamesTLSPeer(t *testing.T) {
	ca := testpki.NewCA(t, "Site CA")
	site := ca.Client(t, testpki.Options{CommonName: "pacs.site-a.example"})
	state := &tls.ConnectionState{HandshakeComplete: true, PeerCertificates: []*x509.Certificate{site.Cert}}
	name := tlstrust.NameOf(site.Cert)
	association := name
	association.Subject = "CN=named once for the association"
	good := ds(el(0x0008, 0x0016, "UI", ctClass), el(0x0008, 0x0018, "UI", "1.2.3.4"), el(0x0020, 0x000D, "UI", "1.2.3"))
	for _, tc := range []struct {
		name string
		as   dicomnet.AssociationInfo
		want *associationaudit.TLSPeer
	}{
		{"bound", dicomnet.AssociationInfo{TLS: state, PeerCertificateName: &name, PeerIdentity: "pacs.site-a.example"}, associationaudit.CertificatePeer(site.Cert, "pacs.site-a.example")},
		{"unbound", dicomnet.AssociationInfo{TLS: state, PeerCertificateName: &name}, associationaudit.CertificatePeer(site.Cert, "")},
		{"the association's name", dicomnet.AssociationInfo{TLS: state, PeerCertificateName: &association}, associationaudit.NamedPeer(&association, "")},
		{"no client certificate", dicomnet.AssociationInfo{TLS: &tls.ConnectionState{HandshakeComplete: true}}, nil},
		{"plain", dicomnet.AssociationInfo{}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := &memStore{objs: map[string][]byte{}, meta: map[string]objectstore.Object{}}
			as := tc.as
			as.ID, as.CallingAE, as.CalledAE = "a1", "SITE_A", "REMOTE_AE"
			req := &dicomnet.CStoreRequest{Association: &as, AffectedSOPClassUID: ctClass, AffectedSOPInstanceUID: "1.2.3.4", TransferSyntaxUID: explicitL}
			if err := New(store, Options{}).ServeCStore(context.Background(), req, bytes.NewReader(good)); err != nil {
				t.Fatal(err)
			}
			for _, obj := range store.meta {
				if diff := cmp.Diff(tc.want, obj.TLS); diff != "" || (tc.want != nil && tc.want.Subject == "") {
					t.Errorf("object's TLS peer (-want +got):\n%s", diff)
				}
			}
			if len(store.meta) != 1 {
				t.Fatalf("%d objects stored", len(store.meta))
			}
		})
	}
}

// conflictStore is memStore as the S3 and staged stores answer a key held
// by other bytes: the object is kept beside it, flagged a conflict.
type conflictStore struct{ memStore }

func (m *conflictStore) Put(ctx context.Context, obj objectstore.Object, r io.Reader) (objectstore.Stored, error) {
	key, err := objectstore.Key(obj)
	if err != nil {
		return objectstore.Stored{}, err
	}
	held, ok := m.objs[key]
	b, err := io.ReadAll(r)
	if err != nil {
		return objectstore.Stored{}, err
	}
	if !ok || bytes.Equal(held, b) {
		m.objs[key] = b
		return objectstore.Stored{Key: key, Size: int64(len(b)), Duplicate: ok}, nil
	}
	// Named after the content, as the stores name it: the same other
	// bytes again find their copy there, a duplicate of it.
	crc, _ := objectstore.ContentChecksum(b)
	ck := objectstore.ChecksumConflictKey(key, crc)
	if _, ok := m.objs[ck]; ok {
		return objectstore.Stored{Key: ck, Size: int64(len(b)), Conflict: true, Duplicate: true}, nil
	}
	m.objs[ck] = b
	return objectstore.Stored{Key: ck, Size: int64(len(b)), Conflict: true}, nil
}

// TestSameDataSetFromAnotherAEIsNoDifferentContent: the stored file's meta
// header names the calling and the called AE, so the same data set from
// another AE (a PACS and a VNA forwarding one study) is other bytes under
// the instance's key and kept beside it, which the pipeline then finds to
// be an identical resend (its data set identity). The SCP warned of it as
// 'different content resent for an already stored instance', which it need
// not be (found by review). The same bytes again (the VNA resending) are
// found where they were kept beside (the stores answer Conflict and
// Duplicate): nothing new is stored, the C-STORE is an identical resend
// (AlreadyHeld, a duplicate record), and no copy is warned of, where the
// SCP logged "kept beside it" again for a copy it never made (found by
// walking make run with a resend of the same file from a second AE).
func TestSameDataSetFromAnotherAEIsNoDifferentContent(t *testing.T) {
	good := ds(el(0x0008, 0x0016, "UI", ctClass), el(0x0008, 0x0018, "UI", "1.2.3.4"),
		el(0x0020, 0x000D, "UI", "1.2.3"), el(0x0020, 0x000E, "UI", "1.2.3.9"))
	store := &conflictStore{memStore{objs: map[string][]byte{}, meta: map[string]objectstore.Object{}}}
	var logs testenv.LogBuffer
	h := New(store, Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	for i, c := range []struct {
		calling string
		held    bool // answered as an identical resend
	}{
		{"PACS", false},
		{"VNA", false}, // other bytes (the meta header names VNA): kept beside
		{"VNA", true},  // those bytes again: the copy beside holds them
	} {
		req := &dicomnet.CStoreRequest{Association: &dicomnet.AssociationInfo{ID: c.calling, CallingAE: c.calling, CalledAE: "INGEST"},
			AffectedSOPClassUID: ctClass, AffectedSOPInstanceUID: "1.2.3.4", TransferSyntaxUID: explicitL}
		err := h.ServeCStore(context.Background(), req, bytes.NewReader(good))
		var held *AlreadyHeld
		if errors.As(err, &held) != c.held || (err != nil && held == nil) {
			t.Errorf("C-STORE %d from %s: %v, want already held %v", i+1, c.calling, err, c.held)
		}
	}
	out := logs.String()
	if n := strings.Count(out, "kept beside it"); n != 1 {
		t.Fatalf("%d lines say a copy was kept beside the held object, want 1 (the second C-STORE's):\n%s", n, out)
	}
	if strings.Contains(out, "different content") {
		t.Errorf("the same data set from another AE logged as different content:\n%s", out)
	}
}
