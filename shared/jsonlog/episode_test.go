package jsonlog

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// TestEpisode: a condition that repeats is logged when it starts and when
// it clears, with how many times it occurred, and not at each occurrence;
// a clear with no episode on logs nothing, and the next episode counts
// from one.
func TestEpisode(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps string // o: an occurrence, e: one of another cause, n: one of a cause new each time, j: o joined, m: o and e in one error (two %w), c: a clear
		want  []string
	}{
		{"one", "oc", []string{"ERROR failing", "INFO clear 1"}},
		{"repeated", "ooooc", []string{"ERROR failing", "INFO clear 4"}},
		{"clear without an episode", "cc", nil},
		{"two episodes", "oocoooc", []string{"ERROR failing", "INFO clear 2", "ERROR failing", "INFO clear 3"}},
		{"not cleared", "ooo", []string{"ERROR failing"}},
		{"another cause is logged", "ooeeoc", []string{"ERROR failing", "ERROR failing", "INFO clear 5"}},
		// Two causes alternating (an I/O error now and then while the
		// disk is full) are each logged once: the episode remembers the
		// causes it logged, not only the last.
		{"alternating causes", "oeoeoeoc", []string{"ERROR failing", "ERROR failing", "INFO clear 7"}},
		{"a cleared episode forgets its causes", "oecoec", []string{"ERROR failing", "ERROR failing", "INFO clear 2", "ERROR failing", "ERROR failing", "INFO clear 2"}},
		// A leaf error whose text changes each time is another cause
		// each time: logged up to maxCauses, then counted only.
		{"causes beyond the bound", strings.Repeat("n", maxCauses+5) + "c", append(slices.Repeat([]string{"ERROR failing"}, maxCauses), "INFO clear "+strconv.Itoa(maxCauses+5))},
		// The journal's failed segment creation joins its error with
		// the clean-up's (errors.Join), naming the segment.
		{"a joined error's cause is its errors'", "ojjjc", []string{"ERROR failing", "INFO clear 4"}},
		{"several %w", "mmmc", []string{"ERROR failing", "INFO clear 3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs testenv.LogBuffer
			log := New(&logs, slog.LevelInfo)
			var e Episode
			for i, s := range tc.steps {
				switch s {
				case 'o':
					e.Occurred(log, slog.LevelError, &fs.PathError{Op: "write", Path: "seg-" + strconv.Itoa(i), Err: syscall.ENOSPC}, "failing")
				case 'j':
					e.Occurred(log, slog.LevelError, errors.Join(fmt.Errorf("journal: create segment seg-%d: %w", i, &fs.PathError{Op: "write", Path: "seg-" + strconv.Itoa(i), Err: syscall.ENOSPC}), nil, nil), "failing")
				case 'm':
					e.Occurred(log, slog.LevelError, fmt.Errorf("seg-%d: %w, and %w", i, &fs.PathError{Op: "write", Path: "seg-" + strconv.Itoa(i), Err: syscall.ENOSPC}, &fs.PathError{Op: "remove", Path: "seg-" + strconv.Itoa(i), Err: syscall.EIO}), "failing")
				case 'n':
					e.Occurred(log, slog.LevelError, fmt.Errorf("journal: %w", fmt.Errorf("short write of %d bytes", i)), "failing")
				case 'e':
					e.Occurred(log, slog.LevelError, fmt.Errorf("journal: %w", &fs.PathError{Op: "write", Path: "seg-1", Err: syscall.EIO}), "failing")
				default:
					e.Clear(log, "clear")
				}
			}
			var got []string
			for l := range strings.Lines(logs.String()) {
				var line struct {
					Level, Msg  string
					Occurrences *int
				}
				if err := json.Unmarshal([]byte(l), &line); err != nil {
					t.Fatalf("%v: %s", err, l)
				}
				s := line.Level + " " + line.Msg
				if line.Occurrences != nil {
					s += " " + strconv.Itoa(*line.Occurrences)
				}
				got = append(got, s)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("logged %q, want %q", got, tc.want)
			}
		})
	}
}
