// Package local wires scp-task's all-in-one mode: the file object store
// with a durable hand-off to the pipeline, the pipeline itself on SQLite
// stores, the event log and webhooks, and the portal.
//
// Exactly-once processing: Store.Put hands each object off before its
// C-STORE succeeds, durably: by its file store journal record, held until
// the pipeline is done with it (held.go), or, for an object too large for
// the journal, by a row of the hand-off queue committed before the object
// takes its key. Pipeline workers process handed-off keys, each in one
// unit of work that holds every index, audit, document and event write of
// the pipeline and marks the key done in the ledger; a crash before that
// unit's commit leaves no trace of it and the key handed off, so it is
// processed again from the start after restart; after it, the key is done
// and never processed again. On start the journal's replayed records and
// the queue are all there is to read: keys done just before a crash are
// released or pruned, keys whose object never took its key are dropped,
// the rest are processed. The pipeline's own idempotency (conditional
// audit appends, content-addressed index upserts, the publish ledger) is a
// second line of defence, not the one relied on. See localstore.Handoff
// for the queue and the ledger.
package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/portal"
	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/thumbnail"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/jsonlog"
	"github.com/dicom-ingest/dicom-ingest/shared/localstore"
	"github.com/dicom-ingest/dicom-ingest/shared/logname"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/filestore"
	"github.com/dicom-ingest/dicom-ingest/shared/panicvalue"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/retry"
	"github.com/dicom-ingest/dicom-ingest/shared/version"
)

// CrashEnv names the fault-injection hook of the restart tests. It is read
// only when set: "before-handoff" exits once an object has arrived, before
// it is handed off (its journal record appended, or its queue row written
// for an object too large for the journal); "before-place" exits, for an
// object too large for the journal, after its queue row's commit, before
// the object takes its key; "before-ack" exits once a journaled object's
// record is durable and the object in place, before its C-STORE is
// answered; "after-store" exits right after an object was stored and
// handed off, before the pipeline ran; "before-commit" exits inside the
// pipeline's unit of work, after all its work, before the commit; and
// "after-commit" exits once that commit is durable, before the object's
// journal record is released. Exit status is CrashExitCode.
const CrashEnv = "DICOM_INGEST_TEST_CRASH_AFTER_STORE"

// CrashExitCode is the exit status of an injected crash.
const CrashExitCode = 86

// Config is the local mode's configuration.
type Config struct {
	DataDir      string // holds objects/, the SQLite db and events.log
	PortalListen string // default 127.0.0.1:8080
	// PortalListener, when set, is the portal's listener (PortalListen is
	// then only its name): scp-task opens every listener before anything
	// touches the data directory, so a taken port fails the start clean.
	PortalListener net.Listener
	// PreviewCacheBytes bounds the memory the portal's cached series
	// previews take: 0 means thumbnail.DefaultCacheBytes, a negative
	// value keeps none.
	PreviewCacheBytes int64
	Webhooks          []string      // events are POSTed to each, with retries
	QuietPeriod       time.Duration // study stability; 0 means pipeline.DefaultQuietPeriod
	Logger            *slog.Logger
	Registry          *prometheus.Registry // may be nil
	// Names names objects in logs by a keyed digest of their key (see
	// logname); nil uses a key drawn for this process.
	Names *logname.Namer
	// Workers is how many objects the pipeline processes at once; 0
	// means DefaultWorkers.
	Workers int
	// MinFreeBytes is the free space the file store keeps in reserve on
	// the data directory's disk for the pipeline's database and event log
	// (filestore.WithMinFreeBytes); 0 keeps none.
	MinFreeBytes int64

	// PatientData is the event content policy ("" means none): events
	// leave the machine through webhooks.
	PatientData pipeline.PatientDataPolicy
	// ObjectStore opens the file store on dir, handing every journal
	// record it replays to handedBack (filestore.WithReplayHeld); nil
	// means the default file store. Tests inject failing stores here.
	ObjectStore func(dir string, handedBack func(key string, note []byte, release func())) (ObjectStore, error)
	// AuditFeed prepares the audit feed's outbox (see Local.AuditFeed)
	// before any record is processed, so the first time the feed is on it
	// starts exactly where the trail ends.
	AuditFeed bool

	// Storage Commitment: how long named instances may be in flight (0:
	// pipeline.DefaultCommitmentWait), how long a delivery is retried (0:
	// pipeline.DefaultCommitmentReportFor), and the calling AE titles
	// whose quarantined instances count as committed.
	CommitmentWait        time.Duration
	CommitmentReportFor   time.Duration
	CommitmentQuarantined map[string]bool

	// AuditExpirationDays, when above 0, removes the SCP's association
	// records under objects/audit/ once they are older than that many
	// days and in the audit trail (see expireRecords); 0 keeps them. Start
	// refuses one outside 0 to MaxAuditExpirationDays.
	AuditExpirationDays int

	// expiryCrash, when set (by tests), is asked after each record the
	// expiry removes and after each batch's watermark: true ends the run
	// there, as a crash would.
	expiryCrash func() bool
	// beforeCommit, when set (by tests), is called in each key's unit of
	// work once the pipeline's work for it is done, before the commit:
	// where the "before-commit" crash is injected (CrashEnv).
	beforeCommit func(key string)
	// announceIndex, when set (by tests), wraps the index the announcer's
	// runs read and write.
	announceIndex func(pipeline.IndexStore) pipeline.IndexStore
	// dbOptions, when set (by tests), are given to localstore.Open.
	dbOptions []localstore.Option
}

