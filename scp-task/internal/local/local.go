// Package local wires scp-task's all-in-one mode: the file object store
// with a durable hand-off to the pipeline, the pipeline itself on SQLite
// stores, the event log and webhooks, and the portal.
//
// Exactly-once processing: after the file store made an object durable,
// Store.Put records its key as pending in SQLite (with the SCP's metadata)
// before the SCP answers success. A worker processes pending keys one at a
// time, each in one SQLite transaction that holds every index, audit and
// event write of the pipeline and marks the key done; only then is it
// committed. A crash before the commit leaves no trace in the database and
// the key pending, so it is processed again from the start after restart; a
// crash after it leaves the key done, so it is never processed again. Files
// the pipeline writes (metadata sidecars, quarantine copies) are rewritten
// with identical content on a rerun. Keys stored but never recorded (a crash
// between the file's rename and the hand-off insert) are found on start by
// listing incoming/ and audit/ and enqueued. The pipeline's own idempotency
// (conditional audit appends, content-addressed index upserts, the publish
// ledger) is a second line of defence, not the one relied on.
package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/portal"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/localstore"
	"github.com/dicom-ingest/dicom-ingest/shared/logname"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/version"
)

// CrashEnv names the fault-injection hook of the restart tests. It is read
// only when set: "after-store" exits the process right after an object was
// stored and handed off, before the pipeline ran; "before-handoff" exits
// after the file store made it durable but before the hand-off record; and
// "before-commit" exits inside the pipeline's transaction, after all its
// work, before the commit. Exit status is CrashExitCode.
const CrashEnv = "DICOM_INGEST_TEST_CRASH_AFTER_STORE"

// CrashExitCode is the exit status of an injected crash.
const CrashExitCode = 86

// Config is the local mode's configuration.
type Config struct {
	DataDir      string        // holds objects/, the SQLite db and events.log
	PortalListen string        // default 127.0.0.1:8080
	Webhooks     []string      // events are POSTed to each, with retries
	QuietPeriod  time.Duration // study stability; 0 means pipeline.DefaultQuietPeriod
	Logger       *slog.Logger
	Registry     *prometheus.Registry // may be nil
	// Names names objects in logs by a keyed digest of their key (see
	// logname); nil uses a key drawn for this process.
	Names *logname.Namer

	// PatientData is the event content policy ("" means none): events
	// leave the machine through webhooks.
	PatientData pipeline.PatientDataPolicy
	// ObjectStore opens the file store on dir; nil means the default file
	// store. Tests inject failing stores here.
	ObjectStore func(dir string) (objectstore.Store, error)
	// AuditFeed prepares the audit feed's outbox (see Local.AuditFeed)
	// before any record is processed, so the first time the feed is on it
	// starts exactly where the trail ends.
	AuditFeed bool
}

// Local is a running local mode.
type Local struct {
	cfg      Config
	log      *slog.Logger
	db       *localstore.DB
	files    *files
	store    *handoffStore
	counters *counters
	pub      *localstore.Publisher
	wake     chan struct{}
	crash    string

	ln     net.Listener
	http   *http.Server
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	processed *prometheus.CounterVec
	feed      *localstore.AuditFeed
}

// DBFile and EventLogFile are the names of the database and the event log
// inside DataDir; objects live under DataDir/objects.
const (
	DBFile       = "ingest.db"
	EventLogFile = "events.log"
	ObjectsDir   = "objects"
)

// maxAttempts is how often a key is tried before it is parked as failed.
const maxAttempts = 5

