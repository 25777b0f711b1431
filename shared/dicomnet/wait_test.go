package dicomnet_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
)

// TestWaitAfterShutdownDeadline: associations aborted at Shutdown's deadline end on their own goroutines; Wait
// returns only once their last events (the C-STORE cut short, the abort) have been observed, even when the
// observer is slow, so a caller can flush its audit trail after it.
func TestWaitAfterShutdownDeadline(t *testing.T) {
	var mu sync.Mutex
	var seen []dicomnet.EventType
	obs := dicomnet.ObserverFunc(func(ev dicomnet.Event) {
		if ev.Type == dicomnet.EventStoreFailed {
			time.Sleep(200 * time.Millisecond) // a slow audit writer
		}
		mu.Lock()
		seen = append(seen, ev.Type)
		mu.Unlock()
	})
	reading := make(chan struct{})
	s := &dicomnet.Server{Observer: obs, Handler: dicomnet.HandlerFunc(func(ctx context.Context, req *dicomnet.CStoreRequest, r io.Reader) error {
		close(reading)
		_, err := io.Copy(io.Discard, r)
		return err
	})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l)
	a, err := dicomnet.Dial(context.Background(), l.Addr().String(), storeCfg(0))
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	defer close(release)
	go a.Store(context.Background(), dicomuid.CTImageStorage, "1.2.3", "", io.MultiReader(io.LimitReader(neverEnding{}, 4096), blockUntil(release)))
	<-reading
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v", err)
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer wcancel()
	if err := s.Wait(wctx); err != nil {
		t.Fatalf("Wait = %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []dicomnet.EventType{dicomnet.EventAccepted, dicomnet.EventStoreFailed, dicomnet.EventAborted}
	if len(seen) != len(want) {
		t.Fatalf("events observed when Wait returned: %v, want %v", seen, want)
	}
	for i := range want {
		if seen[i] != want[i] {
			t.Errorf("event %d = %v, want %v", i, seen[i], want[i])
		}
	}
}

type neverEnding struct{}

func (neverEnding) Read(p []byte) (int, error) { return len(p), nil }

// blockUntil is a reader that blocks until ch is closed, then ends.
type blockUntil chan struct{}

func (b blockUntil) Read([]byte) (int, error) { <-b; return 0, io.EOF }
