package dicomnet_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dicomnettest"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// TestLifecycleEventsAndLogs checks the event sequence of a normal association and that logs carry the
// association attributes but never data set content.
func TestLifecycleEventsAndLogs(t *testing.T) {
	rec := newRecorder()
	var logs testenv.LogBuffer
	srv := dicomnettest.NewServerT(t, &dicomnet.Server{
		Observer: rec,
		Logger:   slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Handler: dicomnet.HandlerFunc(func(ctx context.Context, req *dicomnet.CStoreRequest, r io.Reader) error {
			_, err := io.Copy(io.Discard, r)
			return err
		}),
	})
	ctx := context.Background()
	a, err := dicomnet.Dial(ctx, srv.Addr, storeCfg(0))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Echo(ctx); err != nil {
		t.Fatal(err)
	}
	secret := "\x10\x00\x10\x00PN\x0c\x00DOE^JOHN^QQQ" // (0010,0010) Patient's Name
	if st, err := a.Store(ctx, dicomuid.CTImageStorage, "1.2.3.9", "", strings.NewReader(secret)); err != nil || !st.IsSuccess() {
		t.Fatal(st, err)
	}
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, dicomnet.EventReleased)
	rec.mu.Lock()
	var types []dicomnet.EventType
	for _, ev := range rec.events {
		types = append(types, ev.Type)
		if ev.Association == nil || ev.Association.CallingAE != "SCU" || ev.Association.ID == "" {
			t.Errorf("event %s without association info: %+v", ev.Type, ev.Association)
		}
	}
	rec.mu.Unlock()
	want := []dicomnet.EventType{dicomnet.EventAccepted, dicomnet.EventEcho, dicomnet.EventStored, dicomnet.EventReleased}
	if len(types) != len(want) {
		t.Fatalf("events %v, want %v", types, want)
	}
	for i := range want {
		if types[i] != want[i] {
			t.Fatalf("events %v, want %v", types, want)
		}
	}
	out := logs.String()
	if strings.Contains(out, "DOE^JOHN") {
		t.Error("logs contain data set content")
	}
	for _, attr := range []string{`"assoc":`, `"calling_ae":"SCU"`, `"called_ae":"SCP"`, `"peer":"127.0.0.1:`} {
		if !strings.Contains(out, attr) {
			t.Errorf("logs lack %s:\n%s", attr, out)
		}
	}
}
