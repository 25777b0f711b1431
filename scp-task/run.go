package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/net/netutil"

	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/auditwriter"
	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/commitments"
	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/config"
	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/descriptors"
	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/ingest"
	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/local"
	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/metrics"
	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/servertls"
	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/taskprotection"
	"github.com/dicom-ingest/dicom-ingest/shared/accesscontrol"
	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/commitreport"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/jsonlog"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/panicvalue"
	"github.com/dicom-ingest/dicom-ingest/shared/version"
)

// startError is a failure before scp-task served anything.
type startError struct{ error }

func (e startError) Unwrap() error { return e.error }

// run serves until ctx ends (SIGTERM), then drains: it stops accepting,
// lets in-flight associations finish within the drain timeout, aborts the
// rest and flushes the audit records.
//
// It fails fast: a data directory held by another process and every
// listen address are checked before anything is created in the data
// directory, and each failure names the setting to change.
func run(ctx, hurry context.Context, cfg config.Config, log *slog.Logger) error {
	if cfg.Local {
		if err := local.CheckDataDir(cfg.DataDir); err != nil {
			if !errors.Is(err, local.ErrDataDirInUse) { // which names the setting already
				err = dataDirError(cfg, err)
			}
			return startError{err}
		}
	}
	lns, err := listenAll(cfg)
	if err != nil {
		return startError{err}
	}
	for _, c := range cfg.CertificatesNotValid {
		// Of a secondary duty (Storage Commitment reports, the audit feed): the deliveries that present it fail,
		// counted and retried by their rules, until it is valid; C-STORE does not need it.
		log.Warn(config.CertificateNotValidLog, "setting", c.Setting, "err", c.Err)
	}
	return serve(ctx, hurry, cfg, log, lns)
}

// dataDirError is err, a failure to create, lock or write local mode's
// data directory, with the setting that chose the directory.
func dataDirError(cfg config.Config, err error) error {
	return fmt.Errorf("%w; choose a data directory this user can create and write with %s", err, cfg.Describe("data-dir"))
}

// listeners are scp-task's sockets, opened before anything else.
type listeners struct {
	dicom, tls, health, portal net.Listener
}

// listenAll opens every listener, or none: a taken address is reported
// with the flag and the environment variable that choose it.
func listenAll(cfg config.Config) (listeners, error) {
	var l listeners
	type listener struct {
		what, flag, addr string
		ln               *net.Listener
	}
	var wanted []listener
	if cfg.Listen != "" {
		wanted = append(wanted, listener{"DICOM", "listen", cfg.Listen, &l.dicom})
	}
	if cfg.TLSListen != "" {
		wanted = append(wanted, listener{"DICOM over TLS", "tls-listen", cfg.TLSListen, &l.tls})
	}
	wanted = append(wanted, listener{"health and metrics", "health-listen", cfg.HealthListen, &l.health})
	if cfg.Local {
		wanted = append(wanted, listener{"portal", "portal-listen", cfg.PortalListen, &l.portal})
	}
	var errs []error
	for _, w := range wanted {
		ln, err := net.Listen("tcp", w.addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: cannot listen on %s (%w); choose another address with %s", w.what, w.addr, err, cfg.Describe(w.flag)))
			continue
		}
		*w.ln = ln
	}
	if len(errs) > 0 {
		l.close()
		return listeners{}, errors.Join(errs...)
	}
	// The HTTP servers take their connections from the descriptors the
	// associations need: unbounded, idle ones took them all. The portal's
	// are bounded where its server is made (local.portalServer).
	l.health = netutil.LimitListener(l.health, descriptors.HealthConnections)
	return l, nil
}

func (l listeners) close() {
	for _, ln := range []net.Listener{l.dicom, l.tls, l.health, l.portal} {
		if ln != nil {
			_ = ln.Close() // never served: nothing to report
		}
	}
}

