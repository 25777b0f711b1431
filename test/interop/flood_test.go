package interop

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store/s3test"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/dcmtk"
	"github.com/dicom-ingest/dicom-ingest/test/internal/scptest"
	"github.com/dicom-ingest/dicom-ingest/test/internal/sitepki"
	"github.com/dicom-ingest/dicom-ingest/test/internal/synth"
)

// plaintextFlood connects to addr from 8 loopback addresses as fast as it
// can, each connection sending plain bytes where a TLS ClientHello belongs,
// until stop, which returns how many it made.
func plaintextFlood(addr string) (stop func() int64) {
	ctx, cancel := context.WithCancel(context.Background())
	var n atomic.Int64
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(1+i))}}
			buf := make([]byte, 512)
			for ctx.Err() == nil {
				c, err := d.DialContext(ctx, "tcp", addr)
				if err != nil {
					time.Sleep(time.Millisecond)
					continue
				}
				_ = c.SetDeadline(time.Now().Add(2 * time.Second))
				_, _ = c.Write([]byte("\x01\x00\x00\x00\x00\xcdnot a TLS handshake"))
				for {
					if _, err := c.Read(buf); err != nil {
						break
					}
				}
				c.Close()
				n.Add(1)
			}
		})
	}
	return func() int64 { cancel(); wg.Wait(); return n.Load() }
}

