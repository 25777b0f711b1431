package localstore

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// TestWriterGroupCommit runs many units at once, some slow, some failing,
// and checks that every unit that succeeded is committed, every failed one
// left nothing, nobody waits forever, and units shared commits.
func TestWriterGroupCommit(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	if _, err := db.sql.ExecContext(ctx, `CREATE TABLE w (k TEXT PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	const goroutines, each = 16, 40
	boom := errors.New("boom")
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*each)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				k := fmt.Sprintf("%d-%d", g, i)
				fail := i%7 == 3
				err := db.write(ctx, func(tx *querier) error {
					if _, err := tx.ExecContext(ctx, `INSERT INTO w(k) VALUES (?)`, k); err != nil {
						return err
					}
					if i%5 == 0 {
						time.Sleep(time.Millisecond) // a unit that holds the transaction a while
					}
					if fail {
						return boom
					}
					return nil
				})
				if fail != errors.Is(err, boom) {
					errs <- fmt.Errorf("unit %s: %v", k, err)
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("units still waiting after 60 s")
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var n int
	if err := db.sql.QueryRowContext(ctx, `SELECT COUNT(*) FROM w`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	want := 0
	for i := range each {
		if i%7 != 3 {
			want += goroutines
		}
	}
	if n != want {
		t.Errorf("%d rows committed, want %d", n, want)
	}
}

// TestInTxNothingWithoutStatements: a unit that never touched the
// database takes no savepoint and waits for no commit.
func TestInTxNothingWithoutStatements(t *testing.T) {
	db := openTest(t)
	if err := db.InTx(context.Background(), nil, func(*Tx) error { return nil }); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if err := db.InTx(context.Background(), nil, func(*Tx) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("InTx = %v, want fn's error", err)
	}
}

// TestWriteAfterClose fails with ErrClosed instead of blocking.
func TestWriteAfterClose(t *testing.T) {
	db := openTest(t)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	err := db.write(context.Background(), func(*querier) error { return nil })
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("write after Close = %v, want ErrClosed", err)
	}
}

// TestPanicUndoesItsUnitAlone: a panic in a unit's work, recovered above
// it (local mode's pipeline recovers one around a key's unit and around
// its Storage Commitment worker's run, whose stores write each their own
// unit), undoes that unit's statements alone: the units sharing its
// transaction are committed, and the writer takes the next unit. A unit
// left open by its panic held the writer for good: every later write, and
// Close, waited forever.
func TestPanicUndoesItsUnitAlone(t *testing.T) {
	insert := func(ctx context.Context, q *querier, k string) error {
		_, err := q.ExecContext(ctx, `INSERT INTO w(k) VALUES (?)`, k)
		return err
	}
	tests := []struct {
		name string
		// work inserts "lost", then panics; the test recovers above it.
		work func(ctx context.Context, db *DB) error
	}{
		{"a write of its own (a store outside a unit)", func(ctx context.Context, db *DB) error {
			return db.write(ctx, func(q *querier) error {
				if err := insert(ctx, q, "lost"); err != nil {
					return err
				}
				panic("a bug")
			})
		}},
		{"a unit's statements", func(ctx context.Context, db *DB) error {
			return db.InTx(ctx, nil, func(tx *Tx) error {
				return tx.b.write(ctx, func(q *querier) error {
					if err := insert(ctx, q, "lost"); err != nil {
						return err
					}
					panic("a bug")
				})
			})
		}},
		{"a unit, after its statements", func(ctx context.Context, db *DB) error {
			return db.InTx(ctx, nil, func(tx *Tx) error {
				if err := tx.b.write(ctx, func(q *querier) error { return insert(ctx, q, "lost") }); err != nil {
					return err
				}
				panic("a bug")
			})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			db, err := Open(ctx, filepath.Join(t.TempDir(), "test.db"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := db.sql.ExecContext(ctx, `CREATE TABLE w (k TEXT PRIMARY KEY)`); err != nil {
				t.Fatal(err)
			}
			// A unit that does not wait for its commit: the panicking one
			// shares its transaction.
			kept := make(chan error, 1)
			if err := db.InTxAsync(ctx, nil, func(tx *Tx) error {
				return tx.b.write(ctx, func(q *querier) error { return insert(ctx, q, "kept") })
			}, func(err error) { kept <- err }); err != nil {
				t.Fatal(err)
			}
			func() {
				defer func() {
					if recover() == nil {
						t.Error("the panic did not reach the caller")
					}
				}()
				err = tt.work(ctx, db)
			}()
			after := make(chan error, 1)
			go func() {
				after <- db.write(ctx, func(q *querier) error { return insert(ctx, q, "after") })
			}()
			select {
			case err := <-after:
				if err != nil {
					t.Fatalf("the write after the panic: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the write after the panic still waits after 30 s: the panicked unit holds the writer")
			}
			if err := <-kept; err != nil {
				t.Errorf("the unit sharing the panicked one's transaction: %v", err)
			}
			if got, want := keysIn(t, db.sql), []string{"after", "kept"}; fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("committed %v, want %v", got, want)
			}
			if err := db.Close(); err != nil {
				t.Error(err)
			}
		})
	}
}

// writerCase is one database's writer, with its pool and a statement its
// units run.
type writerCase struct {
	name   string
	pool   func(*DB) *sql.DB
	writer func(*DB) *writer
	insert string
}

// writerCases are the databases' writers.
var writerCases = []writerCase{
	{"main", func(db *DB) *sql.DB { return db.sql }, func(db *DB) *writer { return db.w },
		`INSERT OR REPLACE INTO documents(key, content_type, time, body) VALUES ('k', 'x', 0, randomblob(2000))`},
	{"queue", func(db *DB) *sql.DB { return db.q }, func(db *DB) *writer { return db.qw },
		`INSERT OR REPLACE INTO queue(key, enqueued_at) VALUES ('k', 0)`},
}

// forEachWriter runs test on each database's writer (writerCases), in a
// subtest on a database of its own.
func forEachWriter(t *testing.T, test func(t *testing.T, pool *sql.DB, w *writer, insert string)) {
	for _, tt := range writerCases {
		t.Run(tt.name, func(t *testing.T) {
			db := openTest(t)
			test(t, tt.pool(db), tt.writer(db), tt.insert)
		})
	}
}

// TestWriterDoesNotWaitForReads: the writer's transaction, its units'
// statements (their first prepare too), its commit and the checkpoint
// after it run on the writer's own connection, so no number of reads (the
// portal's, the API's) delays a commit: here reads hold every connection
// of the pool in open rows and one more waits for a connection. The
// transaction and a statement's first prepare took a connection of the
// pool, and waited behind the reads for as long as they held it; the
// checkpoint did too, before it had a connection of its own.
func TestWriterDoesNotWaitForReads(t *testing.T) {
	forEachWriter(t, func(t *testing.T, pool *sql.DB, w *writer, insert string) {
		ctx := context.Background()
		ck := w.ckpt
		ck.frames = 1 // a checkpoint after every commit
		real := ck.run
		var passive atomic.Int32
		ck.run = func(mode string) (int, int, error) {
			log, copied, err := real(mode)
			if mode == "PASSIVE" && err == nil {
				passive.Add(1)
			}
			return log, copied, err
		}
		holdEveryRead(t, pool)
		committed := make(chan error, 1)
		go func() {
			committed <- w.run(ctx, func(q *querier) error {
				_, err := q.ExecContext(ctx, insert)
				return err
			})
		}()
		var err error
		testenv.Eventually(t, "a commit and its checkpoint while reads hold the pool", func() bool {
			select {
			case err = <-committed:
				return true
			default:
				return false
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		if n := passive.Load(); n != 1 {
			t.Errorf("%d checkpoints copied the log after the commit, want 1", n)
		}
	})
}

// holdEveryRead holds every connection of pool in a read's open rows, and
// has one more read wait for a connection, until the test ends (released
// before the database closes: cleanups run last first).
func holdEveryRead(t *testing.T, pool *sql.DB) {
	t.Helper()
	ctx := context.Background()
	const read = `WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n LIMIT 10) SELECT x FROM n`
	var held []*sql.Rows
	for pool.Stats().InUse < pool.Stats().MaxOpenConnections {
		rows, err := pool.QueryContext(ctx, read)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, rows)
		if !rows.Next() { // a read under way: its transaction is open
			t.Fatalf("the read returned no row: %v", rows.Err())
		}
	}
	waits := pool.Stats().WaitCount
	waiting := make(chan error, 1)
	go func() {
		rows, err := pool.QueryContext(ctx, read)
		if err == nil {
			err = rows.Close()
		}
		waiting <- err
	}()
	t.Cleanup(func() {
		for _, rows := range held {
			if err := rows.Close(); err != nil {
				t.Error(err)
			}
		}
		if err := <-waiting; err != nil {
			t.Errorf("the read waiting for the pool: %v", err)
		}
	})
	testenv.Eventually(t, "a read waiting for the pool", func() bool { return pool.Stats().WaitCount > waits })
}

// TestWriterGoesOnAfterAFailedCommit: a COMMIT that fails with its
// transaction still open in SQLite (here a deferred foreign key, checked at
// COMMIT, which leaves the transaction open) fails that batch's units and
// nothing more: the writer's connection is left outside any transaction,
// so the next unit's BEGIN works and its writes are committed. Left open,
// every later BEGIN on the writer's connection, held from Open to Close,
// failed "cannot start a transaction within a transaction".
func TestWriterGoesOnAfterAFailedCommit(t *testing.T) {
	forEachWriter(t, func(t *testing.T, pool *sql.DB, w *writer, insert string) {
		ctx := context.Background()
		if _, err := pool.ExecContext(ctx, `CREATE TABLE parent (id INTEGER PRIMARY KEY);
				CREATE TABLE child (parent INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)`); err != nil {
			t.Fatal(err)
		}
		err := w.run(ctx, func(q *querier) error {
			_, err := q.ExecContext(ctx, `INSERT INTO child(parent) VALUES (1)`) // no parent 1: fails at COMMIT
			return err
		})
		if err == nil || !strings.Contains(err.Error(), "localstore: commit") {
			t.Fatalf("a unit whose commit fails = %v, want the commit's failure", err)
		}
		for i := range 2 {
			if err := w.run(ctx, func(q *querier) error {
				_, err := q.ExecContext(ctx, insert)
				return err
			}); err != nil {
				t.Fatalf("unit %d after the failed commit: %v", i+1, err)
			}
		}
		var n int
		if err := pool.QueryRowContext(ctx, `SELECT COUNT(*) FROM child`).Scan(&n); err != nil || n != 0 {
			t.Errorf("%d rows of the failed commit's unit kept (%v), want 0", n, err)
		}
	})
}

// commitFaultCases are the ways a COMMIT leaves the writer's connection
// unusable (commitFaults).
var commitFaultCases = []struct {
	name  string
	fault commitFault
}{
	{"transaction left open", commitLeftOpen},
	{"connection gone", commitConnGone},
}

// TestWriterReplacesABrokenConnection: a COMMIT that leaves the writer's
// connection unusable (its transaction still open after the driver's
// ROLLBACK failed too, or the connection discarded, sql.ErrConnDone) fails
// its batch's units alone: the writer takes a fresh connection, its
// statements prepared again on it, so the next units (the failed one
// retried among them, as the pipeline and a sender do) are committed, each
// once, and the replacement is told once; the checkpoints after its
// commits run on the fresh connection. The writer kept its connection
// from Open to Close, and every later unit failed until a restart.
func TestWriterReplacesABrokenConnection(t *testing.T) {
	forEachBrokenWriter(t, func(t *testing.T, b brokenWriter) {
		pool, w := b.wc.pool(b.db), b.wc.writer(b.db)
		// A checkpoint after every commit, which runs on the writer's
		// connection: the fresh one once it is replaced.
		ck := w.ckpt
		ck.frames = 1
		real := ck.run
		var copied, failed atomic.Int32
		ck.run = func(mode string) (int, int, error) {
			log, n, err := real(mode)
			switch {
			case err != nil:
				failed.Add(1)
			case mode == "PASSIVE":
				copied.Add(1)
			}
			return log, n, err
		}
		b.faults.arm(b.fault)
		if err := b.insert("a"); err == nil || !strings.Contains(err.Error(), "localstore: commit") {
			t.Fatalf("the unit whose commit failed = %v, want the commit's failure", err)
		}
		// "a" again, as a retry: the primary key refuses it should
		// its failed commit have kept it.
		for _, k := range []string{"a", "b", "c"} {
			if err := b.insert(k); err != nil {
				t.Fatalf("unit %s after the failed commit: %v", k, err)
			}
		}
		if got := keysIn(t, pool); fmt.Sprint(got) != "[a b c]" {
			t.Errorf("committed %v, want [a b c]", got)
		}
		if n, f := copied.Load(), failed.Load(); n != 3 || f != 0 {
			t.Errorf("%d checkpoints copied the log after the 3 commits on the fresh connection, %d failed; want 3, 0", n, f)
		}
		if n := strings.Count(b.logged.String(), WriterConnReplacedLog); n != 1 {
			t.Errorf("%d %q lines, want 1; log:\n%s", n, WriterConnReplacedLog, b.logged.String())
		}
		// Durable and closed cleanly: a restart finds every unit.
		db := reopen(t, b.db, b.path)
		if got := keysIn(t, b.wc.pool(db)); fmt.Sprint(got) != "[a b c]" {
			t.Errorf("after a restart %v, want [a b c]", got)
		}
	})
}

// TestWriterReplacesABrokenConnectionOnce: after a COMMIT that left the
// writer's connection unusable, BEGINs that fail on the fresh connection
// too (the database read-only or full by then) fail their units, and the
// connection is replaced once, told once, not at every unit's BEGIN.
func TestWriterReplacesABrokenConnectionOnce(t *testing.T) {
	forEachBrokenWriter(t, func(t *testing.T, b brokenWriter) {
		pool, w := b.wc.pool(b.db), b.wc.writer(b.db)
		b.faults.arm(b.fault)
		if err := b.insert("lost"); err == nil {
			t.Fatal("the unit whose commit failed succeeded")
		}
		b.faults.failBegins(100)
		for i := range 3 {
			if err := b.insert(fmt.Sprint(i)); !errors.Is(err, errInjectedBegin) {
				t.Errorf("unit %d whose BEGINs failed = %v, want the BEGIN's failure", i+1, err)
			}
		}
		b.faults.failBegins(0)
		fresh := w.conn
		if err := b.insert("after"); err != nil {
			t.Errorf("the unit after the failed BEGINs: %v", err)
		}
		if w.conn != fresh {
			t.Error("the writer replaced its fresh connection too")
		}
		if got := keysIn(t, pool); fmt.Sprint(got) != "[after]" {
			t.Errorf("committed %v, want [after]", got)
		}
		if n := strings.Count(b.logged.String(), WriterConnReplacedLog); n != 1 {
			t.Errorf("%d %q lines, want 1; log:\n%s", n, WriterConnReplacedLog, b.logged.String())
		}
		if err := b.db.Close(); err != nil {
			t.Error(err)
		}
	})
}

// TestWriterKeepsItsConnectionAfterAFailedSync: once a sync of the
// database failed, no durable commit is taken until a restart (walSync):
// a connection the writer finds unusable then is not replaced, which would
// close the broken one and could have SQLite checkpoint and trust an
// fsync; every later unit fails.
func TestWriterKeepsItsConnectionAfterAFailedSync(t *testing.T) {
	forEachBrokenWriter(t, func(t *testing.T, b brokenWriter) {
		ctx := context.Background()
		w := b.wc.writer(b.db)
		w.ckpt.wal.fail(errors.New("injected fsync failure"))
		conn := w.conn
		b.faults.arm(b.fault)
		for i := range 3 {
			if err := w.run(ctx, func(q *querier) error {
				_, err := q.ExecContext(ctx, `INSERT INTO w(k) VALUES (?)`, i)
				return err
			}); err == nil {
				t.Errorf("unit %d after the failed sync and commit succeeded", i+1)
			}
		}
		if w.conn != conn {
			t.Error("the writer took a new connection after a failed sync")
		}
		if strings.Contains(b.logged.String(), WriterConnReplacedLog) {
			t.Errorf("told %q after a failed sync; log:\n%s", WriterConnReplacedLog, b.logged.String())
		}
		if err := b.db.Close(); err != nil {
			t.Error(err)
		}
	})
}

// keysIn returns table w's keys, in order.
func keysIn(t *testing.T, pool *sql.DB) []string {
	t.Helper()
	rows, err := pool.QueryContext(context.Background(), `SELECT k FROM w ORDER BY k`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			t.Fatal(err)
		}
		got = append(got, k)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestWriterClosesAfterItsConnectionBroke: Close right after a COMMIT that
// left the writer's connection unusable, before any unit replaced it,
// closes the database cleanly, and the restart finds nothing of the failed
// commit. Closing the statements of a connection database/sql had closed
// already (the driver gave it up) finalized them in the driver's freed
// connection: a panic.
func TestWriterClosesAfterItsConnectionBroke(t *testing.T) {
	forEachBrokenWriter(t, func(t *testing.T, b brokenWriter) {
		b.faults.arm(b.fault)
		if err := b.insert("lost"); err == nil {
			t.Fatal("the unit whose commit failed succeeded")
		}
		db := reopen(t, b.db, b.path)
		if got := keysIn(t, b.wc.pool(db)); len(got) != 0 {
			t.Errorf("after a restart %v, want none", got)
		}
	})
}

// TestWriterClosesWithoutHandingBackABrokenConnection: the writer's
// Close after a COMMIT that left SQLite's transaction open on its
// connection (no unit came to replace it) discards that connection rather
// than hand it back to the pool, where it held the write lock and served
// the reads still under way (the portal's, until the pool closes; for
// good once a sync failed, as that pool is never closed) the failed
// commit's writes, which nothing committed.
func TestWriterClosesWithoutHandingBackABrokenConnection(t *testing.T) {
	for _, wc := range writerCases {
		t.Run(wc.name, func(t *testing.T) {
			ctx := context.Background()
			b := openBrokenWriter(t, commitLeftOpen, wc)
			pool, w := wc.pool(b.db), wc.writer(b.db)
			b.faults.arm(commitLeftOpen)
			if err := b.insert("uncommitted"); err == nil {
				t.Fatal("the unit whose commit failed succeeded")
			}
			if err := w.close(); err != nil {
				t.Fatal(err)
			}
			// Every connection of the pool, each held so that the next is
			// another: none sees the failed commit's row.
			var conns []*sql.Conn
			for range pool.Stats().MaxOpenConnections {
				c, err := pool.Conn(ctx)
				if err != nil {
					t.Fatal(err)
				}
				conns = append(conns, c)
				var n int
				if err := c.QueryRowContext(ctx, `SELECT count(*) FROM w`).Scan(&n); err != nil {
					t.Fatal(err)
				}
				if n != 0 {
					t.Errorf("a read on connection %d of the pool after the writer closed sees %d rows of the failed commit", len(conns), n)
				}
			}
			for _, c := range conns {
				if err := c.Close(); err != nil {
					t.Error(err)
				}
			}
			if err := b.db.Close(); err != nil {
				t.Error(err)
			}
		})
	}
}

// brokenWriter is a database opened with commitFaults, whose writer wc's
// COMMIT is to fail as fault, and whose table w (k TEXT PRIMARY KEY) its
// units write.
type brokenWriter struct {
	fault  commitFault
	faults *commitFaults
	wc     writerCase
	db     *DB
	path   string
	logged *bytes.Buffer
}

// insert runs a unit of b's writer that inserts k into table w.
func (b brokenWriter) insert(k string) error {
	ctx := context.Background()
	return b.wc.writer(b.db).run(ctx, func(q *querier) error {
		_, err := q.ExecContext(ctx, `INSERT INTO w(k) VALUES (?)`, k)
		return err
	})
}

// forEachBrokenWriter runs test for each fault (commitFaultCases) on each
// database's writer (writerCases), in a subtest on a database of its own.
func forEachBrokenWriter(t *testing.T, test func(*testing.T, brokenWriter)) {
	for _, ft := range commitFaultCases {
		for _, wc := range writerCases {
			t.Run(ft.name+"/"+wc.name, func(t *testing.T) {
				test(t, openBrokenWriter(t, ft.fault, wc))
			})
		}
	}
}

// openBrokenWriter opens a database with commitFaults, whose writer wc's
// COMMIT is to fail as fault, and creates its table w.
func openBrokenWriter(t *testing.T, fault commitFault, wc writerCase) brokenWriter {
	t.Helper()
	b := brokenWriter{fault: fault, faults: &commitFaults{}, wc: wc, path: filepath.Join(t.TempDir(), "test.db"), logged: &bytes.Buffer{}}
	db, err := Open(context.Background(), b.path, b.faults.option(), WithLogger(slog.New(slog.NewJSONHandler(b.logged, nil))))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wc.pool(db).ExecContext(context.Background(), `CREATE TABLE w (k TEXT PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	b.db = db
	return b
}

// TestWriterKeepsItsConnectionWhenBeginFails: a BEGIN that fails on a
// connection no failed COMMIT or ROLLBACK touched (the database locked by
// another process past the busy timeout, a read-only or full file, an I/O
// error) is the database's failure, not the connection's: the unit fails
// with it, and the writer keeps its connection and tells nothing. The
// writer replaced its connection at every such BEGIN, each unit with a
// WARN that its connection was unusable, a second wait for the same lock,
// and a connection opened and one closed.
func TestWriterKeepsItsConnectionWhenBeginFails(t *testing.T) {
	for _, wc := range writerCases {
		t.Run(wc.name, func(t *testing.T) {
			b := openBrokenWriter(t, 0, wc)
			w := b.wc.writer(b.db)
			conn := w.conn
			const failing = 3
			b.faults.failBegins(failing)
			for i := range failing {
				if err := b.insert(fmt.Sprint(i)); !errors.Is(err, errInjectedBegin) {
					t.Errorf("unit %d whose BEGIN failed = %v, want the BEGIN's failure", i+1, err)
				}
			}
			if err := b.insert("after"); err != nil {
				t.Errorf("the unit after the failed BEGINs: %v", err)
			}
			if w.conn != conn {
				t.Error("the writer took a new connection for a BEGIN that failed on a sound one")
			}
			if strings.Contains(b.logged.String(), WriterConnReplacedLog) {
				t.Errorf("told %q for a BEGIN that failed on a sound connection; log:\n%s", WriterConnReplacedLog, b.logged.String())
			}
			if got := keysIn(t, b.wc.pool(b.db)); fmt.Sprint(got) != "[after]" {
				t.Errorf("committed %v, want [after]", got)
			}
			if err := b.db.Close(); err != nil {
				t.Error(err)
			}
		})
	}
}