func serve(ctx, hurry context.Context, cfg config.Config, log *slog.Logger, lns listeners) (err error) {
	defer func() {
		if err != nil {
			lns.close()
		}
	}()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metricsObserver, err := metrics.New(reg)
	if err != nil {
		return startError{err}
	}
	var ahead observerList // observers the audit writer must not hold up
	var behind observerList
	names, err := logNames(cfg, os.Getenv, log)
	if err != nil {
		return startError{err}
	}

	var store objectstore.Store
	var lm *local.Local
	if cfg.Local {
		lm, err = local.Start(ctx, local.Config{
			DataDir: cfg.DataDir, PortalListen: cfg.PortalListen, PortalListener: lns.portal, Webhooks: cfg.Webhooks,
			QuietPeriod: cfg.QuietPeriod, PatientData: cfg.EventPatientData, Logger: log, Registry: reg, AuditFeed: cfg.AuditSyslog != "", Names: names,
			CommitmentWait: cfg.CommitmentWait, CommitmentReportFor: cfg.CommitmentReportFor,
			CommitmentQuarantined: cfg.CommitmentQuarantined, MinFreeBytes: cfg.MinFreeBytes,
			AuditExpirationDays: cfg.AuditExpirationDays,
			// --portal-preview-cache-bytes 0 keeps none, which local.Config
			// says with a negative value (its 0 is the default).
			PreviewCacheBytes: cmp.Or(cfg.PortalPreviewCacheBytes, -1),
		})
		if err != nil {
			err = fmt.Errorf("start local mode: %w", err)
			if errors.Is(err, fs.ErrPermission) {
				err = dataDirError(cfg, err)
			}
			return startError{err}
		}
		store = lm.Store()
		warnIfShortOfSpace(ctx, store, log)
		behind = append(behind, lm.Observer())
	} else {
		store, err = openStore(ctx, cfg, log, names, reg)
		if err != nil {
			return startError{err}
		}
	}

	if cfg.ScaleInProtection && cfg.ECSAgentURI != "" {
		protector, err := taskprotection.New(taskprotection.Options{
			AgentURI: cfg.ECSAgentURI, ReleaseAfter: cfg.ScaleInProtectionRelease, Logger: log, Metrics: reg,
		})
		if err != nil {
			return err
		}
		// Ahead of the audit writer, which may hold an event back while
		// its queue is full: an association held up so is still protected.
		ahead = append(ahead, protector)
		log.Info("scale-in protection on", "release_after", cfg.ScaleInProtectionRelease.String())
		// It outlives the drain: associations still open are still worth
		// protecting until the process ends.
		protCtx, stopProtector := context.WithCancel(context.Background())
		protDone := make(chan struct{})
		go func() { protector.Run(protCtx); close(protDone) }()
		defer func() { stopProtector(); <-protDone }()
	}

	feed, err := startAuditFeed(ctx, cfg, lm, reg, log)
	if err != nil {
		return err
	}
	defer feed.stop()
	auditOpts := auditwriter.Options{
		Implementation: version.ImplementationVersionName + " " + version.Version, Logger: log, Metrics: reg,
		Feed: feed.feedHook(), RunDir: runDir(cfg), MarkersStaleAfter: cfg.RunMarkerStaleAfter,
	}
	if m, ok := store.(auditwriter.MarkerStore); ok && auditOpts.RunDir == "" {
		// A direct S3 store: the run markers live in the bucket.
		auditOpts.Markers = m
	}
	audit, err := auditwriter.New(store, auditOpts)
	if err != nil {
		return err
	}
	observers := auditOrder(ahead, audit, metricsObserver, behind)
	ready := readiness{store: store, audit: audit}
	var clientExpiry *servertls.ClientExpiry
	if cfg.TLSListen != "" {
		if clientExpiry, err = servertls.NewClientExpiry(log, reg); err != nil {
			return fmt.Errorf("register metrics: %w", err)
		}
	}

	maxUnassociated, maxUnassociatedPerAddr, err := unassociatedBounds(cfg, log)
	if err != nil {
		return err
	}
	// Storage Commitment: requests are made durable here; in local mode the
	// worker evaluates and reports them (on the requestor's association
	// while it is open), in AWS the commitment function does.
	reporter := &commitreport.Reporter{Peers: cfg.CommitmentPeers, AETitle: cfg.AETitle, Logger: log}
	srv := &dicomnet.Server{
		Addr:                      cfg.Listen,
		AETitle:                   cfg.AETitle,
		Handler:                   ingest.New(store, ingest.Options{Logger: log}),
		Commitment:                &commitments.Handler{Store: store, CanReport: reporter.CanReport, Logger: log},
		Accept:                    admit(cfg.CallingAEs, ready, clientExpiry, log),
		MaxAssociations:           cfg.MaxAssociations,
		MaxAssociationsPerAE:      cfg.MaxAssociationsPerAE,
		MaxPDULength:              uint32(cfg.MaxPDULength),
		IdleTimeout:               cfg.IdleTimeout,
		MaxUnassociated:           maxUnassociated,
		MaxUnassociatedPerAddr:    maxUnassociatedPerAddr,
		MaxPreAssociationBytes:    cfg.MaxPreAssociationBytes,
		ProgressWindow:            cfg.ProgressWindow,
		MinProgressBytes:          cfg.MinProgressBytes,
		MaxMessageTime:            cfg.MaxMessageTime,
		ProxyProtocol:             cfg.ProxyProtocol,
		AcceptExplicitBigEndian:   cfg.AcceptBigEndian,
		ImplementationClassUID:    version.ImplementationClassUID,
		ImplementationVersionName: version.ImplementationVersionName,
		Logger:                    log,
		Observer:                  observers,
	}

	if lm != nil {
		reporter.Server = srv
		if cfg.CommitmentPeers.TLS() {
			if reporter.HandshakeFailed, err = commitmentHandshakeMetric(reg); err != nil {
				return err
			}
			reporter.TLS = func(context.Context, string) (*tls.Config, error) { return cfg.CommitmentTLS() }
			if cfg.CommitmentTLSNoClientCertificate {
				for _, ae := range slices.Sorted(maps.Keys(cfg.CommitmentPeers)) {
					if cfg.CommitmentPeers[ae].TLS {
						log.Warn(CommitmentNoClientCertificateLog, "called_ae", ae)
					}
				}
			}
		}
		lm.StartCommitments(reporter)
	}

	if err := reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "dicom_ingest_unassociated_connections", Help: "Connections that hold no association: not yet requested, or rejected and not yet closed.",
	}, func() float64 { return float64(srv.UnassociatedConnections()) })); err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	if err := reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "dicom_ingest_preassociation_bytes", Help: "Memory charged to connections that hold no association, within --max-preassociation-bytes.",
	}, func() float64 { return float64(srv.PreAssociationBytes()) })); err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}

	// The TLS files are kept current (SIGHUP, their watch, the minute's recheck) until serve returns, through the
	// drain: a SIGHUP nobody handles ends a Go process at once, and a certificate withdrawn while associations
	// drain ends them as before.
	tlsCtx, stopTLS := context.WithCancel(context.WithoutCancel(ctx))
	defer stopTLS()
	tlsConfig, err := startTLS(tlsCtx, cfg, srv, log, reg)
	if err != nil {
		return err
	}
	dicomLn, tlsLn, healthLn := lns.dicom, lns.tls, lns.health
	var draining atomic.Bool
	health := healthServer(healthMux(reg, ready, &draining, log), log)
	log.Info("scp-task listening", "dicom", addrText(dicomLn), "dicom_tls", addrText(tlsLn), "health", healthLn.Addr().String(),
		"ae_title", cfg.AETitle, "calling_aes", len(cfg.CallingAEs.AETitles()), "version", version.Version)
	audit.Started(srv.InstanceID(), cfg.AETitle)

	errc := make(chan error, 3)
	if dicomLn != nil {
		go func() { errc <- srv.Serve(dicomLn) }()
	}
	if tlsLn != nil {
		go func() { errc <- srv.ServeTLS(tlsLn, tlsConfig.Config()) }()
	}
	go func() { errc <- health.Serve(healthLn) }()

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("draining", "timeout", cfg.DrainTimeout.String(), "active_associations", srv.ActiveAssociations(),
			"stop_now", "a second SIGINT (Ctrl-C) or SIGTERM aborts the associations still open and stops")
	case runErr = <-errc:
		log.Error("server failed", "err", runErr)
	}
	// Readiness goes first so the load balancer stops sending new
	// associations while the in-flight ones finish.
	draining.Store(true)
	drainEnd := time.Now().Add(cfg.DrainTimeout)
	drainCtx, cancel := context.WithDeadline(hurry, drainEnd)
	defer cancel()
	if err := srv.Shutdown(drainCtx); err != nil {
		if hurry.Err() != nil {
			log.Warn("drain cut short by a second signal: remaining associations aborted", "err", err)
		} else {
			log.Warn("drain timeout: remaining associations aborted", "err", err)
		}
	}
	// The aborted associations end on their own goroutines: their last
	// records (the C-STORE cut short, the abort) must be queued before the
	// audit trail is flushed. Both share what is left of the stop timeout,
	// as what finishStop does with the records does after them.
	flushEnd := exitDeadline(drainEnd, time.Now(), exitGrace)
	flushCtx, cancelFlush := context.WithDeadline(context.Background(), flushEnd)
	defer cancelFlush()
	errs := []error{runErr}
	if err := srv.Wait(flushCtx); err != nil {
		errs = append(errs, fmt.Errorf("end aborted associations: %w", err))
	}
	stopReason := "shutdown requested"
	if runErr != nil {
		stopReason = "server failed: " + runErr.Error()
	}
	audit.Stopping(stopReason)
	if err := audit.Close(flushCtx); err != nil {
		errs = append(errs, fmt.Errorf("flush audit records: %w", err))
	}
	finishStop(flushCtx, hurry, lm, feed)
	closeEnd := exitDeadline(flushEnd, time.Now(), closeGrace)
	if err := closeAtExit(hurry, closerOf(lm, store), closeEnd); err != nil {
		errs = append(errs, err)
	}
	// The health server closes within what the close left of closeGrace
	// (its connections are probes').
	healthCtx, cancelHealth := context.WithDeadline(context.Background(), closeEnd)
	defer cancelHealth()
	if err := health.Shutdown(healthCtx); err != nil {
		errs = append(errs, fmt.Errorf("stop health server: %w", err))
	}
	log.Info("scp-task stopped")
	return errors.Join(errs...)
}