// Start opens the stores, recovers unfinished hand-offs, starts the pipeline
// worker, the announcer, the event publisher and the portal.
func Start(ctx context.Context, cfg Config) (*Local, error) {
	if cfg.DataDir == "" {
		cfg.DataDir = "./data"
	}
	if cfg.PortalListen == "" {
		cfg.PortalListen = "127.0.0.1:8080"
	}
	if cfg.QuietPeriod <= 0 {
		cfg.QuietPeriod = pipeline.DefaultQuietPeriod
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ObjectStore == nil {
		cfg.ObjectStore = defaultObjectStore(cfg.Names)
	}
	log := cfg.Logger.With("component", "local")
	objDir := filepath.Join(cfg.DataDir, ObjectsDir)
	if err := os.MkdirAll(objDir, 0o750); err != nil {
		return nil, fmt.Errorf("local: data dir: %w", err)
	}
	inner, err := cfg.ObjectStore(objDir)
	if err != nil {
		return nil, fmt.Errorf("local: object store: %w", err)
	}
	db, err := localstore.Open(ctx, filepath.Join(cfg.DataDir, DBFile))
	if err != nil {
		return nil, err
	}
	l := &Local{
		cfg: cfg, log: log, db: db,
		files:    &files{root: objDir, db: db},
		counters: newCounters(time.Now),
		wake:     make(chan struct{}, 1),
		crash:    os.Getenv(CrashEnv),
	}
	l.store = &handoffStore{inner: inner, handoff: db.Handoff(), wake: l.wakeWorker, crash: l.crash, log: log, names: cfg.Names}
	l.pub = &localstore.Publisher{DB: db, LogPath: filepath.Join(cfg.DataDir, EventLogFile), Logger: cfg.Logger.With("component", "events")}
	if err := l.register(cfg.Registry); err != nil {
		_ = db.Close()
		return nil, err
	}
	if cfg.AuditFeed {
		if l.feed, err = db.AuditFeed(ctx); err != nil {
			_ = db.Close()
			return nil, err
		}
	}
	if n, err := l.reconcile(ctx); err != nil {
		_ = db.Close()
		return nil, err
	} else if n > 0 {
		log.Info("recovered objects stored before a restart but never handed off", "count", n)
	}
	ln, err := net.Listen("tcp", cfg.PortalListen)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("local: portal listen: %w", err)
	}
	l.ln = ln
	ps := &portal.Server{
		Studies: db.IndexStore(), Audit: db.AuditStore(), Events: db, Objects: l.files,
		Counters: l.portalCounters,
		Health:   func(ctx context.Context) error { return db.SQL().PingContext(ctx) },
		Logger:   cfg.Logger.With("component", "portal"),
		Names:    cfg.Names,
	}
	l.http = &http.Server{Handler: ps.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	if host, _, _ := net.SplitHostPort(cfg.PortalListen); host != "" && !isLoopback(host) {
		log.Warn("portal is reachable beyond this machine and shows patient data", "listen", cfg.PortalListen)
	}

	run, cancel := context.WithCancel(context.WithoutCancel(ctx))
	l.cancel = cancel
	l.goRun(func() { l.worker(run) })
	l.goRun(func() { l.announcer(run) })
	l.goRun(func() {
		if err := l.pub.Run(run); err != nil {
			log.Error("event publisher stopped", "err", err)
		}
	})
	l.goRun(func() {
		if err := l.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("portal stopped", "err", err)
		}
	})
	log.Info("local mode started", "data_dir", cfg.DataDir, "portal", "http://"+ln.Addr().String()+"/", "quiet_period", cfg.QuietPeriod, "webhooks", len(cfg.Webhooks))
	return l, nil
}

// AuditFeed returns the audit feed's outbox: the audit table, read from
// where the feed last got to. Config.AuditFeed must have been set.
func (l *Local) AuditFeed() (*localstore.AuditFeed, error) {
	if l.feed == nil {
		return nil, errors.New("local: the audit feed was not prepared (Config.AuditFeed)")
	}
	return l.feed, nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (l *Local) goRun(f func()) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		f()
	}()
}

// Store is the store the SCP must use.
func (l *Local) Store() objectstore.Store { return l.store }

// Observer feeds the portal's live counters.
func (l *Local) Observer() dicomnet.Observer { return l.counters }

// PortalAddr is the portal's listening address (host:port).
func (l *Local) PortalAddr() string { return l.ln.Addr().String() }

// Shutdown stops the portal, lets the worker finish the object in hand and
// flushes what events it can, then closes the database.
func (l *Local) Shutdown(ctx context.Context) error {
	var err error
	l.once.Do(func() {
		err = l.http.Shutdown(ctx)
		l.cancel()
		done := make(chan struct{})
		go func() { l.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			err = errors.Join(err, ctx.Err())
			return // leave the database open: goroutines may still use it
		}
		flush, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if ferr := l.pub.Flush(flush); ferr != nil {
			l.log.Warn("events left undelivered at shutdown; they are delivered after restart", "err", ferr)
		}
		err = errors.Join(err, l.db.Close())
	})
	if err != nil {
		return fmt.Errorf("local: shutdown: %w", err)
	}
	return nil
}

