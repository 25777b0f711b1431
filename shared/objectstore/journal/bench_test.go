package journal

import (
	"context"
	"fmt"
	"sync"
	"testing"
)

// BenchmarkAppend appends MR-sized (130 KB) and CT-sized (525 KB) records
// to a journal on the test's disk, from one and from four goroutines,
// with segments prefilled or not, releasing each at once.
func BenchmarkAppend(b *testing.B) {
	for _, size := range []int{130_000, 525_000} {
		for _, prefill := range []bool{false, true} {
			for _, workers := range []int{1, 4} {
				b.Run(fmt.Sprintf("size=%d/prefill=%v/workers=%d", size, prefill, workers), func(b *testing.B) {
					j, _, err := Open(b.TempDir(), Options{SegmentSize: 64 << 20, Segments: 2, MaxSegments: 4, Prefill: prefill})
					if err != nil {
						b.Fatal(err)
					}
					defer j.Close()
					b.SetBytes(int64(size))
					b.ResetTimer()
					var wg sync.WaitGroup
					per := b.N/workers + 1
					for range workers {
						wg.Go(func() {
							buf := NewBuffer(size)
							for range per {
								r, err := j.Append(context.Background(), []byte("k"), buf, size)
								if err != nil {
									b.Error(err)
									return
								}
								j.Release(r)
							}
						})
					}
					wg.Wait()
				})
			}
		}
	}
}