// finishStop has the stop's last records reach their readers before the
// database closes: once the last audit record is written (the
// application-stop), local mode's pipeline processes what it was handed,
// that record among it (into the trail the portal shows and the feed
// reads), then the audit feed delivers what its outbox holds. Both share
// what is left of ctx, the exit's grace, the feed keeping feedShare of it
// when the pipeline would use it all, and a second signal (hurry) cuts
// both short; what either leaves is taken up at the next start, as after
// a crash, and a line says how many. Without local mode and the feed
// there is nothing to do.
func finishStop(ctx, hurry context.Context, lm *local.Local, feed *auditFeed) {
	ctx, uncut := cutBySecondSignal(ctx, hurry)
	defer uncut()
	if lm != nil {
		drainCtx := ctx
		if d, ok := ctx.Deadline(); ok && feed != nil {
			var cancelDrain context.CancelFunc
			drainCtx, cancelDrain = context.WithDeadline(ctx, d.Add(-feedShare))
			defer cancelDrain()
		}
		lm.Drain(drainCtx)
	}
	feed.finish(ctx)
}

// closeAtExit closes what scp-task stores into once finishStop is done:
// local mode (the portal, the worker's object in hand, the events' last
// flush, the database, the file store), or the store alone (a journal to
// checkpoint, a staged store's uploads in flight). It has closeGrace, and
// a second signal (hurry) ends it at once: what it leaves is taken up at
// the next start, as after a crash, and a line says so
// (objectstore.Shutdowner, local.Local.Shutdown). A nil c has nothing to
// close.
func closeAtExit(hurry context.Context, c objectstore.Shutdowner, end time.Time) error {
	if c == nil {
		return nil
	}
	ctx, cancel := context.WithDeadline(context.Background(), end)
	defer cancel()
	ctx, uncut := cutBySecondSignal(ctx, hurry)
	defer uncut()
	if err := c.Shutdown(ctx); err != nil {
		return fmt.Errorf("close at exit: %w", err)
	}
	return nil
}

