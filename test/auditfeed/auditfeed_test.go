// Package auditfeed runs scp-task, in local mode and with the file store,
// against a real syslog TLS collector (rsyslog with its GnuTLS driver) and
// checks the audit feed end to end: every record of real associations
// arrives as a schema-valid DICOM audit message, and a collector that is
// down neither slows nor fails C-STORE, its backlog delivered once it is
// back.
package auditfeed

import (
	"context"
	"encoding/xml"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/auditfeed/auditfeedtest"
	"github.com/dicom-ingest/dicom-ingest/shared/auditmessage/auditmessagetest"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
	pt "github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/dcmtk"
	"github.com/dicom-ingest/dicom-ingest/test/internal/scptest"
)

const (
	callingAE = "MODALITY1"
	calledAE  = "INGEST"
	studyUID  = "1.2.826.0.1.3680043.10.77"
	seriesUID = "1.2.826.0.1.3680043.10.77.1"
)

func sopUID(i int) string { return fmt.Sprintf("%s.%d", seriesUID, i) }

// mode is how scp-task runs: its flags given the collector's address.
type mode struct {
	name  string
	local bool
}

var modes = []mode{{"local mode", true}, {"file store", false}}

func (m mode) start(t *testing.T, pki *auditfeedtest.PKI, collector string) *scptest.SCP {
	t.Helper()
	args := []string{"--ae-title", calledAE, "--calling-aes", callingAE,
		"--audit-syslog", "tls://" + collector, "--audit-syslog-ca", pki.CA}
	if m.local {
		args = append(args, "--local", "--data-dir", t.TempDir(), "--portal-listen", "127.0.0.1:0")
	} else {
		args = append(args, "--audit-spool", filepath.Join(t.TempDir(), "spool"))
	}
	return scptest.Start(t, scptest.Options{Args: args, NoStore: m.local})
}

// wanted lists the messages a start of the SCP and a run of transfer must
// produce: the SCP's start (Application Activity), a rejected
// association's security alert, and, where the pipeline runs (local mode),
// one DICOM Instances Transferred per stored instance. The association's
// acceptance and release are in the audit trail only: no A.5.3 message can
// be filled without the studies and the patient, which they do not name.
func (m mode) wanted(instances int) map[string]int {
	want := map[string]int{"110100/": 1, "110113/association-rejected": 1}
	if m.local {
		want["110104/"] = instances
	}
	return want
}

