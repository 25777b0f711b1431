package localstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
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
