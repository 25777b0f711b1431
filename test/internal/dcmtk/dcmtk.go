// Package dcmtk runs DCMTK's command-line tools as real DICOM peers in
// tests, with TCP_NODELAY set (DCMTK leaves Nagle's algorithm on otherwise,
// which stalls every response by ~40 ms). Tests require the tools with
// shared/testenv first.
package dcmtk

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Result of one tool run.
type Result struct {
	Output string // stdout and stderr, interleaved
	Err    error  // non-nil when the tool failed or could not start
}

// Run runs tool with args, bounded by timeout.
func Run(t testing.TB, timeout time.Duration, tool string, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool, args...)
	cmd.Env = append(os.Environ(), "TCP_NODELAY=1")
	out, err := cmd.CombinedOutput()
	return Result{Output: string(out), Err: err}
}

// Command returns an unstarted tool command with TCP_NODELAY set, for tests
// that need to kill it midway.
func Command(tool string, args ...string) *exec.Cmd {
	cmd := exec.Command(tool, args...)
	cmd.Env = append(os.Environ(), "TCP_NODELAY=1")
	return cmd
}

// Elements runs dcmdump on a file and returns one line per element of the
// dataset (not the File Meta Information): tag, VR and value in full.
// Length encodings are left out (DCMTK's senders may turn undefined-length
// sequences into explicit ones on the wire), as are the delimitation items
// that only undefined lengths carry, so two files holding the same
// elements compare equal.
func Elements(t testing.TB, path string) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(Dump(t, path), "\n") {
		if strings.Contains(line, "(fffe,e00d)") || strings.Contains(line, "(fffe,e0dd)") {
			continue
		}
		if i := strings.Index(line, "(Sequence with"); i >= 0 {
			line = line[:i] + "(Sequence)"
		} else if i := strings.Index(line, "(Item with"); i >= 0 {
			line = line[:i] + "(Item)"
		} else if i := strings.LastIndex(line, "#"); i >= 0 {
			line = line[:i]
		}
		// An element of unknown VR shows as ?? in Implicit VR and as UN
		// once a sender has converted the dataset to Explicit VR.
		line = strings.Replace(line, ") ?? ", ") UN ", 1)
		if line = strings.TrimRight(line, " "); line != "" {
			out = append(out, line)
		}
	}
	return out
}

// Dump runs dcmdump on a file and returns the dataset lines only (after
// "# Dicom-Data-Set"), so files whose meta headers differ compare equal
// when their datasets do. Element values are printed in full (+L).
func Dump(t testing.TB, path string) string {
	t.Helper()
	r := Run(t, time.Minute, "dcmdump", "+L", "-M", "+U8", path)
	if r.Err != nil {
		t.Fatalf("dcmdump %s: %v\n%s", path, r.Err, r.Output)
	}
	_, data, ok := strings.Cut(r.Output, "# Dicom-Data-Set")
	if !ok {
		t.Fatalf("dcmdump %s: no dataset section\n%s", path, r.Output)
	}
	return data
}