func (l *Local) portalCounters(ctx context.Context) portal.Counters {
	c := l.counters.snapshot()
	if n, err := l.db.Handoff().Counts(ctx); err == nil {
		c.PendingPipeline, c.FailedPipeline = int64(n["pending"]), int64(n["failed"])
	}
	return c
}

func (l *Local) wakeWorker() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// reconcile enqueues objects and audit records present in the store but
// unknown to the hand-off table.
func (l *Local) reconcile(ctx context.Context) (int, error) {
	var n int
	for _, p := range []struct{ prefix, suffix string }{{pipeline.AuditPrefix, ".json"}, {pipeline.IncomingPrefix, ".dcm"}} {
		keys, err := l.files.List(p.prefix, p.suffix)
		if err != nil {
			return n, err
		}
		added, err := l.db.Handoff().EnqueueMissing(ctx, keys, time.Now())
		n += added
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// worker processes pending keys until ctx is done.
func (l *Local) worker(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	backoff := map[string]time.Time{}
	for {
		keys, err := l.db.Handoff().Pending(ctx, 100)
		if err != nil && ctx.Err() == nil {
			l.log.Error("read hand-off queue", "err", err)
		}
		for _, k := range keys {
			if ctx.Err() != nil {
				return
			}
			if time.Now().Before(backoff[k]) {
				continue
			}
			if err := l.process(ctx, k); err != nil {
				if ctx.Err() != nil {
					return
				}
				l.log.Warn("pipeline failed; will retry", "object", l.cfg.Names.Key(k), "err", l.cfg.Names.Redact(err, k))
				if ferr := l.db.Handoff().Fail(context.WithoutCancel(ctx), k, err, maxAttempts); ferr != nil {
					l.log.Error("record pipeline failure", "object", l.cfg.Names.Key(k), "err", l.cfg.Names.Redact(ferr, k))
				}
				backoff[k] = time.Now().Add(2 * time.Second)
				l.count("error")
				continue
			}
			delete(backoff, k)
			l.pub.Notify()
		}
		select {
		case <-ctx.Done():
			return
		case <-l.wake:
		case <-t.C:
		}
	}
}

func (l *Local) pipeline(tx *localstore.Tx) *pipeline.Pipeline {
	return &pipeline.Pipeline{
		Objects: l.files, Writer: &txFiles{files: l.files, tx: tx},
		Audit: tx.AuditStore(), Index: tx.IndexStore(), Events: tx.Outbox(),
		Logger:        l.cfg.Logger.With("component", "pipeline"),
		Names:         l.cfg.Names,
		QuietPeriod:   l.cfg.QuietPeriod,
		PatientData:   l.cfg.PatientData,
		AuditSourceID: "dicom-ingest-local",
	}
}

// process runs the pipeline on key in one transaction with its hand-off.
func (l *Local) process(ctx context.Context, key string) error {
	return l.db.InTx(ctx, l.cfg.Webhooks, func(tx *localstore.Tx) error {
		p := l.pipeline(tx)
		result := "audit"
		switch {
		case strings.HasPrefix(key, pipeline.AuditPrefix):
			if err := p.ProcessAuditRecord(ctx, key); err != nil {
				return err
			}
		default:
			res, err := p.ProcessObject(ctx, key)
			if err != nil {
				return err
			}
			switch {
			case res.Skipped:
				result = "skipped"
			case !res.Valid:
				result = "quarantined"
			default:
				result = res.Outcome.String()
			}
		}
		if l.crash == "before-commit" && strings.HasPrefix(key, pipeline.IncomingPrefix) {
			l.log.Warn("fault injection: exiting before the pipeline's commit", "env", CrashEnv)
			os.Exit(CrashExitCode)
		}
		if err := tx.MarkDone(ctx, key, time.Now()); err != nil {
			return err
		}
		l.count(result)
		return nil
	})
}

// announcer publishes Study Received / Study Updated for quiet studies.
func (l *Local) announcer(ctx context.Context) {
	every := l.cfg.QuietPeriod / 4
	every = min(max(every, 100*time.Millisecond), 5*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var n int
		err := l.db.InTx(ctx, l.cfg.Webhooks, func(tx *localstore.Tx) error {
			var err error
			n, err = l.pipeline(tx).AnnounceStableStudies(ctx, time.Now())
			return err
		})
		if err != nil && ctx.Err() == nil {
			l.log.Warn("announce stable studies", "err", err)
		}
		if n > 0 {
			l.pub.Notify()
		}
	}
}

func (l *Local) register(reg *prometheus.Registry) error {
	l.processed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dicom_ingest_local_pipeline_processed_total",
		Help: "Keys the local pipeline processed, by result (new, duplicate, conflict, quarantined, audit, skipped, error).",
	}, []string{"result"})
	if reg == nil {
		return nil
	}
	pending := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "dicom_ingest_local_pipeline_pending",
		Help: "Objects and audit records stored but not yet processed by the local pipeline.",
	}, func() float64 {
		n, err := l.db.Handoff().Counts(context.Background())
		if err != nil {
			return -1
		}
		return float64(n["pending"])
	})
	for _, c := range []prometheus.Collector{l.processed, pending} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("local: metrics: %w", err)
		}
	}
	return nil
}

