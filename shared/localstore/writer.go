package localstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrClosed is returned for writes after Close.
var ErrClosed = errors.New("localstore: database closed")

// batching is when a writer commits. A transaction is committed once no
// unit waits for it and, when a unit in it did not wait for the commit
// (InTxAsync), once it is linger old; or once it is maxAge old: under a
// steady stream there is always one more unit waiting, and without a
// bound nobody's commit would ever start.
type batching struct {
	linger, maxAge time.Duration
}

// Commit policies. The hand-off queue's units are the SCP's: each waits
// for its commit before the C-STORE succeeds, so their transaction is
// committed as soon as nobody else wants in. The main database's are
// mostly the pipeline's, which does not wait: the longer a transaction
// holding them stays open, the more units share its pages (a B-tree leaf
// written once for many rows), and the less the log and the checkpoint
// write per object. One holding only units that wait is not held back.
var (
	latencyFirst    = batching{linger: 0, maxAge: 20 * time.Millisecond}
	throughputFirst = batching{linger: 50 * time.Millisecond, maxAge: 100 * time.Millisecond}
)

// writer is the database's only writer. Every write is a unit: a
// savepoint inside one transaction that units share; the transaction is
// committed as soon as no unit uses it and none waits for it, or once it
// is maxBatchAge old. So the hand-offs of every association and the
// pipeline's results that arrive while one commit's fsync runs share the
// next commit (group commit), and nobody waits on SQLite's busy handler,
// which sleeps in steps of up to 100 ms: the C-STORE path saw that as a
// half-second stall behind the pipeline's transaction.
//
// A unit holds the transaction only while its statements run; what a unit
// does before its first statement (reading and hashing an object, writing
// sidecar files) happens outside, in parallel with other units.
//
// The writer runs on a connection of its own, held from Open to Close:
// its transactions, its units' statements (prepared on it once, kept for
// its life) and its checkpoints. Taken from the pool, the next transaction
// and a statement's first prepare waited for a connection behind the
// reads (the portal's, the API's), for as long as they held the pool.
//
// A connection that a BEGIN fails on after a failed COMMIT or ROLLBACK of
// the shared transaction (suspect) is replaced by a fresh one of the pool
// (renewLocked): SQLite's transaction may be open on it still, or the
// driver gave it up (sql.ErrConnDone, replaced whenever it is met). The
// failed commit's units failed to their callers, which try them again;
// the broken connection is discarded, which undoes what its transaction
// still held. A BEGIN that fails on a connection nothing left suspect (the
// database locked past the busy timeout, read-only, full) is the
// database's failure: its unit fails, and the connection is kept, as a
// fresh one would fail the same. So a connection is replaced at most once
// for each failed COMMIT or ROLLBACK. Not once a sync of the database
// failed: that is final (walSync).
type writer struct {
	pool   *sql.DB
	conn   *sql.Conn
	st     *statements // prepared on conn
	q      *querier    // runs the units' statements on conn
	policy batching
	// replaced, when set, is told each connection replaced and why.
	replaced func(error)
	// durable, when set, makes each commit durable before its units
	// learn of it; the next transaction does not wait for it.
	durable *walSync
	syncs   sync.WaitGroup // durable's runs under way
	// ckpt checkpoints the database, on conn, after each commit that grew
	// its log enough.
	ckpt *checkpointer

	mu      sync.Mutex
	cond    *sync.Cond
	busy    bool    // a unit or the committer uses tx
	waiting int     // units waiting to use tx
	tx      *sql.Tx // open on conn; its units' statements run on conn
	batch   *batch  // tx's units wait on batch.done
	opened  time.Time
	closed  bool
	stopped chan struct{}
	// suspect is the failure of the shared transaction's last COMMIT or
	// ROLLBACK, which may have left it open on conn; cleared by the next
	// BEGIN that works or by a fresh connection.
	suspect error
}

// batch is one shared transaction's fate.
type batch struct {
	done chan struct{}
	err  error // set before done is closed
	// lingers is set once a unit that does not wait for the commit kept
	// its writes in it (see batching).
	lingers bool
}