// transfer runs one full association (echo, stores, release) with the
// dicomnet client and one association DCMTK's echoscu gets rejected.
func transfer(t *testing.T, scp *scptest.SCP, instances int) {
	t.Helper()
	dir := t.TempDir()
	var files []string
	for i := range instances {
		in := pt.Instance{StudyUID: studyUID, SeriesUID: seriesUID, SOPUID: sopUID(i + 1), PatientID: "PID-77", PatientName: "Doe^Jane",
			Rows: 16, Columns: 16, SourceAE: callingAE}
		f := filepath.Join(dir, fmt.Sprintf("%d.dcm", i))
		if err := os.WriteFile(f, in.Build(), 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, err := dicomnet.Dial(ctx, scp.DICOMAddr, dicomnet.ClientConfig{CallingAE: callingAE, CalledAE: calledAE,
		Contexts: append(dicomnet.StorageContexts([]string{dicomuid.CTImageStorage}, dicomuid.ExplicitVRLittleEndian),
			dicomnet.ProposedContext{AbstractSyntax: dicomuid.Verification, TransferSyntaxes: []string{dicomuid.ImplicitVRLittleEndian}})})
	if err != nil {
		t.Fatalf("associate: %v", err)
	}
	if err := a.Echo(ctx); err != nil {
		t.Fatalf("C-ECHO: %v", err)
	}
	for _, f := range files {
		st, err := a.StoreFile(ctx, f)
		if err != nil || st.Code != 0 {
			t.Fatalf("C-STORE %s: status %04X, %v", filepath.Base(f), st.Code, err)
		}
	}
	if err := a.Release(ctx); err != nil {
		t.Fatalf("release: %v", err)
	}
	testenv.RequireTools(t, "echoscu")
	r := dcmtk.Run(t, 30*time.Second, "echoscu", "-aet", "INTRUDER", "-aec", calledAE, scp.Host(), scp.Port())
	if r.Err == nil {
		t.Fatalf("echoscu with an unknown calling AE succeeded:\n%s", r.Output)
	}
}

// kinds counts messages by "EventID/first EventTypeCode", instance
// transfers as "110104/".
func kinds(t *testing.T, msgs map[string]auditfeedtest.Received) map[string]int {
	t.Helper()
	out := map[string]int{}
	for id, m := range msgs {
		eventID, types := codes(t, id, m)
		k := eventID + "/"
		if strings.HasPrefix(id, "instance:") {
			out[k]++
			continue
		}
		for _, c := range types {
			if strings.HasPrefix(c, "association-") || c == "store-failed" {
				k += c
			}
		}
		out[k]++
	}
	return out
}

// codes is message m's EventID and EventTypeCodes.
func codes(t *testing.T, id string, m auditfeedtest.Received) (eventID string, types []string) {
	t.Helper()
	var doc struct {
		Event struct {
			EventID struct {
				Code string `xml:"csd-code,attr"`
			}
			Types []struct {
				Code string `xml:"csd-code,attr"`
			} `xml:"EventTypeCode"`
		} `xml:"EventIdentification"`
	}
	if err := xml.Unmarshal(m.XML, &doc); err != nil {
		t.Fatalf("message %s: %v", id, err)
	}
	for _, c := range doc.Event.Types {
		types = append(types, c.Code)
	}
	return doc.Event.EventID.Code, types
}

// applicationStops counts the Application Stop messages (110100 with
// 110121) among msgs.
func applicationStops(t *testing.T, msgs map[string]auditfeedtest.Received) int {
	t.Helper()
	n := 0
	for id, m := range msgs {
		if eventID, types := codes(t, id, m); eventID == "110100" && slices.Contains(types, "110121") {
			n++
		}
	}
	return n
}

func covers(got, want map[string]int) bool {
	for k, n := range want {
		if got[k] < n {
			return false
		}
	}
	return true
}

// check validates every message and the syslog framing around it.
func check(t *testing.T, msgs []auditfeedtest.Received) {
	t.Helper()
	for _, m := range msgs {
		auditmessagetest.Validate(t, m.XML)
		if m.AppName != "dicom-ingest" || m.MsgID != "IHE+RFC-3881" || (m.PRI != 85 && m.PRI != 84) {
			t.Errorf("syslog header of %s: %+v", m.ID, m)
		}
		if strings.Contains(string(m.XML), "Doe") {
			t.Errorf("%s carries the patient's name", m.ID)
		}
	}
}

func TestFeedFullAssociation(t *testing.T) {
	pki := auditfeedtest.NewPKI(t)
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			rs := auditfeedtest.StartRsyslog(t, auditfeedtest.Options{PKI: pki})
			scp := m.start(t, pki, rs.Addr)
			transfer(t, scp, 3)
			want := m.wanted(3)
			var got map[string]auditfeedtest.Received
			msgs := rs.WaitFor(t, time.Minute, func(r []auditfeedtest.Received) bool {
				got, _ = auditfeedtest.Unique(r)
				return covers(kinds(t, got), want)
			})
			check(t, msgs)
			if k := kinds(t, got); len(k) != len(want) {
				t.Errorf("message kinds %v, want %v", k, want)
			}
			if m.local {
				for i := range 3 {
					if !hasPrefix(got, "instance:"+sopUID(i+1)+":") {
						t.Errorf("no DICOM Instances Transferred for instance %d", i+1)
					}
				}
			}
			scp.WaitMetric(t, "dicom_ingest_audit_feed_backlog_records", 0, 10*time.Second)
			// The feed's messages carry UIDs; its logs never do.
			for _, e := range scp.LogEntries() {
				if e["component"] != "audit-feed" {
					continue
				}
				if line := fmt.Sprint(e); strings.Contains(line, seriesUID) || strings.Contains(line, "PID-77") {
					t.Errorf("the audit feed logged identifying data: %s", line)
				}
			}
		})
	}
}