// PanicLog is the line of a panic (a bug) met processing one key, or in
// one run of the announcer or the Storage Commitment worker: that attempt
// fails alone, as an error would (a key is retried, and parked as failed
// after maxAttempts; a run is tried again at the next tick), instead of
// ending the SCP. The value is told by panicvalue's rule.
const PanicLog = "pipeline panicked: a bug; the attempt fails alone"

// Local is a running local mode.
type Local struct {
	cfg      Config
	log      *slog.Logger
	db       *localstore.DB
	files    *files
	store    *handoffStore
	counters *counters
	pub      *localstore.Publisher
	queue    *workQueue
	held     *heldObjects  // journaled objects handed off, their records held
	commit   chan struct{} // wakes the commitment worker
	crash    string

	lock   *dataDirLock
	ln     net.Listener
	http   *http.Server
	cancel context.CancelFunc
	runCtx context.Context // ends at Shutdown
	wg     sync.WaitGroup
	once   sync.Once

	// pipelineLog is the pipeline's logger, made once: each object's
	// pipeline would otherwise format its attribute again.
	pipelineLog *slog.Logger
	// objectURLBase is where events point for an object or document: the
	// portal's /objects/.
	objectURLBase string

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

// retryDelay is how long a key that failed waits before its next attempt.
const retryDelay = 2 * time.Second

// DefaultWorkers is the pipeline's default parallelism. A worker spends
// much of an object waiting on the disk (reading its header) and holds
// the database only for its statements, never for a commit, so a few
// workers keep up with the SCP even on two cores.
const DefaultWorkers = 4

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
		cfg.ObjectStore = defaultObjectStore(cfg.Names, cfg.MinFreeBytes, cfg.Logger.With("component", "store"))
	}
	if cfg.Workers <= 0 {
		cfg.Workers = DefaultWorkers
	}
	if d := cfg.AuditExpirationDays; d < 0 || d > MaxAuditExpirationDays {
		return nil, fmt.Errorf("local: audit expiration of %d days is outside 0 to %d", d, MaxAuditExpirationDays)
	}
	log := cfg.Logger.With("component", "local")
	ln := cfg.PortalListener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", cfg.PortalListen); err != nil {
			return nil, fmt.Errorf("local: portal listen: %w", err)
		}
	}
	l, err := open(ctx, cfg, log)
	if err != nil {
		return nil, errors.Join(err, ln.Close())
	}
	l.ln = ln
	l.objectURLBase = objectURLBase(ln.Addr())
	db := l.db
	ps := &portal.Server{
		Studies: db.IndexStore(), Search: db, Audit: db.AuditStore(), Associations: db, Events: db, Objects: l.files,
		ObjectURLBase: l.objectURLBase,
		Thumbnails:    thumbnail.New(l.files.OpenRange, thumbnail.Options{CacheBytes: cfg.PreviewCacheBytes}),
		Counters:      l.portalCounters,
		Health:        func(ctx context.Context) error { return db.SQL().PingContext(ctx) },
		SyncFailed:    l.syncFailed,
		Logger:        cfg.Logger.With("component", "portal"),
		Names:         cfg.Names,
		Commitments:   db.CommitmentStore(),
	}
	l.http, ln = portalServer(ps.Handler(), ln)
	l.http.ErrorLog = jsonlog.ServerErrors(log, "portal")
	if reachableBeyond(ln.Addr()) {
		log.Warn("portal is reachable beyond this machine and shows patient data", "listen", cfg.PortalListen)
	}

	run, cancel := context.WithCancel(context.WithoutCancel(ctx))
	l.cancel, l.runCtx = cancel, run
	go l.queue.closeOnDone(run)
	for range cfg.Workers {
		l.goRun(func() { l.worker(run) })
	}
	l.goRun(func() { l.announcer(run) })
	l.goRun(func() { l.spiller(run) })
	if cfg.AuditExpirationDays > 0 {
		l.goRun(func() { l.expirer(run) })
	}
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
	log.Info("local mode started", "data_dir", cfg.DataDir, "portal", portalURL(ln.Addr()), "quiet_period", cfg.QuietPeriod, "webhooks", len(cfg.Webhooks))
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

