package filestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/storetest"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/vfs"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// TestReadinessStableWhileTooLarge: an object larger than the free space,
// sent again and again (a PACS retrying its A700), fails for lack of
// space, leaves no temporary file, and keeps readiness off until the
// reserve and the bytes it had written are free; neither its partial
// file's removal nor a small object that still fits turns readiness on.
// Readiness went off while the object ate into the reserve and came back
// once its temporary file was removed (or, without a reserve, never went
// off): the load balancer added and removed the task with every attempt.
// On a real 16 MiB tmpfs (the file recipe writes with the operating
// system's files), which needs root.
func TestReadinessStableWhileTooLarge(t *testing.T) {
	for _, tc := range []struct {
		name    string
		reserve uint64
		opts    []Option
	}{
		{"2 MiB reserve", 2 << 20, nil},
		{"no reserve", 0, nil},
		{"2 MiB reserve without the journal", 2 << 20, []Option{WithoutJournal()}},
		{"no reserve, buffered", 0, []Option{WithBufferedWrites()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			disk := testenv.MountTmpfs(t, 16<<20)
			var logs testenv.LogBuffer
			opts := append([]Option{WithMinFreeBytes(tc.reserve), WithJournalSize(minSegmentSize, 2),
				WithLogger(slog.New(slog.NewTextHandler(&logs, nil)))}, tc.opts...)
			s, err := New(filepath.Join(disk, "objects"), opts...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Error(err)
				}
			})
			if err := s.Ready(ctx); err != nil {
				t.Fatalf("Ready before: %v", err)
			}
			large := object("1.2.3.4.5.6.7.8.9.1")
			tooLarge := bytes.Repeat([]byte("too large "), 24<<20/10)
			putTooLarge := func(what string) {
				t.Helper()
				_, err := s.Put(ctx, large, bytes.NewReader(tooLarge))
				if !errors.Is(err, objectstore.ErrUnavailable) || !vfs.NoSpace(err) {
					t.Fatalf("%s of an object larger than the free space = %v, want ErrUnavailable for lack of space", what, err)
				}
				storetest.NoUIDs(t, "Put's error", err.Error(), large)
				for _, f := range files(t, s.Root()) {
					if strings.HasPrefix(f, TempDir+"/") || strings.Contains(f, "1.2.3.4.5.6.7.8.9.1") {
						t.Fatalf("%s left %s behind", what, f)
					}
				}
			}
			putTooLarge("Put")
			rerr := storetest.WaitReady(t, s, false, 2*readyTTL)
			if !errors.Is(rerr, syscall.ENOSPC) || !errors.Is(rerr, objectstore.ErrUnavailable) {
				t.Errorf("Ready after a write found no space = %v, want ErrUnavailable naming ENOSPC", rerr)
			}
			storetest.NoUIDs(t, "Ready's error", rerr.Error(), large)

			readyAt := storetest.ReadyDuring(s, 3*readyTTL, func(i int) {
				if i%5 == 4 { // the sender tries again
					putTooLarge("Put again")
				}
				if i%5 == 2 { // a small object still fits
					if _, err := s.Put(ctx, object(fmt.Sprintf("1.2.3.4.5.6.7.8.9.2.%d", i+1)), strings.NewReader("small")); err != nil {
						t.Fatalf("small Put: %v", err)
					}
				}
			})
			if len(readyAt) > 0 {
				t.Errorf("ready again at %v while the object still did not fit", readyAt)
			}
			testenv.ResizeTmpfs(t, disk, 64<<20)
			storetest.WaitReady(t, s, true, 3*readyTTL)
			if _, err := s.Put(ctx, large, bytes.NewReader(tooLarge)); err != nil {
				t.Errorf("Put once there is room: %v", err)
			}
			storetest.NoUIDs(t, "the store's log", logs.String(), large)
			if !strings.Contains(logs.String(), "out of space") {
				t.Errorf("the store's log does not say it ran out of space:\n%s", logs.String())
			}
		})
	}
}