// newWriter takes the connection of db's writer, on which ckpt runs;
// replaced (if set) is told each connection it replaces.
func newWriter(ctx context.Context, db *sql.DB, policy batching, durable *walSync, ckpt *checkpointer, replaced func(error)) (*writer, error) {
	w := &writer{pool: db, policy: policy, durable: durable, ckpt: ckpt, replaced: replaced, stopped: make(chan struct{})}
	if err := w.connect(ctx); err != nil {
		return nil, err
	}
	w.cond = sync.NewCond(&w.mu)
	go w.commitLoop()
	return w, nil
}

// connect takes a connection of the pool for the writer: its statements
// are prepared on it, its checkpoints run on it.
func (w *writer) connect(ctx context.Context) error {
	conn, err := w.pool.Conn(ctx)
	if err != nil {
		return fmt.Errorf("localstore: writer connection: %w", err)
	}
	w.conn, w.st = conn, newStatements(conn)
	w.q = poolQuerier(w.st)
	w.ckpt.conn = conn
	return nil
}

// beginLocked opens the shared transaction on the writer's connection; one that
// the BEGIN fails on, once a COMMIT or ROLLBACK failed on it (suspect) or
// gone (sql.ErrConnDone), is replaced (renewLocked) and the BEGIN tried
// once on the new one. Called with w.mu held, while no unit or commit uses
// the connection.
func (w *writer) beginLocked() (*sql.Tx, error) {
	// The transaction outlives every unit's context: units end, the
	// transaction is the committer's.
	tx, err := w.conn.BeginTx(context.Background(), nil)
	if err == nil {
		w.suspect = nil
		return tx, nil
	}
	if w.suspect == nil && !errors.Is(err, sql.ErrConnDone) {
		return nil, fmt.Errorf("localstore: begin: %w", err)
	}
	if rerr := w.renewLocked(err); rerr != nil {
		return nil, fmt.Errorf("localstore: begin: %w", rerr)
	}
	tx, err = w.conn.BeginTx(context.Background(), nil)
	if err != nil {
		return nil, fmt.Errorf("localstore: begin: %w", err)
	}
	return tx, nil
}

// renewLocked replaces the writer's connection, which a BEGIN failed on
// with cause, by a fresh one of the pool. The old one is discarded, not
// handed back to the pool: one still in a transaction would hold the
// database's write lock, its statements are finalized and its transaction
// rolled back as it closes. It is never the database's last connection
// (the new one is open first), so closing it checkpoints nothing. Not
// after a failed sync of the database, which is final: closing a
// connection then could have SQLite checkpoint and trust an fsync (see
// checkpointer), and no commit is to be durable until a restart anyway.
// The fresh connection is the pool's: with reads holding the pool's other
// connections, the replacement (and every unit behind it) waits for one of
// them to end, as the writer's connection otherwise never does.
func (w *writer) renewLocked(cause error) error {
	if failed := w.ckpt.wal.poisoned(); failed != nil {
		return errors.Join(cause, failed)
	}
	old, oldSt := w.conn, w.st
	if err := w.connect(context.Background()); err != nil {
		return errors.Join(cause, err)
	}
	w.suspect = nil
	told := cause
	if err := dropConn(old, oldSt, true); err != nil {
		told = errors.Join(cause, err)
	}
	if w.replaced != nil {
		w.replaced(told)
	}
	return nil
}

// dropConn closes st, the statements prepared on c, and then c: handed
// back to the pool or, with bad, discarded (closed, never used again).
// A connection database/sql closed already (the driver gave it up,
// driver.ErrBadConn) keeps its statements: the driver freed what they
// belong to, and finalizing one then reaches into freed memory (a panic).
func dropConn(c *sql.Conn, st *statements, bad bool) error {
	if err := c.Raw(func(any) error { return nil }); errors.Is(err, sql.ErrConnDone) {
		return nil
	}
	err := st.close()
	var cerr error
	if bad {
		// database/sql closes a connection whose use returned
		// driver.ErrBadConn, rather than take it back.
		cerr = c.Raw(func(any) error { return driver.ErrBadConn })
		if errors.Is(cerr, driver.ErrBadConn) {
			cerr = nil
		}
	} else {
		cerr = c.Close()
	}
	if cerr != nil && !errors.Is(cerr, sql.ErrConnDone) {
		err = errors.Join(err, fmt.Errorf("localstore: writer connection: %w", cerr))
	}
	return err
}