// exitDeadline is when a step of the stop that has grace after the step
// before it, which was to end by prevEnd, must end, the step starting now:
// grace from now, or from prevEnd when now is past it. A step that ran
// over (a drain cut at its timeout returns once its aborts are sent, a
// flush once its cancelled writes return) takes its lateness out of the
// next step's grace, not out of the stop timeout's margin, so the stop
// ends within the drain timeout, exitGrace and closeGrace whatever each
// step took.
func exitDeadline(prevEnd, now time.Time, grace time.Duration) time.Time {
	if now.After(prevEnd) {
		now = prevEnd
	}
	return now.Add(grace)
}

// closerOf is what closeAtExit closes: local mode, which closes its store,
// or else the store if it has something to finish.
func closerOf(lm *local.Local, store objectstore.Store) objectstore.Shutdowner {
	if lm != nil {
		return lm
	}
	if c, ok := store.(objectstore.Shutdowner); ok {
		return c
	}
	return nil
}

// closeGrace bounds the close at exit (closeAtExit): 2 s of what the
// stack's margin (infra/config's DrainMarginSeconds, 10 s) leaves after
// the exit's grace, a second left for the process to end before the stop
// timeout's SIGKILL.
const closeGrace = 2 * time.Second

// cutBySecondSignal returns ctx ended, with the cause "cut short by a
// second signal", as soon as hurry ends (at once if it has); stop releases
// it.
func cutBySecondSignal(ctx, hurry context.Context) (_ context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	cutShort := func() { cancel(errors.New("cut short by a second signal")) }
	stopAfter := context.AfterFunc(hurry, cutShort)
	if hurry.Err() != nil {
		cutShort() // at once: AfterFunc calls it on a goroutine of its own
	}
	return ctx, func() { stopAfter(); cancel(nil) }
}