// open takes the data directory's lock, opens the stores and queues what
// the last run left unprocessed.
func open(ctx context.Context, cfg Config, log *slog.Logger) (_ *Local, err error) {
	started := time.Now()
	if err := PrepareDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	lock, err := lockDataDir(cfg.DataDir, started)
	if err != nil {
		return nil, err
	}
	var db *localstore.DB
	defer func() {
		if err != nil {
			if db != nil {
				err = errors.Join(err, db.Close())
			}
			err = errors.Join(err, lock.releaseAfter(db, err))
		}
	}()
	objDir := filepath.Join(cfg.DataDir, ObjectsDir)
	if err := os.MkdirAll(objDir, 0o750); err != nil {
		return nil, fmt.Errorf("local: data dir: %w", err)
	}
	// The database opens first: the records the file store replays are
	// handed off again into it (recover).
	if db, err = localstore.Open(ctx, filepath.Join(cfg.DataDir, DBFile), append(cfg.dbOptions, localstore.WithLogger(log))...); err != nil {
		return nil, err
	}
	// The lock makes this process the one worker of the data directory: a Storage Commitment lease found is a run's
	// it outlived (killed, or stopped mid-delivery), under which nothing reports any more, so its transaction is
	// reported at once rather than after the lease (docs/local-mode.md).
	if n, err := db.CommitmentStore().ReleaseLeases(ctx, time.Now()); err != nil {
		return nil, err
	} else if n > 0 {
		log.Info("storage commitment transactions of the previous run released", "transactions", n)
	}
	back := &handedBack{log: log, names: cfg.Names, at: time.Now()}
	inner, err := cfg.ObjectStore(objDir, back.add)
	if err != nil {
		return nil, fmt.Errorf("local: object store: %w", err)
	}
	held := newHeldObjects()
	l := &Local{
		cfg: cfg, log: log, db: db, lock: lock,
		files:    &files{root: objDir, db: db, held: held},
		held:     held,
		counters: newCounters(time.Now),
		queue:    newWorkQueue(),
		commit:   make(chan struct{}, 1),
		crash:    os.Getenv(CrashEnv),

		pipelineLog: cfg.Logger.With("component", "pipeline"),
	}
	l.store = &handoffStore{inner: inner, handoff: db.Handoff(), held: held, enqueued: l.queue.push, sums: &l.files.sums, crash: l.crash, log: log, names: cfg.Names}
	defer func() {
		if err != nil {
			if c, ok := inner.(io.Closer); ok {
				err = errors.Join(err, c.Close())
			}
		}
	}()
	l.pub = &localstore.Publisher{DB: db, LogPath: filepath.Join(cfg.DataDir, EventLogFile), Logger: cfg.Logger.With("component", "events")}
	if err := l.register(cfg.Registry); err != nil {
		return nil, err
	}
	if cfg.AuditFeed {
		if l.feed, err = db.AuditFeed(ctx); err != nil {
			return nil, err
		}
	}
	if err := l.recover(ctx, back.recs); err != nil {
		return nil, err
	}
	log.Info("data directory opened", "took", time.Since(started)) // "local mode started" names it
	return l, nil
}

// objectURLBase is the portal's /objects/ at addr, as a client on this
// machine reaches it (portalURL).
func objectURLBase(addr net.Addr) string {
	u := portalURL(addr)
	if u == "" {
		return ""
	}
	return strings.TrimSuffix(u, "/") + localstore.ObjectsPath
}

// portalURL is the portal at addr as a client on this machine reaches it:
// an unspecified address (listening on every interface) by loopback, which
// a browser opens where it refuses http://[::]:8080/ and 0.0.0.0.
func portalURL(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/"
}

