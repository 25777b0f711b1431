package pipeline

import (
	"fmt"
	"testing"
)

// TestTagKey: a tag as DICOM JSON names it, eight uppercase hex digits.
func TestTagKey(t *testing.T) {
	for _, tag := range []uint32{0, 0x00080018, 0x00100010, 0x0020000D, 0x7FE00010, 0xFFFEE000, 0xFFFFFFFF, 0xABCDEF01} {
		if got, want := tagKey(tag), fmt.Sprintf("%08X", tag); got != want {
			t.Errorf("tagKey(%#x) = %q, want %q", tag, got, want)
		}
	}
}