// feedShare is the part of the exit's grace the audit feed keeps from
// local mode's pipeline at a stop (finishStop).
const feedShare = 2 * time.Second

// exitGrace bounds what follows the drain at exit: aborted associations
// ending, the audit records being flushed, then local mode's pipeline
// processing them and the audit feed delivering them (finishStop). The
// stack leaves 10 s between the drain timeout and the stop timeout's
// SIGKILL (infra/config's DrainMarginSeconds), which must hold it,
// closeGrace and a second for the process to end: with 8 s and 2 s there
// was no second, and a stop whose flush used its grace was killed before
// its last lines.
const exitGrace = 7 * time.Second

// runDir is where the audit writer keeps its run marker, so that another
// run tells what a crash may have lost: a directory that outlives the
// process, local mode's data directory, the staging directory or a file
// store's directory, beside its objects as the bucket's markers are ("" for
// a direct S3 store, whose markers live in its bucket). Every SCP sharing
// the directory reports the others' deaths.
func runDir(cfg config.Config) string {
	switch {
	case cfg.Local:
		return cfg.DataDir
	case cfg.StagingDir != "":
		return cfg.StagingDir
	case strings.HasPrefix(cfg.Store, "file://"):
		return config.StoreDir(cfg.Store)
	}
	return ""
}

// readiness is whether the SCP can take a new association: the store must
// take objects and the audit trail must take records, since an association
// we could not audit is one we must not hold.
type readiness struct {
	store objectstore.Store
	audit *auditwriter.Writer
}

func (r readiness) Ready(ctx context.Context) error {
	if err := r.audit.Ready(ctx); err != nil {
		return err
	}
	return r.store.Ready(ctx)
}

// admit is the association policy: only allowlisted calling AE titles from
// their networks, with the client certificate their entry names if it names
// one, and only while the store and the audit trail are ready (otherwise
// "temporary congestion", so PACS retry later instead of failing images).
func admit(acl *accesscontrol.Allowlist, ready readiness, clientExpiry *servertls.ClientExpiry, log *slog.Logger) func(context.Context, *dicomnet.AssociationInfo) error {
	return func(ctx context.Context, a *dicomnet.AssociationInfo) error {
		cert := verifiedClientCert(a.TLS)
		name, err := acl.Admit(accesscontrol.Peer{CallingAE: a.CallingAE, Source: addrOf(a.RemoteAddr), Certificate: cert})
		if err != nil {
			if errors.Is(err, accesscontrol.ErrCertificateMismatch) {
				// A valid certificate of our CA used for another site's AE
				// title: the audit record is a security alert; say so here too.
				p := associationaudit.CertificatePeer(cert, "")
				log.Warn("security alert: client certificate does not match the calling AE title", "association", a.ID,
					"calling_ae", a.CallingAE, "subject", p.Subject, "issuer", p.Issuer, "serial", p.Serial, "sha256", p.SHA256)
			}
			return fmt.Errorf("%w (%w)", dicomnet.RejectCallingAENotRecognized, err)
		}
		a.PeerIdentity = name
		if clientExpiry != nil {
			clientExpiry.Presented(a.CallingAE, cert)
		}
		readyCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := ready.Ready(readyCtx); err != nil {
			log.Warn("not ready, association refused", "association", a.ID, "err", err)
			return fmt.Errorf("%w (%w)", dicomnet.RejectTemporaryCongestion, err)
		}
		return nil
	}
}

