package pipeline

import (
	"math"
	"testing"
)

// TestPageLimit: no ask gets the default page, an ask past the largest
// page gets the largest (it got the default: 50 rows for 1,001 asked),
// also one past what an int32 holds (DynamoDB's Limit took math.MaxInt as
// -1).
func TestPageLimit(t *testing.T) {
	for _, tt := range []struct{ n, want int }{{-1, 50}, {0, 50}, {1, 1}, {1000, 1000}, {1001, 1000}, {1 << 40, 1000}} {
		if got := PageLimit(tt.n, 50, 1000); got != tt.want {
			t.Errorf("PageLimit(%d) = %d, want %d", tt.n, got, tt.want)
		}
	}
	for _, tt := range []struct{ limit, want int }{
		{0, DefaultPage}, {-1, DefaultPage}, {7, 7}, {MaxPage, MaxPage}, {MaxPage + 1, MaxPage},
		{math.MaxInt32 + 1, MaxPage}, {math.MaxInt, MaxPage},
	} {
		if got := (AuditQuery{Limit: tt.limit}).PageSize(); got != tt.want {
			t.Errorf("AuditQuery{Limit: %d}.PageSize() = %d, want %d", tt.limit, got, tt.want)
		}
	}
}
