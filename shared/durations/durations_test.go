package durations

import (
	"testing"
	"time"
)

func TestFormat(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{250 * time.Millisecond, "250ms"},
		{1500 * time.Millisecond, "1.5s"},
		{8 * time.Second, "8s"},
		{time.Minute, "1m"},
		{90 * time.Second, "1m30s"},
		{5 * time.Minute, "5m"},
		{2 * time.Hour, "2h"},
		{time.Hour + 30*time.Second, "1h30s"},
		{time.Hour + 90*time.Second, "1h1m30s"},
		{time.Minute + 500*time.Millisecond, "1m0.5s"},
		{-time.Minute, "-1m"},
	} {
		got := Format(tt.d)
		if got != tt.want {
			t.Errorf("Format(%d) = %q, want %q", tt.d, got, tt.want)
		}
		// What a person reads can be given back as a flag's value.
		if back, err := time.ParseDuration(got); err != nil || back != tt.d {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", got, back, err, tt.d)
		}
	}
}

func TestProse(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{
		{2 * time.Second, "2 s"},
		{60 * time.Second, "60 s"},
		{90 * time.Second, "90 s"},
		{5 * time.Minute, "5 min"},
		{time.Hour, "1 h"},
		{2 * time.Hour, "2 h"},
		{90 * time.Minute, "90 min"},
		{61 * time.Minute, "61 min"},
		// Never rounded: a default of 150 s is not the "2 min" a document
		// might say.
		{150 * time.Second, "150 s"},
		{time.Hour + time.Second, "3601 s"},
		{1500 * time.Millisecond, "1500 ms"},
		{90*time.Second + 500*time.Millisecond, "90500 ms"},
		{1500 * time.Microsecond, "1.5ms"},
	} {
		if got := Prose(tt.d); got != tt.want {
			t.Errorf("Prose(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}