// addrText is a listener's address for the log, "" for one that is off.
func addrText(l net.Listener) string {
	if l == nil {
		return ""
	}
	return l.Addr().String()
}

func addrOf(a net.Addr) netip.Addr {
	if a == nil {
		return netip.Addr{}
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// healthServer serves the health port's handler h. Its listener holds
// few connections (descriptors.HealthConnections), so none may stay with
// a client that does not take part: a load balancer's check and a scrape
// each open their own connection (an idle kept-alive one held a slot for
// ever); a request is read whole within healthReadTimeout (net/http reads
// a body declared and never sent after answering, with no deadline
// otherwise); and its answer is written within healthWriteTimeout (a
// scrape nobody reads held its slot for ever), which /readyz's 3 s leaves
// room for.
func healthServer(h http.Handler, log *slog.Logger) *http.Server {
	s := &http.Server{Handler: panicvalue.Handler(h), ReadHeaderTimeout: healthReadTimeout, ReadTimeout: healthReadTimeout,
		WriteTimeout: healthWriteTimeout, ErrorLog: jsonlog.ServerErrors(log, "health")}
	s.SetKeepAlivesEnabled(false)
	return s
}

const (
	healthReadTimeout  = 5 * time.Second
	healthWriteTimeout = 10 * time.Second
)

func healthMux(reg *prometheus.Registry, ready interface{ Ready(context.Context) error }, draining *atomic.Bool, log *slog.Logger) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	checks := &readinessLog{log: log}
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if draining.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		err := ready.Ready(ctx)
		checks.record(err)
		if err != nil {
			http.Error(w, unreadyReason(err), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	return mux
}

// unreadyReason is /readyz's answer for a readiness error.
func unreadyReason(err error) string {
	if errors.Is(err, auditwriter.ErrUnavailable) {
		return "audit records cannot be written"
	}
	return "store not ready"
}

// readinessLog logs /readyz's answer when it changes. Once the load
// balancer's check fails it sends the task no association, so no
// "not ready, association refused" line says why; and a check the store
// answers too slowly for (its caller's 3 s) logs nothing of its own.
type readinessLog struct {
	log  *slog.Logger
	mu   sync.Mutex
	last string // the reason of the last failed check; "" while ready
}

func (l *readinessLog) record(err error) {
	reason := ""
	if err != nil {
		reason = unreadyReason(err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if reason == l.last {
		return
	}
	l.last = reason
	if err != nil {
		l.log.Warn("health check failed: not ready, the load balancer sends this task no new association", "reason", reason, "err", err)
		return
	}
	l.log.Info("health check passes again: ready")
}

// observerList fans association events out to several observers.
type observerList []dicomnet.Observer

// auditOrder is the order association events go in: first the observers
// that must see an event even while the audit writer holds it back
// (ahead: scale-in protection), then the audit writer, then the metrics
// and whatever else (behind). The metrics see an event only once its
// record is queued, so dicom_ingest_associations_active at 0 and then
// dicom_ingest_audit_queue_length at 0 mean every released association's
// record is written; before, the gauge of associations dropped first, and
// a release could still be on its way into the queue
// (TestAuditOrderQueuesTheRecordBeforeTheMetricsSeeIt).
func auditOrder(ahead observerList, audit, metrics dicomnet.Observer, behind observerList) observerList {
	l := append(observerList{}, ahead...)
	l = append(l, audit, metrics)
	return append(l, behind...)
}

func (l observerList) ObserveAssociation(ev dicomnet.Event) {
	for _, o := range l {
		o.ObserveAssociation(ev)
	}
}

// unassociatedBounds raises the file descriptor limit to its hard limit and
// returns the bounds on connections without an association: those configured,
// or else the ones the limit allows next to the associations (descriptors.Plan).
func unassociatedBounds(cfg config.Config, log *slog.Logger) (total, perAddr int, err error) {
	limit, err := descriptors.Raise()
	if err != nil {
		return 0, 0, err
	}
	total, perAddr = descriptors.Plan(limit, cfg.MaxAssociations)
	if cfg.MaxUnassociated > 0 {
		total = cfg.MaxUnassociated
	}
	if cfg.MaxUnassociatedPerAddr > 0 {
		perAddr = cfg.MaxUnassociatedPerAddr
	}
	log.Info("connection bounds", "descriptor_limit", limit, "max_unassociated", total, "max_unassociated_per_address", perAddr)
	return total, perAddr, nil
}
