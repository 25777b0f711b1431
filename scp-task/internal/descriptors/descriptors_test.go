package descriptors

import "testing"

func TestPlan(t *testing.T) {
	tests := []struct {
		limit           uint64
		maxAssociations int
		total, perAddr  int
	}{
		{65535, 64, 48671, 6083},        // Fargate's hard limit
		{1024, 4, 648, 81},              // the interop test's
		{1024, 64, 288, 36},             // a small limit with the default association bound
		{1024, 0, 288, 36},              // unlimited associations count as 64
		{256, 64, minUnassociated, 2},   // less than the associations need: still a usable bound
		{1 << 40, 64, 1 << 20, 1 << 17}, // an absurd limit is capped
	}
	for _, tc := range tests {
		total, perAddr := Plan(tc.limit, tc.maxAssociations)
		if total != tc.total || perAddr != tc.perAddr {
			t.Errorf("Plan(%d, %d) = %d, %d; want %d, %d", tc.limit, tc.maxAssociations, total, perAddr, tc.total, tc.perAddr)
		}
	}
}

func TestRaise(t *testing.T) {
	soft, err := Raise()
	if err != nil {
		t.Fatal(err)
	}
	if soft == 0 {
		t.Fatal("soft limit 0")
	}
}