// reachableBeyond says whether a portal listening on addr answers beyond
// this machine: any address but loopback. It reads the address listened on,
// not the one configured, which ":8080" (every interface) names no host of.
func reachableBeyond(addr net.Addr) bool {
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return true
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsLoopback()
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

// Drain lets the pipeline process what it was handed until nothing is
// pending or ctx ends: at a stop, once the SCP has written its last audit
// record (its application-stop), so that the trail holds the stop before
// the process ends and the next start has nothing to recover. What is
// left stays handed off and is processed at the next start; a line says
// how many.
func (l *Local) Drain(ctx context.Context) {
	if left := l.queue.drain(ctx); left > 0 {
		l.log.Warn("pipeline work left pending at stop; it is processed at the next start", "pending", left, "err", context.Cause(ctx))
	}
}

// Shutdown stops the portal, lets the worker finish the object in hand and
// flushes what events it can, then closes the database, all within ctx.
// What the pipeline was handed and has not processed stays for the next
// start: Drain first processes it. When ctx ends first (its time is up, a
// second signal), it stops there, with a line saying why: nothing
// acknowledged is lost, since the journal and the database are
// crash-safe, and the next start takes up what is left as after a crash.
func (l *Local) Shutdown(ctx context.Context) error {
	var err error
	l.once.Do(func() {
		defer func() {
			if ctx.Err() != nil {
				l.log.Warn(stopCutShort, "err", context.Cause(ctx))
			}
		}()
		if herr := l.http.Shutdown(ctx); ctx.Err() == nil {
			err = herr // else the portal's connections are cut with the process
		}
		l.cancel()
		done := make(chan struct{})
		go func() { l.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			return // leave the database open: goroutines may still use it
		}
		if ferr := l.pub.Flush(ctx); ferr != nil {
			l.log.Warn("events left undelivered at shutdown; they are delivered after restart", "err", ferr)
		}
		// The database closes first: its last durable commit releases
		// the records of the keys done. The file store's journal then
		// checkpoints what was released; the records still held are
		// handed back at the next start.
		err = errors.Join(err, l.db.Close())
		if c, ok := l.store.inner.(objectstore.Shutdowner); ok {
			err = errors.Join(err, c.Shutdown(ctx))
			if ctx.Err() != nil {
				// The journal's close cut short goes on behind it: the
				// lock is the process's exit's to let go, or another
				// scp-task could replay the journal beside it.
				return
			}
		}
		err = errors.Join(err, l.lock.releaseAfter(l.db, nil))
	})
	if err != nil {
		return fmt.Errorf("local: shutdown: %w", err)
	}
	return nil
}

// stopCutShort is Shutdown's line when its time ran out first.
const stopCutShort = "local mode's stop cut short; nothing acknowledged is lost (the journal and the database are crash-safe): the next start takes up what is left"

// syncFailed returns the failed sync that ended durable storage until a
// restart, the databases' (localstore.ErrSyncFailed) or the file store's
// (filestore.ErrSyncFailed), nil while none failed: the portal's banner.
func (l *Local) syncFailed(ctx context.Context) error {
	if err := l.db.SyncFailed(); err != nil {
		return err
	}
	if err := l.store.inner.Ready(ctx); errors.Is(err, filestore.ErrSyncFailed) {
		return err
	}
	return nil
}

func (l *Local) portalCounters(ctx context.Context) portal.Counters {
	c := l.counters.snapshot()
	if n, err := l.db.Handoff().Counts(ctx); err == nil {
		c.PendingPipeline, c.FailedPipeline = int64(n["pending"]+l.held.count()), int64(n["failed"])
	}
	return c
}

// recover queues what the last run left unprocessed: the journal records
// the file store replayed (handed back: their keys are handed off again),
// and the hand-off queue's keys, minus those completed just before a
// crash and those whose object never took its key (the process died in
// between). It reads the journal and the queue, never the store: start-up
// costs what is unprocessed, not what was ever stored.
func (l *Local) recover(ctx context.Context, back []heldRecord) error {
	h := l.db.Handoff()
	pruned, err := h.Prune(ctx)
	if err != nil {
		return err
	}
	keys, err := h.Pending(ctx, -1)
	if err != nil {
		return err
	}
	var never []string
	for _, k := range keys {
		p, err := l.files.path(k)
		if err != nil {
			return fmt.Errorf("local: recover %v: %w", l.cfg.Names.Key(k), err)
		}
		if _, err := os.Stat(p); absent(err) {
			never = append(never, k)
			continue
		} else if err != nil {
			// The error carries the file's path, which holds the key.
			return l.cfg.Names.Redact(fmt.Errorf("local: recover %v: %w", l.cfg.Names.Key(k), err), k)
		}
		l.queue.push(k)
	}
	if err := h.Forget(ctx, never); err != nil {
		return err
	}
	// A replayed key the ledger has as done or failed needs nothing but
	// its record's release, once what this process read of the ledger is
	// durable (a crash of the process alone leaves commits unsynced); one
	// the queue holds is handed off there. The rest are held again.
	queued := make(map[string]bool, len(keys))
	for _, k := range keys {
		queued[k] = true
	}
	var settled []func()
	again := 0
	for _, r := range back {
		state, _, err := h.Ledger(ctx, r.handed.Key)
		if err != nil {
			return err
		}
		if queued[r.handed.Key] || state == "done" || state == "failed" {
			settled = append(settled, r.release)
			continue
		}
		l.held.add(r.handed, nil, r.release)
		l.queue.push(r.handed.Key)
		again++
	}
	if len(settled) > 0 {
		if err := l.db.Sync(ctx); err != nil {
			return err
		}
		for _, release := range settled {
			release()
		}
	}
	if n := len(keys) - len(never); n > 0 || pruned > 0 || len(never) > 0 || len(back) > 0 {
		l.log.Info("recovered the hand-off", "unprocessed", n+again, "completed_before_restart", pruned+len(settled), "never_stored", len(never), "replayed", len(back))
	}
	return nil
}

// worker processes queued keys until ctx is done.
func (l *Local) worker(ctx context.Context) {
	for {
		k, ok := l.queue.pop()
		if !ok {
			return
		}
		hp, spilling := l.held.claim(k)
		if spilling {
			// Its hand-off is moving to the queue: take it up after.
			l.queue.retry(k, time.Millisecond)
			continue
		}
		// A key whose journal record is held needs processing: its object
		// took a key that was free, and a replayed record whose key the
		// ledger has done was released at start (recover). Should the
		// ledger have it done all the same (its file removed by hand and
		// the object sent again), the pipeline's commit fails on it and
		// nothing is processed twice.
		if hp == nil {
			if skip, err := l.settled(ctx, k); err != nil || skip {
				if err != nil && ctx.Err() == nil {
					l.log.Error("read hand-off state; will retry", "object", l.cfg.Names.Key(k), "err", l.cfg.Names.Redact(err, k))
					l.queue.retry(k, retryDelay)
					continue
				}
				l.queue.done(k)
				l.files.sums.processed(k)
				continue
			}
		}
		// The worker goes on with the next key while the commit runs:
		// the key stays in the queue (no other worker takes it) until the
		// commit's outcome is known.
		err := l.process(ctx, k, hp, func(err error) {
			if err != nil {
				l.failed(ctx, k, hp, err)
				return
			}
			l.queue.done(k)
			l.files.sums.processed(k)
			l.pub.Notify()
		})
		// The pipeline has read the object's header: its head goes (a
		// retry reads the file).
		l.held.dropHead(k)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			l.failed(ctx, k, hp, err)
		}
	}
}

