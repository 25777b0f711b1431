package localstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
)

// maxStatements bounds how many SQL texts a database keeps prepared. The
// package's statements are a few dozen fixed texts and the filter
// combinations of the portal's searches; a patient search adds a clause
// per word, so the texts are not a closed set, and a text past the bound
// is prepared for its one run.
const maxStatements = 256

// statements prepares each SQL text once per database (a pool's, or a
// writer's connection) and keeps it until close: preparing the same few
// dozen texts again for every object was a tenth of local mode's CPU
// (SQLite's parser under sqlite3_prepare_v2). database/sql prepares a
// pool's kept statement again on each connection it runs on, once per
// connection.
type statements struct {
	db preparer

	mu     sync.RWMutex
	m      map[string]*sql.Stmt
	closed bool
}

// preparer is where statements are prepared: a pool (*sql.DB), whose
// statements run on any of its connections, or one connection (*sql.Conn),
// whose statements run on it alone.
type preparer interface {
	PrepareContext(ctx context.Context, query string) (*sql.Stmt, error)
}

func newStatements(db preparer) *statements {
	return &statements{db: db, m: map[string]*sql.Stmt{}}
}

// get returns query's kept statement; kept is false for a statement past
// maxStatements, which the caller closes after its run.
func (s *statements) get(ctx context.Context, query string) (stmt *sql.Stmt, kept bool, err error) {
	s.mu.RLock()
	stmt, closed := s.m[query], s.closed
	s.mu.RUnlock()
	switch {
	case stmt != nil:
		return stmt, true, nil
	case closed:
		return nil, false, ErrClosed
	}
	// Prepared outside the lock: preparing may wait for a connection,
	// and the connections' holders may be waiting for a statement.
	stmt, err = s.db.PrepareContext(context.WithoutCancel(ctx), query)
	if err != nil {
		return nil, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch kept := s.m[query]; {
	case s.closed:
		return nil, false, errors.Join(ErrClosed, stmt.Close())
	case kept != nil:
		// Another call prepared it meanwhile: this one is not needed.
		return kept, true, stmt.Close()
	case len(s.m) >= maxStatements:
		return stmt, false, nil
	}
	s.m[query] = stmt
	return stmt, true, nil
}

// close closes every kept statement; later runs fail with ErrClosed.
func (s *statements) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	var errs []error
	for _, stmt := range s.m {
		if err := stmt.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	s.m = nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("localstore: close statements: %w", err)
	}
	return nil
}

// querier is where every statement of the package runs: through the
// prepared statements of a pool (the reads) or of a writer's connection
// (its units, inside the transaction open on it: SQLite's transaction is
// the connection's).
//
// A querier without statements runs its texts unprepared in tx: the
// schema migration's, run once, which change the schema a statement
// prepared on another connection would not see until they commit.
type querier struct {
	st *statements
	tx *sql.Tx
}

// poolQuerier runs statements through st.
func poolQuerier(st *statements) *querier { return &querier{st: st} }

// stmt returns the statement to run query with, and what to call after
// its run (and after its rows are read: database/sql finalizes a closed
// statement once its rows are closed).
func (q *querier) stmt(ctx context.Context, query string) (*sql.Stmt, func(), error) {
	s, kept, err := q.st.get(ctx, query)
	if err != nil {
		return nil, nil, err
	}
	if kept {
		return s, func() {}, nil
	}
	return s, func() { _ = s.Close() }, nil // only a statement of this call: nothing to report to
}

// ExecContext runs a statement that returns no rows.
func (q *querier) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if q.st == nil {
		return q.tx.ExecContext(ctx, query, args...)
	}
	s, done, err := q.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	defer done()
	return s.ExecContext(ctx, args...)
}

// QueryContext runs a query; the caller closes the rows.
func (q *querier) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if q.st == nil {
		return q.tx.QueryContext(ctx, query, args...)
	}
	s, done, err := q.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	defer done()
	return s.QueryContext(ctx, args...)
}

// row is the result of QueryRowContext: at most one row, read by Scan.
type row struct {
	rows *sql.Rows
	err  error
}

// Scan copies the first row's columns into dest, and closes the rows; it
// returns sql.ErrNoRows when there is no row, as sql.Row's does.
func (r row) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return sql.ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	return r.rows.Close()
}

// QueryRowContext runs a query for at most one row.
func (q *querier) QueryRowContext(ctx context.Context, query string, args ...any) row {
	rows, err := q.QueryContext(ctx, query, args...)
	return row{rows: rows, err: err}
}