// acquire waits for the shared transaction, opening it if none is open,
// and returns its querier and its batch; release must follow. The wait is
// not cancellable: it lasts one unit's statements or one commit.
func (w *writer) acquire() (*querier, *batch, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.waiting++
	for (w.busy || w.commitDue()) && !w.closed {
		w.cond.Wait()
	}
	w.waiting--
	if w.closed {
		return nil, nil, ErrClosed
	}
	if w.tx == nil {
		tx, err := w.beginLocked()
		if err != nil {
			return nil, nil, err
		}
		w.tx, w.batch, w.opened = tx, &batch{done: make(chan struct{})}, time.Now()
		// Once the batch may or must be committed, this wakes the
		// committer should nothing else happen by then.
		if w.policy.linger > 0 {
			time.AfterFunc(w.policy.linger, w.cond.Broadcast)
		}
		time.AfterFunc(w.policy.maxAge, w.cond.Broadcast)
	}
	w.busy = true
	return w.q, w.batch, nil
}

// commitDue reports whether the open transaction is old enough that the
// committer goes before the units still waiting.
func (w *writer) commitDue() bool {
	return w.tx != nil && time.Since(w.opened) >= w.policy.maxAge
}

// mayCommit reports whether the committer may take the open transaction.
func (w *writer) mayCommit() bool {
	if w.tx == nil || w.busy {
		return false
	}
	if w.closed || w.commitDue() {
		return true
	}
	return w.waiting == 0 && (!w.batch.lingers || time.Since(w.opened) >= w.policy.linger)
}

// lingerOn marks b as holding a unit that does not wait for its commit.
func (w *writer) lingerOn(b *batch) {
	w.mu.Lock()
	defer w.mu.Unlock()
	b.lingers = true
}

// release hands the transaction back after a unit's statements.
func (w *writer) release() {
	w.mu.Lock()
	w.busy = false
	w.mu.Unlock()
	w.cond.Broadcast()
}

// commitLoop commits the shared transaction whenever it is idle.
func (w *writer) commitLoop() {
	defer close(w.stopped)
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		for !w.closed && !w.mayCommit() {
			w.cond.Wait()
		}
		if w.tx == nil && w.closed {
			return
		}
		if w.tx == nil || w.busy {
			// Closed while a unit still runs: wait for it to finish.
			w.cond.Wait()
			continue
		}
		tx, b := w.tx, w.batch
		w.tx, w.batch, w.busy = nil, nil, true
		w.mu.Unlock()
		// A COMMIT that fails may leave SQLite's transaction open (a
		// deferred constraint, SQLITE_BUSY): the driver's Commit then
		// rolls it back on this connection (it asks
		// sqlite3_get_autocommit), so the next BEGIN on it works
		// (TestWriterGoesOnAfterAFailedCommit holds it).
		err := tx.Commit()
		if err == nil {
			w.ckpt.afterCommit()
		}
		switch {
		case err != nil:
			b.err = fmt.Errorf("localstore: commit: %w", err)
			close(b.done)
		case w.durable != nil:
			w.syncs.Add(1)
			go func() {
				defer w.syncs.Done()
				if err := w.durable.sync(); err != nil {
					b.err = fmt.Errorf("localstore: commit: %w", err)
				}
				close(b.done)
			}()
		default:
			close(b.done)
		}
		w.mu.Lock()
		if err != nil {
			w.suspect = err
		}
		w.busy = false
		w.cond.Broadcast()
	}
}

// close commits what is open and stops the committer (later writes fail
// with ErrClosed), then closes its statements and hands its connection
// back to the pool, before the pool closes (a database whose sync failed
// is not closed: the connection stays open in the pool, and no checkpoint
// runs on it). A connection a failed COMMIT or ROLLBACK left suspect
// (SQLite's transaction may be open on it, its writes uncommitted and the
// write lock held) is not handed back, where the reads still under way
// would get it: it is discarded as renewLocked does, or, once a sync of
// the database failed, kept out of the pool, open, until the process
// exits (closing it could be the last connection's close, a checkpoint).
func (w *writer) close() error {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.cond.Broadcast()
	<-w.stopped
	w.syncs.Wait()
	w.mu.Lock()
	suspect := w.suspect != nil
	w.mu.Unlock()
	if suspect && w.ckpt.wal.poisoned() != nil {
		return nil
	}
	return dropConn(w.conn, w.st, suspect)
}