// failed records a failed attempt at key and retries it later, unless it
// was parked as failed. A held key's hand-off moves to the queue first: a
// key that failed may stay a while, and its record must not hold the
// journal meanwhile.
func (l *Local) failed(ctx context.Context, k string, held *localstore.Handed, err error) {
	if ctx.Err() != nil {
		return // shutting down: the key stays queued for the next start
	}
	l.log.Warn("pipeline failed; will retry", "object", l.cfg.Names.Key(k), "err", l.cfg.Names.Redact(err, k))
	l.count("error")
	if held != nil {
		if qerr := l.held.toQueue(context.WithoutCancel(ctx), l.db.Handoff(), []localstore.Handed{*held}); qerr != nil {
			l.log.Error("move a failed object's hand-off to the queue; will retry", "object", l.cfg.Names.Key(k), "err", l.cfg.Names.Redact(qerr, k))
			l.queue.retry(k, retryDelay)
			return
		}
	}
	if ferr := l.db.Handoff().Fail(context.WithoutCancel(ctx), k, err, maxAttempts); ferr != nil {
		l.log.Error("record pipeline failure", "object", l.cfg.Names.Key(k), "err", l.cfg.Names.Redact(ferr, k))
	}
	if state, _, serr := l.db.Handoff().State(ctx, k); serr == nil && state != "pending" {
		l.queue.done(k) // parked as failed: shown in the portal, tried no more
		l.files.sums.processed(k)
		return
	}
	l.queue.retry(k, retryDelay)
}

// settled reports whether key needs no processing: it is done or parked
// already (a duplicate delivery), or its object is not there (its store
// failed: the row is dropped unless another Put of it is under way, which
// queues it again when it succeeds).
func (l *Local) settled(ctx context.Context, key string) (bool, error) {
	state, _, err := l.db.Handoff().State(ctx, key)
	if err != nil {
		return false, err
	}
	if state == "done" || state == "failed" {
		return true, nil
	}
	p, err := l.files.path(key)
	if err != nil {
		return false, err
	}
	if _, err := os.Stat(p); absent(err) {
		if err := l.store.dropIfNeverStored(ctx, key, p); err != nil {
			return false, err
		}
		return true, nil
	}
	return false, nil
}