// TestRefusalFloodDoesNotStarveSites: an unauthenticated peer floods the
// TLS port with plaintext connections for 4 s while S3 takes 30 ms to
// write each audit record. A site meanwhile associates every 50 ms and
// sends a study with DCMTK's storescu +tls: every association is accepted
// and /readyz stays ready (the refusals' records filled the audit queue,
// so the SCP refused the site 02 03 01 as congested and the load balancer
// saw it not ready); every site association's records are written; every
// refusal is in the trail, in a record of its own or a folded record's
// count, and every folded one in the metric; the handshake failures' log
// lines are limited.
func TestRefusalFloodDoesNotStarveSites(t *testing.T) {
	testenv.RequireTools(t, "storescu")
	p := sitepki.New(t)
	srv := s3test.NewServer(t, "flood")
	proxy := s3test.NewFaultProxy(t, srv.URL, s3test.Plan{Rate: 1, Faults: []s3test.Fault{s3test.Slow}, SlowDelay: 30 * time.Millisecond,
		Match: func(r *http.Request) bool {
			return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/audit/")
		}})
	args := append([]string{"--ae-title", "REMOTE_AE", "--calling-aes", tlsAllowlist, "--log-level", "info",
		"--store", "s3://flood/p", "--s3-path-style"}, p.SCPArgs("127.0.0.1:0")...)
	scp := scptest.Start(t, scptest.Options{NoStore: true, Args: args, Env: s3test.Env(t, proxy.URL)})

	dir := t.TempDir()
	var files []string
	for i := range 20 {
		f := filepath.Join(dir, fmt.Sprintf("%d.dcm", i))
		obj := synth.Object{StudyUID: "1.2.826.0.1.3680043.2.1125.13.1", SeriesUID: "1.2.826.0.1.3680043.2.1125.13.1.1",
			SOPInstanceUID: fmt.Sprintf("1.2.826.0.1.3680043.2.1125.13.1.1.%d", i+1), PatientID: "FLOOD", PatientName: "Test^Flood", PixelBytes: 64 << 10}
		if err := obj.WriteFile(f); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}

	stopFlood := plaintextFlood(scp.TLSAddr)
	floodStarted := time.Now()
	var accepted, refused, notReady, probes atomic.Int64
	var wg sync.WaitGroup
	siteCfg := p.ServerCA.ClientConfig(p.ACert)
	wg.Go(func() {
		for time.Since(floodStarted) < 4*time.Second {
			time.Sleep(50 * time.Millisecond)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			a, err := dicomnet.Dial(ctx, scp.TLSAddr, dicomnet.ClientConfig{CallingAE: "SITE_A", CalledAE: "REMOTE_AE",
				Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
					return (&tls.Dialer{Config: siteCfg}).DialContext(ctx, network, addr)
				}})
			switch {
			case err == nil:
				accepted.Add(1)
				if err := a.Release(ctx); err != nil {
					t.Errorf("release: %v", err)
				}
			case errors.Is(err, dicomnet.RejectTemporaryCongestion):
				refused.Add(1)
			default:
				t.Errorf("site association during the flood: %v", err)
			}
			cancel()
		}
	})
	wg.Go(func() {
		for time.Since(floodStarted) < 4*time.Second {
			probes.Add(1)
			if readyz(t, scp) != http.StatusOK {
				notReady.Add(1)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	time.Sleep(500 * time.Millisecond)
	sent := time.Now()
	sargs := append(p.DCMTK(&p.A, "+py"), "-aet", "SITE_A", "-aec", "REMOTE_AE", "127.0.0.1", scp.TLSPort())
	if r := dcmtk.Run(t, time.Minute, "storescu", append(sargs, files...)...); r.Err != nil {
		t.Errorf("storescu +tls during the flood: %v\n%s", r.Err, tail(r.Output, 2000))
	}
	t.Logf("storescu sent %d objects during the flood in %s", len(files), time.Since(sent).Round(time.Millisecond))
	wg.Wait()
	flood := stopFlood()
	floodFor := time.Since(floodStarted)
	t.Logf("flood: %d connections in %s; site associations: %d accepted, %d refused 02 03 01; /readyz not ready %d of %d times",
		flood, time.Since(floodStarted).Round(time.Millisecond), accepted.Load(), refused.Load(), notReady.Load(), probes.Load())
	if refused.Load() > 0 || accepted.Load() == 0 {
		t.Errorf("%d site associations refused as congested during the flood, %d accepted", refused.Load(), accepted.Load())
	}
	if notReady.Load() > 0 {
		t.Errorf("/readyz answered not ready %d of %d times during the flood", notReady.Load(), probes.Load())
	}
	failures := scp.MetricSum(t, "dicom_ingest_tls_handshake_failures_total") // by reason
	if failures < 100 {
		t.Fatalf("only %v handshakes failed: no flood", failures)
	}
	scp.WaitMetric(t, "dicom_ingest_associations_active", 0, 10*time.Second)
	scp.WaitMetric(t, "dicom_ingest_audit_queue_length", 0, 30*time.Second)
	foldedMetric := scp.Metric(t, "dicom_ingest_audit_refusals_folded_total")
	scp.Stop(t)
	folded := 0.0
	for _, e := range scp.LogEntries() {
		if e["msg"] == "audit: refusals folded into one record per peer: refused connections come faster than the audit trail writes them one by one" {
			folded++
		}
	}
	if folded == 0 {
		t.Error("the folding of refusals is not logged")
	}

	var recs []associationaudit.Record
	keys, err := srv.Keys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if !strings.Contains(k, "/audit/") {
			continue
		}
		b, _, err := srv.Object(k)
		if err != nil {
			t.Fatal(err)
		}
		r, err := associationaudit.Parse(b)
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		recs = append(recs, r)
	}
	count := map[string]int{}
	refusals, records, own := 0, 0, 0
	for _, r := range recs {
		switch {
		case r.Event == associationaudit.EventApplicationStop && r.Lost != nil:
			t.Errorf("records lost: %+v", *r.Lost)
		case r.Event == associationaudit.EventRejected && r.CallingAE == "" && r.Count == 0:
			records++
			refusals++
			own++
		case r.Event == associationaudit.EventRejected && r.CallingAE == "":
			records++
			refusals += max(r.Count, 1)
		case r.CallingAE == "SITE_A":
			count[r.Event]++
		}
	}
	// Every site association: the probes' and storescu's.
	if want := int(accepted.Load()) + 1; count[associationaudit.EventAccepted] != want || count[associationaudit.EventReleased] != want {
		t.Errorf("site records %v, want %d accepted and released", count, want)
	}
	if refusals != int(failures) {
		t.Errorf("the trail holds %d refused handshakes, the metric %v", refusals, failures)
	}
	t.Logf("%v refused handshakes in %d records", failures, records)
	if foldedMetric < failures-float64(own) || foldedMetric > failures {
		t.Errorf("%v refusals folded by the metric; %v failed, %d written on their own", foldedMetric, failures, own)
	}
	if records > 2*64+1 {
		t.Errorf("%d records of refused handshakes, want at most %d a window", records, 2*64+1)
	}
	lines := 0
	for _, e := range scp.LogEntries() {
		if e["msg"] == "dicomnet: TLS handshake failed" {
			lines++
		}
	}
	// The flood lasts until storescu is done, which a loaded machine can
	// take past a window: at most a burst in each window it touches, and
	// one more for a handshake failing as it stops.
	if want := 10 * (int(floodFor/(10*time.Second)) + 2); lines > want {
		t.Errorf("%d lines of failed handshakes for a flood of %s, want at most 10 in each 10 s (%d)", lines, floodFor.Round(time.Second), want)
	}
}