// unit is one piece of work's view of the writer: a savepoint in the
// shared transaction, taken at the first statement.
type unit struct {
	w     *writer
	tx    *querier
	batch *batch
	err   error // sticky acquisition error
}

// begin takes the transaction and opens the unit's savepoint unless that
// happened already.
func (u *unit) begin() (*querier, error) {
	if u.tx != nil || u.err != nil {
		return u.tx, u.err
	}
	tx, b, err := u.w.acquire()
	if err != nil {
		u.err = err
		return nil, err
	}
	if _, err := tx.ExecContext(context.Background(), `SAVEPOINT unit`); err != nil {
		u.w.release()
		u.err = fmt.Errorf("localstore: savepoint: %w", err)
		return nil, u.err
	}
	u.tx, u.batch = tx, b
	return tx, nil
}

// finish keeps (ok) or undoes the unit's statements, hands the transaction
// back and, when the unit kept anything, waits for its commit.
func (u *unit) finish(ok bool) error {
	b, err := u.end(ok)
	if err != nil || b == nil {
		return err
	}
	<-b.done
	return b.err
}

// end keeps (ok) or undoes the unit's statements and hands the transaction
// back. It returns the batch whose commit decides the fate of what the
// unit kept (nil when it kept nothing), or the error that undid it.
func (u *unit) end(ok bool) (*batch, error) {
	if u.tx == nil {
		return nil, nil
	}
	bg := context.Background()
	var err error
	if ok {
		if _, err = u.tx.ExecContext(bg, `RELEASE unit`); err != nil {
			err = fmt.Errorf("localstore: release savepoint: %w", err)
			ok = false
		}
	}
	if !ok {
		_, rerr := u.tx.ExecContext(bg, `ROLLBACK TO unit`)
		if rerr == nil {
			_, rerr = u.tx.ExecContext(bg, `RELEASE unit`)
		}
		if rerr != nil {
			// The shared transaction is in an unknown state: nothing in it
			// may be committed.
			err = errors.Join(err, fmt.Errorf("localstore: roll back savepoint: %w", rerr))
			u.w.poison(u.batch, err)
		}
	}
	b := u.batch
	u.tx, u.batch = nil, nil
	u.w.release()
	if !ok {
		return nil, err
	}
	return b, nil
}

// run runs fn as one unit and returns once it is committed.
func (w *writer) run(ctx context.Context, fn func(*querier) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("localstore: write: %w", err)
	}
	u := &unit{w: w}
	tx, err := u.begin()
	if err != nil {
		return err
	}
	defer u.abandon()
	err = fn(tx)
	if ferr := u.finish(err == nil); err == nil {
		err = ferr
	}
	return err
}

// abandon undoes the unit's statements and hands the transaction back if
// the unit still holds it: deferred, so that a panic in the work (a bug,
// which local mode recovers above the unit and goes on) leaves neither the
// unit's statements in the shared transaction nor the writer held, which
// would stop every later write and Close for good; after the unit ended
// it does nothing. The panic goes on as it was (not recovered: its stack
// still shows where it started). A rollback that fails poisons the shared
// transaction (end), whose units learn of it from their batch.
func (u *unit) abandon() {
	if _, err := u.end(false); err != nil {
		return // the batch, poisoned, tells its units
	}
}

// poison marks the open transaction as failed; the committer rolls it back.
func (w *writer) poison(b *batch, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.batch == b && w.tx != nil {
		if rerr := w.tx.Rollback(); rerr != nil {
			err = errors.Join(err, fmt.Errorf("localstore: rollback: %w", rerr))
			w.suspect = rerr
		}
		w.tx, w.batch = nil, nil
		b.err = fmt.Errorf("localstore: transaction abandoned: %w", err)
		close(b.done)
	}
}
