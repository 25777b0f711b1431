package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/config"
	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/local"
	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/auditfeed"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// spoolSourceID names scp-task in the audit messages it feeds without the
// pipeline: the same system name the pipeline uses in AWS.
const spoolSourceID = "dicom-ingest"

// auditFeed is the running audit feed (--audit-syslog). In local mode its
// outbox is the audit table; otherwise the SCP's association records go
// into a spool on disk as they are written.
type auditFeed struct {
	feeder  *auditfeed.Feeder
	spool   *auditfeed.Spool
	metrics *auditfeed.Metrics
	log     *slog.Logger
	cancel  context.CancelFunc
	done    chan struct{}
}

// startAuditFeed starts the feed, or returns nil when it is off.
func startAuditFeed(ctx context.Context, cfg config.Config, lm *local.Local, reg prometheus.Registerer, log *slog.Logger) (*auditFeed, error) {
	if cfg.AuditSyslog == "" {
		return nil, nil
	}
	log = log.With("component", "audit-feed")
	metrics, err := auditfeed.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	f := &auditFeed{metrics: metrics, log: log, done: make(chan struct{})}
	var outbox auditfeed.Outbox
	if lm != nil {
		if outbox, err = lm.AuditFeed(); err != nil {
			return nil, fmt.Errorf("audit feed: %w", err)
		}
	} else {
		if f.spool, err = auditfeed.OpenSpool(cfg.AuditSpool, cfg.AuditSpoolMax); err != nil {
			return nil, fmt.Errorf("audit feed (--audit-spool): %w", err)
		}
		outbox = f.spool
	}
	host, err := os.Hostname()
	if err != nil {
		host = ""
	}
	f.feeder = &auditfeed.Feeder{
		Outbox: outbox, Sender: auditCollector(cfg, log),
		Header: auditfeed.Header{Hostname: host}, Logger: log, Metrics: metrics,
	}
	f.feeder.Init()
	run, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f.cancel = cancel
	go func() {
		defer close(f.done)
		if err := f.feeder.Run(run); err != nil {
			log.Error("audit feed stopped", "err", err)
		}
	}()
	log.Info("audit feed on", "collector", cfg.AuditSyslogAddr, "outbox", map[bool]string{true: "database", false: "spool"}[lm != nil])
	return f, nil
}

// AuditTLSNotReloadedLog is logged when the audit feed's TLS client files (--audit-syslog-ca, --audit-syslog-cert,
// --audit-syslog-key), read again for each connection to the collector, do not load: the configuration loaded last
// stays in use. Once for each failure, until they load again (auditfeed.ReloadTLS).
const AuditTLSNotReloadedLog = auditfeed.TLSNotReloadedLog

// auditCollector is the feed's collector (--audit-syslog) with its TLS client configuration: the CA and client
// certificate read again for each connection (config.Config.AuditTLSLoad), as the Storage Commitment reporter reads
// its own for each association, so that files renewed on disk are used from the next batch on without a restart.
// When they do not load (a file half written, a renewal not valid now), the configuration loaded last stays in use,
// logged once (AuditTLSNotReloadedLog): the rule of auditfeed.ReloadTLS (tlstrust.LastGood), starting from the one
// read at start. A certificate out of date read again unchanged (at start, or since) is no renewal that failed: it
// stays in use, sent only while valid, and nothing is logged (scp-task's start warned of it).
func auditCollector(cfg config.Config, log *slog.Logger) *auditfeed.Collector {
	c := &auditfeed.Collector{Addr: cfg.AuditSyslogAddr, TLS: cfg.AuditTLS}
	if cfg.AuditTLSLoad == nil {
		return c
	}
	c.LoadTLS = auditfeed.ReloadTLS(cfg.AuditTLS, func(context.Context) (*tls.Config, error) { return cfg.AuditTLSLoad() }, log)
	return c
}

// add spools an association record (scp-task without local mode); it is
// the audit writer's Feed hook, so it runs on the writer's goroutine.
func (f *auditFeed) add(r associationaudit.Record) {
	err := f.spool.Add(pipeline.AssociationAuditRecord(r, spoolSourceID))
	switch {
	case errors.Is(err, auditfeed.ErrSpoolFull):
		f.metrics.Dropped(auditfeed.ReasonSpoolFull)
		f.log.Error("audit spool full: record kept in the audit trail but not fed", "event", r.Event, "association", r.AssociationID)
	case err != nil:
		f.metrics.Dropped(auditfeed.ReasonSpoolWrite)
		f.log.Error("audit spool write failed: record kept in the audit trail but not fed", "event", r.Event, "association", r.AssociationID, "err", err)
	default:
		f.feeder.Wake()
	}
}

// feedHook is what the audit writer calls: nil unless records are spooled.
func (f *auditFeed) feedHook() func(associationaudit.Record) {
	if f == nil || f.spool == nil {
		return nil
	}
	return f.add
}

// stop ends delivery; what is undelivered stays in the outbox for the
// next start. It may be called again.
func (f *auditFeed) stop() {
	if f == nil {
		return
	}
	f.cancel()
	<-f.done
}

// finish ends delivery at a clean stop: it delivers what the outbox holds
// until ctx ends (the stop's last records among it), then stops. What is
// undelivered then stays in the outbox for the next start, and a line
// says how many.
func (f *auditFeed) finish(ctx context.Context) {
	if f == nil {
		return
	}
	f.stop()
	left, err := f.feeder.Flush(ctx)
	if left > 0 || err != nil {
		f.log.Warn("audit records left undelivered at stop; they are delivered after restart", "undelivered", left, "err", err)
	}
}
