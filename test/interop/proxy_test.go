package interop

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/proxyproto"
	"github.com/dicom-ingest/dicom-ingest/test/internal/scptest"
)

// TestProxyProtocolSource: behind an NLB with PROXY protocol v2 the SCP
// checks a site's networks against the source the header carries, not the
// load balancer's address; without --proxy-protocol a PROXY header is a
// protocol error and nothing is associated.
func TestProxyProtocolSource(t *testing.T) {
	lb := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 104}
	site := &net.TCPAddr{IP: net.IPv4(10, 99, 3, 4), Port: 40000}
	elsewhere := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 9), Port: 40000}
	dial := func(t *testing.T, scp *scptest.SCP, header []byte) error {
		cfg := scClient("FAR_AE")
		cfg.ProxyHeader = header
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		as, err := dicomnet.Dial(ctx, scp.DICOMAddr, cfg)
		if err != nil {
			return err
		}
		if err := as.Echo(ctx); err != nil {
			t.Errorf("echo: %v", err)
		}
		return as.Release(ctx)
	}
	t.Run("on", func(t *testing.T) {
		scp := startSCP(t, "--proxy-protocol", "--calling-aes", "FAR_AE@10.99.0.0/16")
		if err := dial(t, scp, proxyproto.Append(nil, site, lb)); err != nil {
			t.Errorf("site source in its network refused: %v", err)
		}
		err := dial(t, scp, proxyproto.Append(nil, elsewhere, lb))
		var rj *dicomnet.RejectError
		if !errors.As(err, &rj) || *rj != *dicomnet.RejectCallingAENotRecognized {
			t.Errorf("source outside the site's networks: got %v, want %v", err, dicomnet.RejectCallingAENotRecognized)
		}
		if err := dial(t, scp, nil); err == nil {
			t.Error("a connection without the PROXY header was associated")
		}
	})
	t.Run("off", func(t *testing.T) {
		scp := startSCP(t, "--calling-aes", "FAR_AE@10.99.0.0/16,FAR_AE@127.0.0.0/8")
		if err := dial(t, scp, proxyproto.Append(nil, site, lb)); err == nil {
			t.Error("a PROXY header was accepted with --proxy-protocol off")
		}
		if err := dial(t, scp, nil); err != nil {
			t.Errorf("plain connection refused: %v", err)
		}
		scp.WaitMetric(t, "dicom_ingest_associations_active", 0, 5*time.Second)
	})
}