func hasPrefix(msgs map[string]auditfeedtest.Received, prefix string) bool {
	for id := range msgs {
		if strings.HasPrefix(id, prefix) {
			return true
		}
	}
	return false
}

// blackHole accepts connections and never answers, the worst a collector
// can do: a sender that waited on it would hang.
type blackHole struct {
	l     net.Listener
	mu    sync.Mutex
	conns []net.Conn
	done  chan struct{}
}

func newBlackHole(t *testing.T) *blackHole {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackHole{l: l, done: make(chan struct{})}
	go func() {
		defer close(b.done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.conns = append(b.conns, c)
			b.mu.Unlock()
		}
	}()
	t.Cleanup(b.close)
	return b
}

func (b *blackHole) close() {
	_ = b.l.Close()
	<-b.done
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conns {
		_ = c.Close()
	}
	b.conns = nil
}

// TestFeedSurvivesCollectorOutage: with the collector a black hole, C-STORE
// still succeeds and the records wait in the backlog (metrics say how many
// and how old); once a collector listens there, every record arrives.
// Duplicates are allowed and recognized by their stable ids.
func TestFeedSurvivesCollectorOutage(t *testing.T) {
	pki := auditfeedtest.NewPKI(t)
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			hole := newBlackHole(t)
			addr := hole.l.Addr().String()
			scp := m.start(t, pki, addr)
			transfer(t, scp, 3)
			records := 3.0 // accepted, released, rejected
			if m.local {
				records += 3
			}
			testenv.EventuallySawWithin(t, 30*time.Second, fmt.Sprintf("a backlog of %v records", records), func() (bool, string) {
				backlog := scp.Metric(t, "dicom_ingest_audit_feed_backlog_records")
				return backlog >= records, fmt.Sprintf("backlog %v", backlog)
			})
			if age := scp.Metric(t, "dicom_ingest_audit_feed_backlog_oldest_age_seconds"); age <= 0 {
				t.Errorf("oldest backlog age %v while the collector is down", age)
			}
			if n := scp.Metric(t, "dicom_ingest_audit_feed_messages_sent_total"); n != 0 {
				t.Errorf("%v messages counted as sent to a black hole", n)
			}

			hole.close()
			rs := auditfeedtest.StartRsyslog(t, auditfeedtest.Options{PKI: pki, Addr: addr})
			want := m.wanted(3)
			msgs := rs.WaitFor(t, 2*time.Minute, func(r []auditfeedtest.Received) bool {
				got, _ := auditfeedtest.Unique(r)
				return covers(kinds(t, got), want)
			})
			check(t, msgs)
			got, dups := auditfeedtest.Unique(msgs)
			if k := kinds(t, got); len(k) != len(want) {
				t.Errorf("message kinds %v, want %v", k, want)
			}
			t.Logf("%d messages, %d duplicates", len(msgs), dups)
			scp.WaitMetric(t, "dicom_ingest_audit_feed_backlog_records", 0, 30*time.Second)
		})
	}
}

// TestFeedDeliversTheStopBeforeExit: a clean stop (SIGTERM) delivers what
// the feed has pending before the process exits, its Application Stop
// last: the collector holds it with the process gone, not once it runs
// again. The feed was stopped as soon as the stop record was written (and
// in local mode before the pipeline had processed it), so the stop reached
// the collector only at the next start.
func TestFeedDeliversTheStopBeforeExit(t *testing.T) {
	pki := auditfeedtest.NewPKI(t)
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			rs := auditfeedtest.StartRsyslog(t, auditfeedtest.Options{PKI: pki})
			scp := m.start(t, pki, rs.Addr)
			transfer(t, scp, 2)
			scp.Stop(t)
			want := m.wanted(2)
			msgs := rs.WaitFor(t, 30*time.Second, func(r []auditfeedtest.Received) bool {
				got, _ := auditfeedtest.Unique(r)
				return covers(kinds(t, got), want) && applicationStops(t, got) > 0
			})
			check(t, msgs)
			got, _ := auditfeedtest.Unique(msgs)
			if n := applicationStops(t, got); n != 1 {
				t.Errorf("%d Application Stop messages, want 1", n)
			}
		})
	}
}
