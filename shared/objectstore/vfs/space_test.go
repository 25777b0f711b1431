package vfs_test

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/vfs"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/vfs/vfstest"
)

// TestReserveBelow: the reserve's rule, which the file store and the
// staged store share.
func TestReserveBelow(t *testing.T) {
	errStatfs := errors.New("statfs failed")
	for _, tc := range []struct {
		name      string
		reserve   uint64
		free      uint64
		freeErr   error
		extra     uint64
		wantBelow bool
		wantErr   error
	}{
		{"no reserve", 0, 0, nil, 0, false, nil},
		{"no reserve, statfs would fail", 0, 0, errStatfs, 0, false, nil},
		{"above", 100, 200, nil, 0, false, nil},
		{"at", 100, 100, nil, 0, false, nil},
		{"below", 100, 99, nil, 0, true, nil},
		{"extra takes it below", 100, 150, nil, 60, true, nil},
		{"not measured", 100, 0, fmt.Errorf("wrapped: %w", errors.ErrUnsupported), 0, false, nil},
		{"statfs fails", 100, 0, errStatfs, 0, false, errStatfs},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := vfs.Reserve{Bytes: tc.reserve, Free: func() (uint64, error) { return tc.free, tc.freeErr }}
			_, below, err := r.Below(tc.extra)
			if below != tc.wantBelow || !errors.Is(err, tc.wantErr) || (err != nil) != (tc.wantErr != nil) {
				t.Errorf("Below(%d) = %v, %v; want %v, %v", tc.extra, below, err, tc.wantBelow, tc.wantErr)
			}
		})
	}
}

// TestMemCapacity: a Mem with a capacity fails writes that would grow its
// files past it with ENOSPC, tells the free space, and has the space back
// once a file is removed.
func TestMemCapacity(t *testing.T) {
	m := vfstest.NewMem()
	if _, err := m.FreeBytes("/"); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("FreeBytes without a capacity = %v, want ErrUnsupported", err)
	}
	m.SetCapacity(4 * 4096)
	f, err := m.OpenFile("/a", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 3*4096), 0); err != nil {
		t.Fatal(err)
	}
	if free, err := m.FreeBytes("/a"); err != nil || free != 4096 {
		t.Errorf("FreeBytes = %d, %v; want 4096", free, err)
	}
	// Overwriting allocated blocks takes no space; growing past it fails.
	if _, err := f.WriteAt(make([]byte, 4096), 4096); err != nil {
		t.Errorf("overwrite on a full disk: %v", err)
	}
	if _, err := f.WriteAt(make([]byte, 2*4096), 3*4096); !vfs.NoSpace(err) {
		t.Errorf("write past the capacity = %v, want ENOSPC", err)
	}
	if err := f.Truncate(5 * 4096); !vfs.NoSpace(err) {
		t.Errorf("truncate past the capacity = %v, want ENOSPC", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Remove("/a"); err != nil {
		t.Fatal(err)
	}
	if free, err := m.FreeBytes("/"); err != nil || free != 4*4096 {
		t.Errorf("FreeBytes once removed = %d, %v; want %d", free, err, 4*4096)
	}
}

// TestShortage: after a write failed for lack of space, a write about to
// start is refused (Admit) and readiness is off (Ready), by one rule,
// until the reserve and what the largest failed write needed are free;
// the check that finds them free ends the shortage and says so. A refusal
// is ErrReserve and names the cause without wrapping it: the write it
// refuses found no full disk. Where the free space is not measured a
// write may try, and only one that succeeds ends it; readiness stays off
// until then. A smaller write that succeeds ends it only there.
func TestShortage(t *testing.T) {
	unsupported := fmt.Errorf("statfs: %w", errors.ErrUnsupported)
	errStatfs := errors.New("statfs failed")
	for _, tc := range []struct {
		name      string
		needs     []uint64 // writes that failed, in turn
		free      uint64
		freeErr   error
		wrote     uint64 // a write that then succeeded (0: none)
		wantAdmit error  // nil: the write goes on
		wantReady error
		wantOn    bool
		wantBack  bool // the check ended the shortage, and logged it
	}{
		{"no failure", nil, 100, nil, 0, nil, nil, false, false},
		{"no failure, below the reserve", nil, 9, nil, 0, vfs.ErrReserve, vfs.ErrReserve, false, false},
		{"short of the failed write", []uint64{1000}, 1009, nil, 0, vfs.ErrReserve, vfs.ErrReserve, true, false},
		{"the failed write and the reserve free", []uint64{1000}, 1010, nil, 0, nil, nil, false, true},
		{"the largest failed write counts", []uint64{5000, 1000}, 4000, nil, 0, vfs.ErrReserve, vfs.ErrReserve, true, false},
		{"not measured", []uint64{1000}, 0, unsupported, 0, nil, syscall.ENOSPC, true, false},
		{"statfs fails", []uint64{1000}, 0, errStatfs, 0, errStatfs, errStatfs, true, false},
		{"a smaller write succeeds, measured", []uint64{1000}, 500, nil, 200, vfs.ErrReserve, vfs.ErrReserve, true, false},
		{"a smaller write succeeds, not measured", []uint64{1000}, 0, unsupported, 200, nil, nil, false, false},
		{"a write as large succeeds", []uint64{1000}, 500, nil, 1000, nil, nil, false, false},
	} {
		for _, check := range []string{"Admit", "Ready"} {
			t.Run(tc.name+"/"+check, func(t *testing.T) {
				r := vfs.Reserve{Bytes: 10, Free: func() (uint64, error) { return tc.free, tc.freeErr }}
				var s vfs.Shortage
				for _, n := range tc.needs {
					s.Fail(syscall.ENOSPC, n)
				}
				if tc.wrote > 0 {
					s.Wrote(r, tc.wrote)
				}
				var logs strings.Builder
				log := slog.New(slog.NewTextHandler(&logs, nil))
				msgs := vfs.ShortageLog{Checked: "space is back"}
				err, want := s.Admit(r, log, msgs), tc.wantAdmit
				if check == "Ready" {
					err, want = s.Ready(r, log, msgs), tc.wantReady
				}
				if !errors.Is(err, want) || (err == nil) != (want == nil) {
					t.Errorf("%s = %v, want %v", check, err, want)
				}
				if s.On() != tc.wantOn {
					t.Errorf("On = %v after %s, want %v", s.On(), check, tc.wantOn)
				}
				if back := strings.Contains(logs.String(), "space is back"); back != tc.wantBack {
					t.Errorf("%s logged %q, want the space back logged: %v", check, logs.String(), tc.wantBack)
				}
				if errors.Is(err, vfs.ErrReserve) && len(tc.needs) > 0 {
					if errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), syscall.ENOSPC.Error()) {
						t.Errorf("%s = %v, want the cause named and not wrapped", check, err)
					}
					if got := s.Note(r, err, 1); got != (vfs.Turn{}) {
						t.Errorf("Note(%s's refusal) = %+v, want nothing noted", check, got)
					}
				}
			})
		}
	}
}

