package config

import (
	"io"
	"strings"
	"testing"
	"time"
)

// TestBoundsAndProgressSettings: the pre-association bounds default to 0 (derived from the descriptor limit at
// start) and the progress deadlines to 1 KiB per 60 s within 2 h; each can be set by flag or environment, and a
// bad value names its flag.
func TestBoundsAndProgressSettings(t *testing.T) {
	c, err := Load(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxUnassociated != 0 || c.MaxUnassociatedPerAddr != 0 || c.ProgressWindow != time.Minute || c.MinProgressBytes != 1024 || c.MaxMessageTime != 2*time.Hour {
		t.Errorf("defaults %d %d %v %d %v", c.MaxUnassociated, c.MaxUnassociatedPerAddr, c.ProgressWindow, c.MinProgressBytes, c.MaxMessageTime)
	}
	c, err = Load([]string{"--max-unassociated", "500", "--progress-window", "30s"}, env(map[string]string{
		"SCP_MAX_UNASSOCIATED_PER_ADDRESS": "50", "SCP_MIN_PROGRESS_BYTES": "4096", "SCP_MAX_MESSAGE_TIME": "90m"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxUnassociated != 500 || c.MaxUnassociatedPerAddr != 50 || c.ProgressWindow != 30*time.Second || c.MinProgressBytes != 4096 || c.MaxMessageTime != 90*time.Minute {
		t.Errorf("set %d %d %v %d %v", c.MaxUnassociated, c.MaxUnassociatedPerAddr, c.ProgressWindow, c.MinProgressBytes, c.MaxMessageTime)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--max-unassociated", "-3"}, "--max-unassociated:"},
		{[]string{"--max-unassociated-per-address", "many"}, "--max-unassociated-per-address:"},
		{[]string{"--progress-window", "0s"}, "--progress-window:"},
		{[]string{"--min-progress-bytes", "0"}, "--min-progress-bytes:"},
		{[]string{"--max-message-time", "10s"}, "--max-message-time: 10s is shorter than --progress-window"},
	} {
		if _, err := Load(tc.args, env(nil), io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one naming %q", tc.args, err, tc.want)
		}
	}
}
