package awsadapters

import (
	"strings"
	"testing"
)

// TestKeyValue: a value fits a key as itself, a long one as its digest,
// the same for the write and the query.
func TestKeyValue(t *testing.T) {
	long := strings.Repeat("Q", 3000)
	if got := keyValue("PATIENT#", "PID-1"); got != "PATIENT#PID-1" {
		t.Errorf("short value: %q", got)
	}
	got := keyValue("PATIENT#", long)
	if len(got) > maxKeyBytes || !strings.HasPrefix(got, "PATIENT#sha256:") || got != keyValue("PATIENT#", long) {
		t.Errorf("long value: %q", got)
	}
	if keyValue("PATIENT#", long+"R") == got {
		t.Error("two long values share a key")
	}
	if edge := strings.Repeat("x", maxKeyBytes-len("SOP#")); keyValue("SOP#", edge) != "SOP#"+edge {
		t.Error("a value that fits exactly was digested")
	}
}