// absent reports whether a stat error says there is no file: none at the
// path, or a component of the path is a file (a store that failed to make
// the object's directory).
func absent(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

func (l *Local) pipeline(tx *localstore.Tx) *pipeline.Pipeline {
	p := l.settings()
	p.Objects, p.Writer = l.files, &txFiles{files: l.files, tx: tx}
	p.Audit, p.Index, p.Events, p.Commitments = tx.AuditStore(), tx.IndexStore(), tx.Outbox(), tx.CommitmentStore()
	p.Logger = l.pipelineLog
	return p
}

// settings is a pipeline with local mode's settings and no ports.
func (l *Local) settings() *pipeline.Pipeline {
	return &pipeline.Pipeline{
		QuietPeriod: l.cfg.QuietPeriod, PatientData: l.cfg.PatientData, AuditSourceID: "dicom-ingest-local", Names: l.cfg.Names,
		ObjectURLBase:  l.objectURLBase,
		CommitmentWait: l.cfg.CommitmentWait, CommitmentReportFor: l.cfg.CommitmentReportFor,
		QuarantinedCommitted: l.quarantinedCommitted,
	}
}

func (l *Local) quarantinedCommitted(ae string) bool { return l.cfg.CommitmentQuarantined[ae] }

// StartCommitments starts the Storage Commitment worker, which evaluates
// the requests the SCP made durable and delivers their results with r. It
// is started once the SCP exists, since r reports on its associations.
//
// The worker runs outside the hand-off's transactions: a delivery waits on
// the network, and the database must not be held meanwhile. Each step of a
// transaction is its own write, leased in the commitment table, audited
// and announced idempotently, so a crash repeats a step, never loses one.
func (l *Local) StartCommitments(r pipeline.CommitmentReporter) {
	l.goRun(func() { l.committer(l.runCtx, r) })
}

func (l *Local) wakeCommitter() {
	select {
	case l.commit <- struct{}{}:
	default:
	}
}

// committer moves due commitment transactions on: at once when a request
// arrives, and every half second for those waiting for instances or for a
// retry.
func (l *Local) committer(ctx context.Context, r pipeline.CommitmentReporter) {
	p := l.settings()
	p.Objects, p.Writer = l.files, resultFiles{l.files}
	p.Audit, p.Index, p.Events = l.db.AuditStore(), l.db.IndexStore(), l.db.Outbox(l.cfg.Webhooks)
	p.Commitments, p.Reporter = l.db.CommitmentStore(), r
	p.Logger = l.cfg.Logger.With("component", "commitment")
	p.CommitmentPanicLog = PanicLog // a transaction's panic told as the run's (docs/local-mode.md)
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		var n int
		err := panicvalue.Recovered(l.log, PanicLog, func() (err error) {
			n, err = p.RunCommitments(ctx, time.Now())
			return err
		}, "run", "commitment")
		if err != nil && ctx.Err() == nil {
			l.log.Warn("storage commitment", "err", err)
		}
		if n > 0 {
			l.pub.Notify()
		}
		select {
		case <-ctx.Done():
			return
		case <-l.commit:
		case <-t.C:
		}
	}
}

// process runs the pipeline on key in one unit of work with its hand-off;
// committed is called with the commit's outcome once it is known, unless
// process fails.
//
// A panic in the unit is recovered inside it (panicvalue.Recovered), so
// that its writes are undone and it fails as an error would: a panic
// escaping the unit would leave its transaction open, and end the SCP.
func (l *Local) process(ctx context.Context, key string, held *localstore.Handed, committed func(error)) error {
	return l.db.InTxAsync(ctx, l.cfg.Webhooks, func(tx *localstore.Tx) error {
		return panicvalue.Recovered(l.log, PanicLog, func() error { return l.unit(ctx, tx, key, held) }, "object", l.cfg.Names.Key(key))
	}, committed)
}

// unit is process's unit of work on key.
func (l *Local) unit(ctx context.Context, tx *localstore.Tx, key string, held *localstore.Handed) error {
	p := l.pipeline(tx)
	result := "audit"
	switch {
	case strings.HasPrefix(key, pipeline.CommitmentRequestsPrefix):
		result = "commitment"
		if err := p.ProcessCommitmentRequest(ctx, key); err != nil {
			return err
		}
		defer l.wakeCommitter()
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
	if l.cfg.beforeCommit != nil {
		l.cfg.beforeCommit(key)
	}
	if l.crash == "before-commit" && strings.HasPrefix(key, pipeline.IncomingPrefix) {
		l.log.Warn("fault injection: exiting before the pipeline's commit", "env", CrashEnv)
		os.Exit(CrashExitCode)
	}
	if held == nil {
		if err := tx.MarkDone(ctx, key, time.Now()); err != nil {
			return err
		}
	} else {
		if err := tx.MarkHandedDone(ctx, *held, time.Now()); err != nil {
			return err
		}
		tx.AfterDurable(func() {
			if l.crash == "after-commit" {
				l.log.Warn("fault injection: exiting after the pipeline's durable commit, before the record's release", "env", CrashEnv)
				os.Exit(CrashExitCode)
			}
			l.held.release(key)
		})
	}
	l.count(result)
	return nil
}

// spiller moves to the queue the hand-off of keys whose journal records
// were held longer than spillAfter by no worker (see spillAfter).
func (l *Local) spiller(ctx context.Context) {
	every(ctx, spillAfter/4, func() {
		n, err := l.held.spill(ctx, l.db.Handoff(), spillAfter, time.Now())
		if err != nil && ctx.Err() == nil {
			l.log.Warn("move waiting hand-offs to the queue; will retry", "err", err)
		}
		if n > 0 {
			l.log.Info("moved waiting hand-offs from the journal to the queue", "count", n)
		}
	})
}

// every calls fn every d until ctx is done.
func every(ctx context.Context, d time.Duration, fn func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fn()
	}
}

