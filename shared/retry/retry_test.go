package retry

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

func TestFinal(t *testing.T) {
	eio := errors.New("EIO")
	for _, tt := range []struct {
		name  string
		err   error
		final bool
	}{
		{"nil stays nil", Final(nil), false},
		{"marked", Final(eio), true},
		{"wrapped", fmt.Errorf("store: %w", Final(eio)), true},
		{"joined", errors.Join(errors.New("cause"), Final(eio)), true},
		{"not marked", eio, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if IsFinal(tt.err) != tt.final {
				t.Errorf("IsFinal(%v) = %v, want %v", tt.err, !tt.final, tt.final)
			}
			if tt.err != nil && tt.err.Error() == "" {
				t.Error("empty text")
			}
		})
	}
	if Final(nil) != nil {
		t.Error("Final(nil) is not nil: a success would read as a failure (whose Error panics)")
	}
	if err := Final(eio); !errors.Is(err, eio) || err.Error() != eio.Error() {
		t.Errorf("Final(eio) = %v, want eio's text, wrapping it", err)
	}
}

// TestBackoff: a transient failure is told once per step, the steps
// doubling from MinBackoff; a success ends the backoff; a final failure is
// told once at ERROR and stops the work.
func TestBackoff(t *testing.T) {
	logs := &testenv.LogBuffer{}
	b := Backoff{Log: slog.New(slog.NewJSONHandler(logs, nil)), Msg: "work failed", Level: slog.LevelWarn, FinalMsg: "work failed for good"}
	defer b.Stop()
	if !b.Ready() || b.Again() != nil {
		t.Fatal("a new Backoff is not ready")
	}
	eio := errors.New("EIO")
	b.Done(eio)
	if b.Ready() || b.Again() == nil {
		t.Fatal("ready right after a failure")
	}
	<-b.Again()
	if !b.Ready() {
		t.Fatal("not ready once its step is over")
	}
	b.Done(eio)
	if b.retry != 2*MinBackoff {
		t.Errorf("second step %v, want %v", b.retry, 2*MinBackoff)
	}
	for range 20 {
		b.Done(eio)
	}
	if b.retry != MaxBackoff {
		t.Errorf("step %v after many failures, want at most %v", b.retry, MaxBackoff)
	}
	b.Done(nil)
	if !b.Ready() || b.Again() != nil || b.retry != 0 {
		t.Error("a success left a backoff")
	}
	b.Done(Final(eio))
	b.Done(Final(eio))
	b.Done(nil)
	if b.Ready() || !b.Stopped() {
		t.Error("ready after a final failure")
	}
	out := logs.String()
	if n := strings.Count(out, `"msg":"work failed"`); n != 22 {
		t.Errorf("%d transient lines, want one per failure (22):\n%s", n, out)
	}
	if n := strings.Count(out, `"level":"ERROR","msg":"work failed for good"`); n != 1 {
		t.Errorf("%d final lines at ERROR, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, `"retry_in"`) {
		t.Errorf("a transient line without retry_in:\n%s", out)
	}
}
