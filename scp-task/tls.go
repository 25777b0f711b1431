package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/config"
	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/servertls"
	"github.com/dicom-ingest/dicom-ingest/shared/commitreport"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/metricnames"
)

// startTLS loads the TLS listener's certificate, key and client CA and keeps
// them current until ctx ends: reloaded on SIGHUP and when their files
// change. The associations of srv over TLS whose client certificate the
// trust in use no longer accepts (revoked, its CA removed, expired) are
// aborted at each change and every poll, and refused when they are
// requested after a handshake the trust then in use passed (srv.Accept
// checks it first). It returns nil when no TLS listener is configured; it
// is called before srv serves.
func startTLS(ctx context.Context, cfg config.Config, srv *dicomnet.Server, log *slog.Logger, reg prometheus.Registerer) (*servertls.Reloader, error) {
	if cfg.TLSListen == "" {
		return nil, nil
	}
	r, err := servertls.New(servertls.Source{Cert: cfg.TLSCert, Key: cfg.TLSKey, ClientCA: cfg.TLSClientCA, ClientCRL: cfg.TLSClientCRL,
		Describe: cfg.Describe}, log, reg)
	if err != nil {
		return nil, fmt.Errorf("start TLS listener: %w", err)
	}
	// A handshake that passed just before a reload, whose association was
	// not yet requested when the reload's recheck ran (AbortTLS leaves those
	// to their request), is checked against the trust in use when it is:
	// without this it went on until the next poll's recheck, up to a minute.
	accept := srv.Accept
	srv.Accept = func(ctx context.Context, a *dicomnet.AssociationInfo) error {
		if err := r.Refuses(a.TLS); err != nil {
			return fmt.Errorf("%w (%w)", dicomnet.RejectNoReason, err)
		}
		if accept == nil {
			return nil
		}
		return accept(ctx, a)
	}
	r.Recheck = func() {
		if n := srv.AbortTLS(r.Refuses); n > 0 {
			log.Warn("TLS associations aborted: their client certificate is no longer accepted", "aborted", n)
		}
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if err := r.Reload(); err != nil {
					log.Error("SIGHUP: TLS certificate not reloaded; the previous one stays in use", "err", err)
				}
			}
		}
	}()
	go r.Watch(ctx)
	return r, nil
}

// verifiedClientCert is the client certificate TLS verified for an
// association (the leaf of its first verified chain), or nil.
func verifiedClientCert(st *tls.ConnectionState) *x509.Certificate {
	if st == nil || len(st.VerifiedChains) == 0 || len(st.VerifiedChains[0]) == 0 {
		return nil
	}
	return st.VerifiedChains[0][0]
}

// CommitmentHandshakeFailures counts, by reason, the failed TLS handshakes of the associations local mode opens
// to deliver Storage Commitment results to tls:// peers; each failed delivery is retried as any other.
const CommitmentHandshakeFailures = "dicom_ingest_commitment_tls_handshake_failures_total"

// CommitmentNoClientCertificateLog is logged at start, once for each tls:// commitment peer (its AE title,
// called_ae), when local mode has no client certificate to present to them (no --commitment-tls-cert, no
// --tls-cert to reuse): a PACS that requires one refuses every report, and the failures would read as its fault.
const CommitmentNoClientCertificateLog = "scp-task: Storage Commitment reports over DICOM TLS present no client certificate (no --commitment-tls-cert or --tls-cert); a PACS that requires one refuses them"

// commitmentHandshakeMetric registers CommitmentHandshakeFailures, its reasons those of the listener's failed
// handshakes and our own client certificate not valid now (commitreport.HandshakeFailureReasons, each at 0 from the
// start), and returns what counts one.
func commitmentHandshakeMetric(reg prometheus.Registerer) (func(ae, reason string), error) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: CommitmentHandshakeFailures,
		Help: "Failed TLS handshakes delivering Storage Commitment results to tls:// peers, by reason.",
	}, []string{metricnames.TLSHandshakeReason})
	for _, r := range commitreport.HandshakeFailureReasons {
		c.WithLabelValues(r)
	}
	if err := reg.Register(c); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	return func(_, reason string) { c.WithLabelValues(reason).Inc() }, nil // by reason only, as the stack counts the function's
}
