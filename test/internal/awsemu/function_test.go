package awsemu

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestStartFunctionEmulatorEndingEarly: an emulator that ends before it listens (its port bound by another test's
// process between the pick and its bind, as a loaded CI run saw) is told as it ends (errExited, not the listening deadline) and tried again on other ports,
// functionStartTries in all, not waited for until the listening deadline.
func TestStartFunctionEmulatorEndingEarly(t *testing.T) {
	dir := t.TempDir()
	count := filepath.Join(dir, "tries")
	rie := filepath.Join(dir, "rie")
	if err := os.WriteFile(rie, []byte("#!/bin/sh\necho x >> "+count+"\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := StartFunction(rie, "validate", filepath.Join(dir, "bootstrap"), nil, io.Discard)
	if err == nil {
		f.Stop()
		t.Fatal("StartFunction took an emulator that ended at once")
	}
	if !errors.Is(err, errExited) {
		t.Errorf("StartFunction = %v, want it to say the emulator ended before it listened", err)
	}
	b, err := os.ReadFile(count)
	if err != nil {
		t.Fatal(err)
	}
	if tries := len(b) / len("x\n"); tries != functionStartTries {
		t.Errorf("the emulator was started %d times, want %d", tries, functionStartTries)
	}
}