// announcer publishes Study Received / Study Updated for quiet studies. A
// failed run follows retry.Backoff, as event delivery does: after a
// transient failure the next run waits for its backoff step, the failure
// told once a step; once the database's durable commits ended
// (DB.MarkFinal) a failure is told once, at ERROR, and no run follows until
// a restart. Each was told at WARN at each period (on a read-only file
// system, every period until the restart).
func (l *Local) announcer(ctx context.Context) {
	b := retry.Backoff{Log: l.log, Msg: "announce stable studies", Level: slog.LevelWarn,
		FinalMsg: "announce stable studies failed for good; stopped until a restart"}
	defer b.Stop()
	every(ctx, min(max(l.cfg.QuietPeriod/4, 100*time.Millisecond), 5*time.Second), func() {
		if !b.Ready() {
			return
		}
		var n int
		var runErr error
		err := l.db.InTx(ctx, l.cfg.Webhooks, func(tx *localstore.Tx) error {
			// The unit is committed whatever the run's error: its steps are
			// each idempotent, as they are in AWS, and undoing them would
			// undo the other studies' announcements and the failed ones'
			// deferrals, so a study failing every time would hold every
			// other back. A study whose announcement panics fails alone
			// inside the run, deferred as a failing one (the pipeline
			// recovers it: AnnouncePanicLog); what it wrote before the
			// panic is kept, each of its steps idempotent too (its event
			// in the outbox under its id, the publish ledger, the
			// announced version's condition). The run's own recovery is
			// for a panic outside any study's announcement.
			runErr = panicvalue.Recovered(l.log, PanicLog, func() (err error) {
				p := l.pipeline(tx)
				if l.cfg.announceIndex != nil {
					p.Index = l.cfg.announceIndex(p.Index)
				}
				n, err = p.AnnounceStableStudies(ctx, time.Now())
				return err
			}, "run", "announce")
			return nil
		})
		if ctx.Err() == nil {
			b.Done(l.db.MarkFinal(errors.Join(runErr, err)))
		}
		if n > 0 {
			l.pub.Notify()
		}
	})
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
		return float64(n["pending"] + l.held.count())
	})
	for _, c := range []prometheus.Collector{l.processed, pending} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("local: metrics: %w", err)
		}
	}
	return nil
}

func (l *Local) count(result string) { l.processed.WithLabelValues(result).Inc() }

// ObjectStore is the object store local mode runs on: the file store,
// whose PutWith lets the hand-off be recorded before an object takes its
// key, and keeps a journaled object's record until the pipeline is done
// with it.
type ObjectStore interface {
	objectstore.Store
	PutWith(ctx context.Context, obj objectstore.Object, part10 io.Reader, hooks filestore.Hooks) (objectstore.Stored, error)
}

var _ ObjectStore = (*filestore.Store)(nil)

// handoffStore is the SCP's store in local mode: the file store, plus the
// hand-off to the pipeline made durable before the object takes its key
// (see held.go).
type handoffStore struct {
	inner    ObjectStore
	handoff  *localstore.Handoff
	held     *heldObjects
	enqueued func(key string) // a key was stored or failed to: the pipeline should look at it
	sums     *checksums       // key → CRC-64/NVME of the stored object, for Head
	crash    string
	log      *slog.Logger
	names    *logname.Namer

	mu       sync.Mutex
	inflight map[string]int // keys with a Put or PutRecord under way
}

// begin registers a Put of key; the returned func ends it.
func (s *handoffStore) begin(key string) func() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inflight == nil {
		s.inflight = map[string]int{}
	}
	s.inflight[key]++
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.inflight[key]--; s.inflight[key] <= 0 {
			delete(s.inflight, key)
		}
	}
}

// dropIfNeverStored removes key's queue row when its object is not there
// and no Put of it is under way: the row of a store that failed. The lock
// is held across the removal's commit so that a Put starting meanwhile
// writes its row after it, never before.
func (s *handoffStore) dropIfNeverStored(ctx context.Context, key, path string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inflight[key] > 0 {
		return nil
	}
	if _, err := os.Stat(path); !absent(err) {
		return nil
	}
	return s.handoff.Forget(ctx, []string{key})
}

// removeRecord removes the file at path of the record key, which the
// ledger has as done, unless a Put of key is under way (false): the lock
// keeps a Put from starting meanwhile.
func (s *handoffStore) removeRecord(key, path string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inflight[key] > 0 {
		return false, nil
	}
	if err := os.Remove(path); err != nil && !absent(err) {
		return false, err
	}
	return true, nil
}

