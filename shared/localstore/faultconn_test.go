package localstore

import (
	"context"
	"database/sql/driver"
	"errors"
	"sync"
)

// commitFault is how a COMMIT that a test fails leaves the connection.
type commitFault int

const (
	// commitLeftOpen: the COMMIT fails and so does the driver's ROLLBACK
	// after it, so SQLite's transaction, the batch's writes in it, stays
	// open on the connection: its next BEGIN fails, "cannot start a
	// transaction within a transaction".
	commitLeftOpen commitFault = iota + 1
	// commitConnGone: the COMMIT fails, the transaction rolled back, and
	// the driver gives the connection up (driver.ErrBadConn), so
	// database/sql closes it: every later use of the writer's *sql.Conn
	// fails with sql.ErrConnDone.
	commitConnGone
)

// errInjectedCommit is the COMMIT failure commitLeftOpen reports.
var errInjectedCommit = errors.New("injected: commit failed, and the rollback after it")

// errInjectedBegin is the failure of the BEGINs failBegins fails.
var errInjectedBegin = errors.New("injected: begin failed")

// commitFaults fails the COMMITs a test arms, one each, and the BEGINs it
// says (failBegins), on the connections of the databases opened with its
// option; the other calls reach the driver as they are.
type commitFaults struct {
	mu     sync.Mutex
	armed  []commitFault
	begins int // BEGINs still to fail
}

// failBegins has the next n BEGINs, and no more, fail (errInjectedBegin)
// before they reach SQLite, as a database locked past the busy timeout,
// read-only or full fails them on a sound connection.
func (f *commitFaults) failBegins(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.begins = n
}

func (f *commitFaults) takeBegin() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.begins == 0 {
		return false
	}
	f.begins--
	return true
}

// arm has the next COMMIT fail as f.
func (f *commitFaults) arm(fault commitFault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.armed = append(f.armed, fault)
}

func (f *commitFaults) take() commitFault {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.armed) == 0 {
		return 0
	}
	fault := f.armed[0]
	f.armed = f.armed[1:]
	return fault
}

// option opens the databases with f's faults.
func (f *commitFaults) option() Option {
	return func(o *options) {
		o.connector = func(c driver.Connector) driver.Connector { return faultConnector{c, f} }
	}
}

type faultConnector struct {
	driver.Connector
	f *commitFaults
}

func (c faultConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &faultConn{conn, c.f}, nil
}

// faultConn forwards every interface the driver's connections implement
// (see sqlite.NewConnector), its transactions wrapped.
type faultConn struct {
	driver.Conn
	f *commitFaults
}

func (c *faultConn) Unwrap() driver.Conn { return c.Conn }

func (c *faultConn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

func (c *faultConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if c.f.takeBegin() {
		return nil, errInjectedBegin
	}
	tx, err := c.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &faultTx{tx, c.f}, nil
}

func (c *faultConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	return c.Conn.(driver.ConnPrepareContext).PrepareContext(ctx, query)
}

func (c *faultConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	return c.Conn.(driver.ExecerContext).ExecContext(ctx, query, args)
}

func (c *faultConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	return c.Conn.(driver.QueryerContext).QueryContext(ctx, query, args)
}

func (c *faultConn) Ping(ctx context.Context) error { return c.Conn.(driver.Pinger).Ping(ctx) }

func (c *faultConn) ResetSession(ctx context.Context) error {
	return c.Conn.(driver.SessionResetter).ResetSession(ctx)
}

func (c *faultConn) IsValid() bool { return c.Conn.(driver.Validator).IsValid() }

type faultTx struct {
	driver.Tx
	f *commitFaults
}

func (t *faultTx) Commit() error {
	switch t.f.take() {
	case commitLeftOpen:
		return errInjectedCommit // nothing reaches SQLite: its transaction stays open
	case commitConnGone:
		return errors.Join(driver.ErrBadConn, t.Tx.Rollback())
	}
	return t.Tx.Commit()
}
