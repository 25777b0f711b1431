package localstore

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

// TestStatementsKeptOncePerText: a text is prepared once however often
// it runs, in a transaction or not; past maxStatements a text still runs
// without being kept; after Close nothing runs.
func TestStatementsKeptOncePerText(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	kept := func() int {
		db.st.mu.RLock()
		defer db.st.mu.RUnlock()
		return len(db.st.m)
	}
	const q = `SELECT COUNT(*) FROM audit WHERE outcome = ?`
	// A unit's own texts (its savepoint) are kept by the first one.
	if err := db.write(ctx, func(tx *querier) error { _, err := tx.ExecContext(ctx, `SELECT 1`); return err }); err != nil {
		t.Fatal(err)
	}
	before := kept()
	for range 3 {
		var n int
		if err := db.read.QueryRowContext(ctx, q, "x").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if err := db.write(ctx, func(tx *querier) error { return tx.QueryRowContext(ctx, q, "x").Scan(&n) }); err != nil {
			t.Fatal(err)
		}
	}
	if got := kept() - before; got != 1 {
		t.Fatalf("one text run six times: %d statements kept, want 1", got)
	}
	for i := kept(); i < maxStatements; i++ {
		if _, err := db.read.ExecContext(ctx, fmt.Sprintf(`SELECT %d`, i)); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		var v int
		if err := db.read.QueryRowContext(ctx, `SELECT 7`+" -- past the bound").Scan(&v); err != nil || v != 7 {
			t.Fatalf("a text past the bound: %d, %v", v, err)
		}
		if err := db.write(ctx, func(tx *querier) error { return tx.QueryRowContext(ctx, `SELECT 8`).Scan(&v) }); err != nil || v != 8 {
			t.Fatalf("a text past the bound in a transaction: %d, %v", v, err)
		}
	}
	if got := kept(); got != maxStatements {
		t.Fatalf("%d statements kept, want the bound %d", got, maxStatements)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.read.QueryRowContext(ctx, q, "x").Scan(new(int)); !errors.Is(err, ErrClosed) {
		t.Fatalf("a statement after Close: %v, want ErrClosed", err)
	}
}