var _ objectstore.Store = (*handoffStore)(nil)

// Put stores the object and hands it off; success is reported only when
// both are durable.
//
// A journaled object (nearly every image) is handed off by its journal
// record, which carries the SCP's metadata as its note and is made
// durable with the object's bytes: the pipeline holds the record (see
// held.go). An object the file store writes by its file recipe is handed
// off by a queue row, committed and synced before the object takes its
// key. Either way every object under a key was handed off: a restart
// finds what is unprocessed in the journal and the queue, never by
// listing the store.
func (s *handoffStore) Put(ctx context.Context, obj objectstore.Object, part10 io.Reader) (objectstore.Stored, error) {
	key, err := objectstore.Key(obj)
	if err != nil {
		return s.inner.Put(ctx, obj, part10) // refused there, the same way
	}
	defer s.begin(key)()
	md := handoffMetadata(obj)
	var decided map[string]string // the metadata handed off with the key taken
	var note []byte               // decided, as a journaled object's record carries it
	// The pipeline needs the object's content identity, its CRC-64/NVME
	// (as in AWS): the store takes it on bytes it holds in memory, where
	// the pipeline would read them back from the disk.
	st, err := s.inner.PutWith(ctx, obj, part10, filestore.Hooks{
		Checksum: true,
		Before: func(ctx context.Context, st objectstore.Stored, journaled bool) ([]byte, error) {
			decided = md
			if st.Conflict {
				// The object's key holds other content: it goes beside
				// it, under a key named after its content, handed off in
				// turn.
				decided = maps.Clone(md)
				decided[objectstore.MetaConflict] = "true"
			}
			if s.crash == "before-handoff" {
				s.log.Warn("fault injection: exiting before the hand-off", "env", CrashEnv)
				os.Exit(CrashExitCode)
			}
			if journaled {
				var err error
				if note, err = json.Marshal(decided); err != nil {
					return nil, fmt.Errorf("local: hand off %v: %w", s.names.Key(st.Key), err)
				}
				return note, nil
			}
			if _, err := s.handoff.Enqueue(context.WithoutCancel(ctx), st.Key, time.Now(), decided); err != nil {
				return nil, fmt.Errorf("local: hand off %v: %w: %w", s.names.Key(st.Key), objectstore.ErrUnavailable, err)
			}
			if s.crash == "before-place" {
				s.log.Warn("fault injection: exiting after the hand-off, before the object takes its key", "env", CrashEnv)
				os.Exit(CrashExitCode)
			}
			return nil, nil
		},
		Hold: func(key string, body []byte, release func()) {
			if s.crash == "before-ack" {
				s.log.Warn("fault injection: exiting with the object handed off, before its C-STORE is answered", "env", CrashEnv)
				os.Exit(CrashExitCode)
			}
			s.held.add(localstore.Handed{Key: key, At: time.Now(), Metadata: decided, MetadataJSON: note}, body, release)
		},
	})
	if err != nil {
		// A queue row may be left without its object: the worker drops
		// it once no other Put of the key is under way.
		s.enqueued(key)
		return st, err
	}
	if s.crash == "after-store" || s.crash == "1" {
		s.log.Warn("fault injection: exiting after the store and hand-off, before the pipeline", "env", CrashEnv)
		os.Exit(CrashExitCode)
	}
	if st.CRC64NVME != "" {
		s.sums.store(st.Key, st.CRC64NVME)
	}
	// Also for a duplicate: its first delivery may still be queued, or
	// done (the worker then skips it).
	s.enqueued(st.Key)
	return st, nil
}

// handoffMetadata is what the SCP knows about a transfer, recorded with
// its hand-off for the pipeline (the object's SHA-256 reaches the pipeline
// beside it, from the store: see Put).
func handoffMetadata(obj objectstore.Object) map[string]string {
	return obj.Metadata(version.ImplementationVersionName)
}

// PutRecord hands an association record to the pipeline and stores it.
// The row comes first for the reason Put's does.
func (s *handoffStore) PutRecord(ctx context.Context, key string, body []byte) error {
	defer s.begin(key)()
	if _, err := s.handoff.Enqueue(context.WithoutCancel(ctx), key, time.Now(), nil); err != nil {
		return fmt.Errorf("local: hand off %v: %w", s.names.Key(key), err)
	}
	if err := s.inner.PutRecord(ctx, key, body); err != nil {
		s.enqueued(key)
		return err
	}
	s.enqueued(key)
	return nil
}

// Ready reports the file store's readiness, and refuses once an fsync of
// the hand-off queue's log failed (localstore.ErrSyncFailed): no C-STORE
// can be acknowledged until the process is restarted.
func (s *handoffStore) Ready(ctx context.Context) error {
	if err := s.handoff.SyncFailed(); err != nil {
		return err
	}
	return s.inner.Ready(ctx)
}
