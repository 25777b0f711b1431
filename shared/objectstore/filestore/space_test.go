package filestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/storetest"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/vfs"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// TestReadinessStableWhileTooLarge: an object larger than the free space,
// sent again and again (a PACS retrying its A700), fails for lack of
// space, leaves no temporary file, and keeps readiness off until the
// reserve and the bytes it had written are free; neither its partial
// file's removal nor the retries, refused before they write
// (TestPutRefusedDuringShortage), nor a small object, refused too, turn
// readiness on.
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
			s, disk, logs := newTmpfsStore(t, tc.reserve, tc.opts...)
			if err := s.Ready(ctx); err != nil {
				t.Fatalf("Ready before: %v", err)
			}
			large := object("1.2.3.4.5.6.7.8.9.1")
			tooLarge := bytes.Repeat([]byte("too large "), 24<<20/10)
			putTooLarge := func(what string, want error) {
				t.Helper()
				_, err := s.Put(ctx, large, bytes.NewReader(tooLarge))
				if !errors.Is(err, objectstore.ErrUnavailable) || !errors.Is(err, want) {
					t.Fatalf("%s of an object larger than the free space = %v, want ErrUnavailable and %v", what, err, want)
				}
				storetest.NoUIDs(t, "Put's error", err.Error(), large)
				for _, f := range files(t, s.Root()) {
					if strings.HasPrefix(f, TempDir+"/") || strings.Contains(f, "1.2.3.4.5.6.7.8.9.1") {
						t.Fatalf("%s left %s behind", what, f)
					}
				}
			}
			putTooLarge("Put", syscall.ENOSPC)
			rerr := storetest.WaitReady(t, s, false, 2*readyTTL)
			if !errors.Is(rerr, ErrReserve) || !errors.Is(rerr, objectstore.ErrUnavailable) || !strings.Contains(rerr.Error(), syscall.ENOSPC.Error()) {
				t.Errorf("Ready after a write found no space = %v, want ErrUnavailable and ErrReserve naming ENOSPC", rerr)
			}
			storetest.NoUIDs(t, "Ready's error", rerr.Error(), large)

			readyAt := storetest.ReadyDuring(s, 3*readyTTL, func(i int) {
				if i%5 == 4 { // the sender tries again
					putTooLarge("Put again", ErrReserve)
				}
				if i%5 == 2 { // a small object that would fit
					if _, err := s.Put(ctx, object(fmt.Sprintf("1.2.3.4.5.6.7.8.9.2.%d", i+1)), strings.NewReader("small")); !errors.Is(err, ErrReserve) {
						t.Fatalf("small Put = %v, want ErrReserve", err)
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

// TestPutRefusedDuringShortage: once a write found the disk full, Put
// refuses every object (a small one, which the journal takes; a large
// one, which the file recipe writes; the one that did not fit) before it
// reads a byte: no temporary file, no object, no journal record, the
// disk's free space unchanged, and the reserve's error (ErrReserve, with
// ErrUnavailable: A700 on the wire), not a write's ENOSPC, so that it does
// not count as one more write that found the disk full. Once the reserve
// and what the failed write needed are free, the next Put's own check
// ends the shortage and stores; where the free space is not measured, a
// Put tries (only a write that succeeds can tell space is back). A
// sender retrying on an association already open wrote each attempt
// until the disk was full, and failed only then. On a real 16 MiB tmpfs,
// which needs root.
func TestPutRefusedDuringShortage(t *testing.T) {
	grow := func(t *testing.T, _ *Store, disk string) { testenv.ResizeTmpfs(t, disk, 64<<20) }
	for _, tc := range []struct {
		name    string
		reserve uint64
		opts    []Option
		// free gives space back; back is what the store then logs.
		free func(t *testing.T, s *Store, disk string)
		back string
	}{
		{"2 MiB reserve", 2 << 20, nil, grow, "space is back on the store's disk: ready again"},
		{"no reserve", 0, nil, grow, "space is back on the store's disk: ready again"},
		{"2 MiB reserve without the journal", 2 << 20, []Option{WithoutJournal()}, grow, "space is back on the store's disk: ready again"},
		{"no reserve, buffered", 0, []Option{WithBufferedWrites()}, grow, "space is back on the store's disk: ready again"},
		{"free space not measured", 0, nil, func(t *testing.T, s *Store, _ string) {
			s.freeBytes = func(string) (uint64, error) { return 0, errors.ErrUnsupported }
		}, "a write succeeded after the store's disk ran out of space: ready again"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s, disk, logs := newTmpfsStore(t, tc.reserve, tc.opts...)
			tooLarge := object("1.2.3.4.5.6.7.8.9.1")
			if _, err := s.Put(ctx, tooLarge, bytes.NewReader(bytes.Repeat([]byte("too large "), 24<<20/10))); !vfs.NoSpace(err) {
				t.Fatalf("Put of an object larger than the disk = %v, want no space", err)
			}
			before, freeBefore, appends := files(t, s.Root()), free(t, s), journalAppends(s)
			for i, o := range []struct {
				name string
				size int64
			}{
				{"a small object", 4 << 10},
				{"a large object", 2 << 20},
				{"the object that did not fit", 24 << 20},
			} {
				obj := object(fmt.Sprintf("1.2.3.4.5.6.7.8.9.3.%d", i+1))
				if i == 2 {
					obj = tooLarge
				}
				storetest.RefusedUnread(t, "Put of "+o.name, o.size, func(body io.Reader) error {
					_, err := s.Put(ctx, obj, body)
					if err != nil {
						storetest.NoUIDs(t, "Put's error", err.Error(), obj)
					}
					return err
				})
			}
			if diff := cmp.Diff(before, files(t, s.Root())); diff != "" {
				t.Errorf("the refused Puts changed the store's files (-before +after):\n%s", diff)
			}
			if got := free(t, s); got != freeBefore {
				t.Errorf("%d bytes free after the refused Puts, %d before", got, freeBefore)
			}
			if got := journalAppends(s); got != appends {
				t.Errorf("%d journal records appended after the refused Puts, %d before", got, appends)
			}
			if !strings.Contains(logs.String(), "no space left on device") {
				t.Errorf("the store's log does not say the disk was out of space:\n%s", logs.String())
			}

			tc.free(t, s, disk)
			if _, err := s.Put(ctx, object("1.2.3.4.5.6.7.8.9.4"), strings.NewReader("small")); err != nil {
				t.Fatalf("Put once space is back: %v", err)
			}
			if !strings.Contains(logs.String(), tc.back) {
				t.Errorf("the store's log does not say %q:\n%s", tc.back, logs.String())
			}
			storetest.WaitReady(t, s, true, 2*readyTTL)
		})
	}
}

// free is the free space of the store's disk.
func free(t *testing.T, s *Store) uint64 {
	t.Helper()
	n, err := vfs.OS().FreeBytes(s.Root())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// journalAppends is how many records the store's journal has appended
// (0 without one).
func journalAppends(s *Store) int64 {
	if s.j == nil {
		return 0
	}
	return s.j.Stats().Appends
}

// newTmpfsStore returns a store on a new 16 MiB tmpfs keeping reserve
// free, with a small journal, and what it logs.
func newTmpfsStore(t *testing.T, reserve uint64, opts ...Option) (s *Store, disk string, logs *testenv.LogBuffer) {
	t.Helper()
	disk = testenv.MountTmpfs(t, 16<<20)
	logs = new(testenv.LogBuffer)
	opts = append([]Option{WithMinFreeBytes(reserve), WithJournalSize(minSegmentSize, 2),
		WithLogger(slog.New(slog.NewTextHandler(logs, nil)))}, opts...)
	s, err := New(filepath.Join(disk, "objects"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s, disk, logs
}