// TestShortageNote: how a write's outcome turns a shortage, the cause
// kept being the errno alone (a write's error may name a file, and so an
// object).
func TestShortageNote(t *testing.T) {
	measured := vfs.Reserve{Bytes: 10, Free: func() (uint64, error) { return 500, nil }}
	pathErr := func(errno syscall.Errno) error {
		return fmt.Errorf("put: %w", &os.PathError{Op: "write", Path: "/store/incoming/1.2.3/obj", Err: errno})
	}
	for _, tc := range []struct {
		name   string
		before []uint64 // writes that failed earlier for lack of space
		err    error
		need   uint64
		want   vfs.Turn
		wantOn bool
	}{
		{"success, no shortage", nil, nil, 100, vfs.Turn{}, false},
		{"other failure", nil, errors.New("sender gone"), 100, vfs.Turn{}, false},
		{"no space starts it", nil, pathErr(syscall.ENOSPC), 1000, vfs.Turn{NoSpace: true, Cause: syscall.ENOSPC, Started: true}, true},
		{"a quota starts it", nil, pathErr(syscall.EDQUOT), 1000, vfs.Turn{NoSpace: true, Cause: syscall.EDQUOT, Started: true}, true},
		{"no space again", []uint64{1000}, pathErr(syscall.ENOSPC), 2000, vfs.Turn{NoSpace: true, Cause: syscall.ENOSPC}, true},
		{"other failure leaves it", []uint64{1000}, errors.New("sender gone"), 2000, vfs.Turn{}, true},
		{"a smaller success leaves it", []uint64{1000}, nil, 100, vfs.Turn{}, true},
		{"as large a success ends it", []uint64{1000}, nil, 1000, vfs.Turn{Ended: true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s vfs.Shortage
			for _, n := range tc.before {
				s.Fail(syscall.ENOSPC, n)
			}
			got := s.Note(measured, tc.err, tc.need)
			if got != tc.want || s.On() != tc.wantOn {
				t.Errorf("Note = %+v, on %v; want %+v, on %v", got, s.On(), tc.want, tc.wantOn)
			}
			if err := s.Ready(measured, slog.New(slog.DiscardHandler), vfs.ShortageLog{}); err != nil && strings.Contains(err.Error(), "/store/") {
				t.Errorf("Ready = %v, names a file", err)
			}
		})
	}
}