func (l *Local) count(result string) { l.processed.WithLabelValues(result).Inc() }

// handoffStore is the SCP's store in local mode: the file store, plus the
// durable hand-off record written before Put returns.
type handoffStore struct {
	inner   objectstore.Store
	handoff *localstore.Handoff
	wake    func()
	crash   string
	log     *slog.Logger
	names   *logname.Namer
}

var _ objectstore.Store = (*handoffStore)(nil)

// Put stores the object, then records the hand-off; success is reported
// only when both are durable.
func (s *handoffStore) Put(ctx context.Context, obj objectstore.Object, part10 io.Reader) (objectstore.Stored, error) {
	st, err := s.inner.Put(ctx, obj, part10)
	if err != nil {
		return st, err
	}
	if s.crash == "before-handoff" {
		s.log.Warn("fault injection: exiting after the store, before the hand-off", "env", CrashEnv)
		os.Exit(CrashExitCode)
	}
	md := map[string]string{
		"calling-ae": obj.CallingAE, "called-ae": obj.CalledAE, "peer-addr": obj.PeerAddr,
		"association-id": obj.AssociationID, "received-at": obj.ReceivedAt.UTC().Format(time.RFC3339Nano),
		"sop-class-uid": obj.SOPClassUID, "sop-instance-uid": obj.SOPInstanceUID,
		"transfer-syntax-uid": obj.TransferSyntaxUID, "sha256": st.SHA256,
		"implementation-version": version.ImplementationVersionName,
	}
	if st.Conflict {
		md["conflict"] = "true"
	}
	// A duplicate resend is enqueued too: if its first delivery is already
	// done this is a no-op, and if the first was lost it is processed now.
	if _, err := s.handoff.Enqueue(context.WithoutCancel(ctx), st.Key, time.Now(), md); err != nil {
		return st, fmt.Errorf("local: hand off %v: %w: %w", s.names.Key(st.Key), objectstore.ErrUnavailable, err)
	}
	if s.crash == "after-store" || s.crash == "1" {
		s.log.Warn("fault injection: exiting after the store and hand-off, before the pipeline", "env", CrashEnv)
		os.Exit(CrashExitCode)
	}
	s.wake()
	return st, nil
}

// PutRecord stores an association record and hands it to the pipeline.
func (s *handoffStore) PutRecord(ctx context.Context, key string, body []byte) error {
	if err := s.inner.PutRecord(ctx, key, body); err != nil {
		return err
	}
	if _, err := s.handoff.Enqueue(context.WithoutCancel(ctx), key, time.Now(), nil); err != nil {
		return fmt.Errorf("local: hand off %s: %w", key, err)
	}
	s.wake()
	return nil
}

// Ready reports the file store's readiness.
func (s *handoffStore) Ready(ctx context.Context) error { return s.inner.Ready(ctx) }
